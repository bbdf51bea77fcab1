package latency

import (
	"fmt"
	"os"
	"strings"

	"github.com/lowlat/lowlat/internal/cli"
)

// ClockEnv names the variable that chooses the clock NewClock reads:
// "monotonic" forces the monotonic clock; unset, empty or "auto" lets
// NewClock take the TSC where it is usable.
const ClockEnv = "LOWLAT_CLOCK"

// CheckClockEnv checks ClockEnv through lookup (os.LookupEnv when nil): an
// unknown value is an error that names the variable, rather than a value
// silently read as "auto".
func CheckClockEnv(lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, _ := lookup(ClockEnv)
	switch strings.TrimSpace(v) {
	case "", "auto", "monotonic":
		return nil
	}
	return fmt.Errorf("%s=%s: want monotonic or auto", ClockEnv, cli.Quote(v))
}
