package affinity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/lowlat/lowlat/internal/priv"
)

// readValue reads the one value a host file holds.
func readValue(kind, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", readErr(path, err)
	}
	v := strings.TrimSpace(string(b))
	if kind == KindTHP {
		return selectedWord(v), nil
	}
	return v, nil
}

// selectedWord returns the word in brackets in a sysfs choice list such as
// "always [madvise] never", or s itself when there is none.
func selectedWord(s string) string {
	i := strings.IndexByte(s, '[')
	j := strings.IndexByte(s, ']')
	if i >= 0 && j > i {
		return s[i+1 : j]
	}
	return s
}

// writeValue writes v to a host file in one write, as `echo v > path`
// does.
func writeValue(kind, path, v string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return writeErr(path, v, err)
	}
	_, err = f.WriteString(v + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return writeErr(path, v, err)
	}
	return nil
}

// capabilityFor names what a write to path needs beyond being its owner:
// a /proc/sys/net file checks CAP_NET_ADMIN (in the network namespace's
// owner); /proc/irq and sysfs files are root's with mode 0644, which
// CAP_DAC_OVERRIDE lifts. Any other /proc/sys file checks the effective
// uid alone: no capability lifts it, and the answer is "".
func capabilityFor(path string) string {
	switch {
	case strings.HasPrefix(path, "/proc/sys/net/"):
		return "CAP_NET_ADMIN"
	case strings.HasPrefix(path, "/proc/sys/"):
		return ""
	}
	return "CAP_DAC_OVERRIDE"
}

func readErr(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return priv.Wrap("read "+path, "CAP_DAC_READ_SEARCH", err)
}

func writeErr(path, v string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	op := fmt.Sprintf("write %q to %s", v, path)
	c := capabilityFor(path)
	if c == "" && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES)) {
		return fmt.Errorf("%s: %w (needs root: euid 0; no capability lifts it)", op, err)
	}
	return priv.Wrap(op, c, err)
}
