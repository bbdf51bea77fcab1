package affinity

import (
	"fmt"
	"os"
	"strings"

	"github.com/lowlat/lowlat/internal/cli"
)

// Variables that tools/onload-run sets for the program it starts, beyond
// the LOWLAT_* socket variables of package bypass/backend.
const (
	// EnvCPUs holds the CPU list the program was started on ("2-3"), so
	// that it can pin its hot threads within it (LockAndPin).
	EnvCPUs = "LOWLAT_CPUS"
	// EnvMlockall is "1" when the profile asks the program to lock its
	// memory. A wrapper cannot do that for another program (exec drops
	// memory locks), so the program calls LockMemory itself.
	EnvMlockall = "LOWLAT_MLOCKALL"
)

// ProgramEnv is what onload-run tells the program it starts.
type ProgramEnv struct {
	CPUs     CPUSet // empty when the program was not pinned
	Mlockall bool
}

// ReadProgramEnv reads EnvCPUs and EnvMlockall through lookup
// (os.LookupEnv when nil). A program started by onload-run would do:
//
//	env, err := affinity.ReadProgramEnv(nil)
//	if err == nil && env.Mlockall {
//		err = affinity.LockMemory()
//	}
func ReadProgramEnv(lookup func(string) (string, bool)) (ProgramEnv, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	// As for every LOWLAT_* variable, empty or blank is the same as unset.
	var e ProgramEnv
	if v, ok := lookup(EnvCPUs); ok && strings.TrimSpace(v) != "" {
		s, err := ParseCPUList(strings.TrimSpace(v))
		if err != nil {
			return e, fmt.Errorf("%s=%s: %w", EnvCPUs, cli.Quote(v), err)
		}
		e.CPUs = s
	}
	if v, ok := lookup(EnvMlockall); ok {
		switch strings.TrimSpace(v) {
		case "1", "true":
			e.Mlockall = true
		case "0", "false", "":
		default:
			return e, fmt.Errorf("%s=%s: want 1 or 0", EnvMlockall, cli.Quote(v))
		}
	}
	return e, nil
}
