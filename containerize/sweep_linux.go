//go:build linux

package containerize

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Sweep removes what an earlier process of this package left behind when
// it was killed before its undo ran (SIGKILL, a crash): containers (same
// as `runc delete -f ID`, or `podman rm -f ID` when engine is "podman"),
// veth links in the host's namespace (`ip link del NAME`), network
// namespaces (`ip netns del NAME`) and bundle directories in os.TempDir()
// (`rm -r DIR`). It touches only names this package makes (PREFIX+PID-SEQ,
// see names.go) and only when process PID no longer exists. It is best
// effort: it returns what it removed, and the errors of what it could not
// remove joined.
func Sweep(engine string) (removed []string, err error) {
	var errs []error
	rm := func(what string, fn func() error) {
		if e := fn(); e != nil {
			errs = append(errs, fmt.Errorf("containerize: sweep %s: %w", what, e))
			return
		}
		removed = append(removed, what)
	}
	if _, e := exec.LookPath("runc"); e == nil {
		out, e := command("runc", "list", "-q")
		if e != nil {
			errs = append(errs, e)
		}
		for _, id := range strings.Fields(out) {
			if ownerGone(id, ContainerPrefix) {
				rm("runc delete -f "+id, func() error { _, e := command("runc", "delete", "-f", id); return e })
			}
		}
	}
	if engine == "podman" {
		out, e := command("podman", "ps", "-a", "--format", "{{.Names}}")
		if e != nil {
			errs = append(errs, e)
		}
		for _, id := range strings.Fields(out) {
			if ownerGone(id, ContainerPrefix) {
				rm("podman rm -f "+id, func() error { _, e := command("podman", "rm", "-f", "--time", "0", id); return e })
			}
		}
	}
	if out, e := ipOut("-o", "link", "show", "type", "veth"); e != nil {
		errs = append(errs, e)
	} else {
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if ownerGone(name, VethPrefixA) || ownerGone(name, VethPrefixB) {
				rm("ip link del "+name, func() error {
					err := ip("link", "del", name)
					if err != nil && strings.Contains(err.Error(), "Cannot find device") {
						return nil // its peer went first, taking it along
					}
					return err
				})
			}
		}
	}
	if out, e := ipOut("netns", "list"); e != nil {
		errs = append(errs, e)
	} else {
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) > 0 && ownerGone(f[0], NetnsPrefix) {
				name := f[0]
				rm("ip netns del "+name, func() error { return ip("netns", "del", name) })
			}
		}
	}
	if ents, e := os.ReadDir(os.TempDir()); e == nil {
		for _, ent := range ents {
			if ent.IsDir() && ownerGone(ent.Name(), BundlePrefix) {
				dir := filepath.Join(os.TempDir(), ent.Name())
				rm("rm -r "+dir, func() error { return os.RemoveAll(dir) })
			}
		}
	}
	return removed, errors.Join(errs...)
}

// ownerGone reports whether name is prefix+PID-SEQ and process PID does not
// exist (kill(PID, 0) fails with ESRCH).
func ownerGone(name, prefix string) bool {
	pid, ok := namePID(name, prefix)
	if !ok || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
