//go:build linux

package containerize

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Engines are the container engines Start drives.
var Engines = []string{"runc", "podman"}

// Container is one running container. Its standard output and error are
// captured.
type Container struct {
	ID     string
	Engine string

	cmd  *exec.Cmd
	out  syncBuffer
	errb syncBuffer
	done chan struct{}
	err  error
}

// Start runs bundle b's process in a new container under engine ("runc",
// the default when empty, or "podman") and returns once the engine is
// started. The container's removal (runc delete -f ID, or podman rm -f ID)
// and the wait for the engine process are registered with u before the
// engine runs, so an error or an interrupt at any later point leaves no
// container behind.
func Start(u *Undo, engine string, b *Bundle, o Options) (*Container, error) {
	if engine == "" {
		engine = "runc"
	}
	c := &Container{ID: "latprobe-" + uniqueID(), Engine: engine, done: make(chan struct{})}
	switch engine {
	case "runc":
		c.cmd = exec.Command("runc", "run", "--bundle", b.Dir, c.ID)
	case "podman":
		conf := filepath.Join(b.Dir, "containers.conf")
		if err := os.WriteFile(conf, []byte(podmanConf), 0o644); err != nil {
			return nil, fmt.Errorf("containerize: podman config: %w", err)
		}
		args, err := podmanArgs(c.ID, b.Rootfs(), o)
		if err != nil {
			return nil, err
		}
		c.cmd = exec.Command("podman", args...)
		c.cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	default:
		return nil, fmt.Errorf("containerize: engine %q: want one of %v", engine, Engines)
	}
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.errb
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("containerize: start %s: %w", engine, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	u.Push(engine+" delete -f "+c.ID, c.remove)
	return c, nil
}

// remove kills and deletes the container, whatever its state, then waits
// (at most 5 s) for the engine process to exit.
func (c *Container) remove() error {
	var err error
	switch c.Engine {
	case "runc":
		_, err = command("runc", "delete", "-f", c.ID)
		if err != nil && !c.exited() && strings.Contains(err.Error(), "does not exist") {
			err = nil // not created yet, or already gone
		} else if err != nil && c.exited() {
			err = nil // runc removed it when its process ended
		}
	case "podman":
		_, err = command("podman", "rm", "-f", "--time", "0", c.ID)
		if err != nil && c.exited() {
			err = nil
		}
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	return err
}

func (c *Container) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Wait waits until the container's process ends, ctx is done, or timeout
// (when positive) passes, and returns the process's error: an exit status
// comes back as *exec.ExitError with the captured standard error.
func (c *Container) Wait(ctx context.Context, timeout time.Duration) error {
	var tc <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	case <-tc:
		return fmt.Errorf("containerize: container %s still running after %v", c.ID, timeout)
	}
	if c.err != nil {
		return fmt.Errorf("containerize: %s container %s: %w: %s", c.Engine, c.ID, c.err, strings.TrimSpace(c.errb.String()))
	}
	return nil
}

// Exited reports whether the container's process has ended.
func (c *Container) Exited() bool { return c.exited() }

// Stdout is the container's standard output so far.
func (c *Container) Stdout() string { return c.out.String() }

// Stderr is the container's standard error so far (with the engine's own
// messages).
func (c *Container) Stderr() string { return c.errb.String() }

// Run starts a container for o in a fresh bundle under parent and waits
// for its process to end (at most timeout), returning its standard output.
// Everything it created is removed before it returns.
func Run(ctx context.Context, engine, parent string, o Options, timeout time.Duration) (stdout string, err error) {
	var u Undo
	defer func() { err = errors.Join(err, u.Run()) }()
	b, err := WriteBundle(&u, parent, o)
	if err != nil {
		return "", err
	}
	c, err := Start(&u, engine, b, o)
	if err != nil {
		return "", err
	}
	err = c.Wait(ctx, timeout)
	return c.Stdout(), err
}

// podmanConf makes podman use runc with cgroupfs and fixed ulimits; crun
// and systemd cgroups do not work on every host (see docs/containers.md).
const podmanConf = `[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
`

// podmanArgs is the podman command line that runs o's rootfs like runc
// runs the bundle.
func podmanArgs(id, rootfs string, o Options) ([]string, error) {
	f, err := runFlags(o, true)
	if err != nil {
		return nil, err
	}
	args := append([]string{"run", "--rm", "--name", id}, f...)
	args = append(args, "--rootfs", rootfs, BinaryPath)
	return append(args, o.Args...), nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
