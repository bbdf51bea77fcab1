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
// the default when empty, or "podman") and returns once the container
// provably exists, with its process started.
//
// runc: `runc run --pid-file FILE --bundle DIR ID` stays in the foreground,
// so that runc reaps the process and reports its exit status; Start waits
// until runc has written FILE (it does so once the container is created
// and its process started) or runc has exited. podman: `podman create
// --name ID ...`, then `podman start --attach ID` in the foreground.
//
// The container's removal (runc delete -f ID, or podman rm -f ID) is
// registered with u only once the container exists, so that a failure
// such as "container ID already exists" never removes someone else's
// container. When runc neither creates the container nor exits within
// startTimeout, Start kills it, runs `runc delete -f ID` and returns an
// error.
func Start(u *Undo, engine string, b *Bundle, o Options) (*Container, error) {
	if engine == "" {
		engine = "runc"
	}
	c := &Container{ID: ContainerPrefix + uniqueID(), Engine: engine, done: make(chan struct{})}
	var pidFile string
	switch engine {
	case "runc":
		pidFile = filepath.Join(b.Dir, "container.pid")
		c.cmd = exec.Command("runc", "run", "--pid-file", pidFile, "--bundle", b.Dir, c.ID)
	case "podman":
		conf := filepath.Join(b.Dir, "containers.conf")
		if err := os.WriteFile(conf, []byte(podmanConf), 0o644); err != nil {
			return nil, fmt.Errorf("containerize: podman config: %w", err)
		}
		args, err := podmanArgs(c.ID, b.Rootfs(), o)
		if err != nil {
			return nil, err
		}
		env := append(os.Environ(), "CONTAINERS_CONF="+conf)
		create := exec.Command("podman", args...)
		create.Env = env
		var errb bytes.Buffer
		create.Stderr = &errb
		if err := create.Run(); err != nil {
			// podman create removes what it made when it fails.
			return nil, fmt.Errorf("containerize: podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
		}
		u.Push("podman rm -f "+c.ID, c.remove)
		c.cmd = exec.Command("podman", "start", "--attach", c.ID)
		c.cmd.Env = env
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
	if engine == "podman" {
		return c, nil
	}
	// runc: the container exists once runc has written the pid file. If
	// runc exits first, it removed whatever it had made (or never made
	// anything: "container ID already exists"), and Wait reports why.
	deadline := time.Now().Add(startTimeout)
	for {
		if _, err := os.Stat(pidFile); err == nil {
			u.Push("runc delete -f "+c.ID, c.remove)
			return c, nil
		}
		if c.exited() {
			return c, nil
		}
		if time.Now().After(deadline) {
			_ = c.cmd.Process.Kill()
			<-c.done
			_, err := command("runc", "delete", "-f", c.ID)
			return nil, errors.Join(fmt.Errorf("containerize: runc did not start container %s in %v: killed it", c.ID, startTimeout), err)
		}
		time.Sleep(time.Millisecond)
	}
}

// startTimeout bounds how long Start waits for the engine to create the
// container, and remove for the engine to exit once it is deleted.
const startTimeout = 10 * time.Second

// remove kills and deletes the container, whatever its state, then waits
// (at most startTimeout) for the engine process to exit. It is registered
// only once the container exists, so "does not exist" means that the
// container has already ended and the engine removed it. An engine that
// does not exit in time is killed, the container deleted once more, and
// remove fails.
func (c *Container) remove() error {
	var del func() error
	switch c.Engine {
	case "runc":
		del = func() error {
			_, err := command("runc", "delete", "-f", c.ID)
			if err != nil && strings.Contains(err.Error(), "does not exist") {
				return nil
			}
			return err
		}
	case "podman":
		del = func() error {
			_, err := command("podman", "rm", "-f", "--time", "0", c.ID)
			if err != nil && strings.Contains(err.Error(), "no such container") {
				return nil
			}
			return err
		}
	}
	err := del()
	select {
	case <-c.done:
		return err
	case <-time.After(startTimeout):
	}
	_ = c.cmd.Process.Kill()
	<-c.done
	return errors.Join(err, fmt.Errorf("containerize: %s for container %s still running %v after delete: killed it", c.Engine, c.ID, startTimeout), del())
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

// podmanArgs is the podman command line that creates a container for o's
// rootfs like the runc bundle; podman start runs it.
func podmanArgs(id, rootfs string, o Options) ([]string, error) {
	f, err := runFlags(o, true)
	if err != nil {
		return nil, err
	}
	args := append([]string{"create", "--name", id}, f...)
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
