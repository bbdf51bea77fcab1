//go:build linux

package containerize

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
)

var (
	probeOnce sync.Once
	probePath string
	probeErr  error
	probeDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if probeDir != "" {
		os.RemoveAll(probeDir)
	}
	os.Exit(code)
}

// requireRunc skips unless the test runs as root with runc installed.
func requireRunc(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create containers, namespaces and veth links; CI runs it as root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc (apt-get install runc; CI's install script does it)")
	}
}

// probe builds the static test helper (internal/probe) once.
func probe(t *testing.T) string {
	t.Helper()
	probeOnce.Do(func() {
		probeDir, probeErr = os.MkdirTemp("", "containerize-probe-")
		if probeErr != nil {
			return
		}
		probePath = filepath.Join(probeDir, "probe")
		cmd := exec.Command("go", "build", "-o", probePath, "./internal/probe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeErr = fmt.Errorf("go build ./internal/probe: %w: %s", err, out)
		}
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	return probePath
}

// leakCheck registers, first so that it runs last, a check that nothing
// this process created is left: no container, namespace, veth or bundle.
func leakCheck(t *testing.T, parent string) {
	t.Helper()
	pid := strconv.Itoa(os.Getpid()) + "-"
	t.Cleanup(func() {
		if out, _ := command("runc", "list", "-q"); strings.Contains(out, ContainerPrefix+pid) {
			t.Errorf("containers left: %s", out)
		}
		if out, _ := command("ip", "netns", "list"); strings.Contains(out, NetnsPrefix+pid) {
			t.Errorf("namespaces left: %s", out)
		}
		if out, _ := command("ip", "-o", "link", "show", "type", "veth"); strings.Contains(out, VethPrefixA+pid) || strings.Contains(out, VethPrefixB+pid) {
			t.Errorf("veth links left: %s", out)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Errorf("bundle dirs left in %s: %v", parent, ents)
		}
	})
}

// TestContainerCapabilities runs the helper in a container per backend and
// checks its CapEff, read from inside, is exactly the capabilities asked.
func TestContainerCapabilities(t *testing.T) {
	requireRunc(t)
	bin := probe(t)
	for _, tc := range []struct {
		backend  string
		realtime bool
	}{{"kernel", false}, {"busypoll", false}, {"afxdp", false}, {"kernel", true}, {"afxdp", true}} {
		t.Run(fmt.Sprintf("%s/realtime=%v", tc.backend, tc.realtime), func(t *testing.T) {
			parent := t.TempDir()
			leakCheck(t, parent)
			o := Options{Binary: bin, Args: []string{"capeff"}, Backend: tc.backend, Realtime: tc.realtime, CPUs: "0"}
			out, err := Run(context.Background(), "runc", parent, o, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			f := strings.Fields(out)
			if len(f) != 2 || f[0] != "CapEff:" {
				t.Fatalf("output %q: want a CapEff line", out)
			}
			got, err := strconv.ParseUint(f[1], 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			caps, _ := Capabilities(tc.backend, tc.realtime)
			want, _ := CapMask(caps)
			if got != want {
				t.Errorf("CapEff %#x, want %#x (%v)", got, want, caps)
			}
		})
	}
}

// TestServerInNetnsAnswersHost runs an echo server in a container in its
// own network namespace and measures round trips to it from the host over
// the veth pair.
func TestServerInNetnsAnswersHost(t *testing.T) {
	requireRunc(t)
	bin := probe(t)
	parent := t.TempDir()
	leakCheck(t, parent)
	var u Undo
	t.Cleanup(func() {
		if err := u.Run(); err != nil {
			t.Error(err)
		}
	})
	ns, err := NewNetns(&u, NetnsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	prefix, err := FreeSubnet()
	if err != nil {
		t.Fatal(err)
	}
	host, inner, err := NewVeth(&u, nil, ns, prefix)
	if err != nil {
		t.Fatal(err)
	}
	server := netip.AddrPortFrom(inner.Addr, 7471)
	o := Options{Binary: bin, Args: []string{"echo", server.String(), "30"}, Backend: "kernel", NetnsPath: ns.Path}
	b, err := WriteBundle(&u, parent, o)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(&u, "runc", b, o)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.Stdout(), "listening") {
		if c.Exited() || time.Now().After(deadline) {
			t.Fatalf("server did not start: %v\n%s\n%s", c.Wait(context.Background(), time.Second), c.Stdout(), c.Stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := bypass.ListenUDP(netip.AddrPortFrom(host.Addr, 0), bypass.Options{Backend: "kernel"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl, err := latency.NewClient(latency.PacketTransport(conn, server), latency.Config{Count: 200, Warmup: 10, Duration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r, err := cl.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Hist.TotalCount() == 0 {
		t.Fatalf("no round trips measured: %+v", r.Counters)
	}
	t.Logf("container-netns kernel: %d samples, lost %d", r.Hist.TotalCount(), r.Counters.Lost)
}

// TestFailureAndInterruptLeaveNothing checks that a container that fails,
// and one whose run is interrupted, are both removed with their bundles.
func TestFailureAndInterruptLeaveNothing(t *testing.T) {
	requireRunc(t)
	bin := probe(t)
	parent := t.TempDir()
	leakCheck(t, parent)
	_, err := Run(context.Background(), "runc", parent, Options{Binary: bin, Args: []string{"no-such-command"}, Backend: "kernel"}, 20*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("failing container: err %v, want an exit status", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = Run(ctx, "runc", parent, Options{Binary: bin, Args: []string{"echo", "127.0.0.1:0", "30"}, Backend: "kernel"}, 20*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("interrupted container: err %v, want the context's error", err)
	}
}

// TestStartThenUndoLeavesNothing undoes a container the moment Start
// returns, again and again: each time the container must be gone from
// runc list, the engine must have exited and the bundle must be removed.
func TestStartThenUndoLeavesNothing(t *testing.T) {
	requireRunc(t)
	bin := probe(t)
	parent := t.TempDir()
	leakCheck(t, parent)
	for i := range 10 {
		var u Undo
		o := Options{Binary: bin, Args: []string{"echo", "127.0.0.1:0", "30"}, Backend: "kernel"}
		b, err := WriteBundle(&u, parent, o)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Start(&u, "runc", b, o)
		if err != nil {
			u.Run()
			t.Fatalf("run %d: %v", i, err)
		}
		if err := u.Run(); err != nil {
			t.Errorf("run %d: undo: %v", i, err)
		}
		if !c.Exited() {
			t.Errorf("run %d: runc run still running after undo", i)
		}
		if out, _ := command("runc", "list", "-q"); strings.Contains(out, c.ID) {
			t.Fatalf("run %d: container %s left: %s", i, c.ID, out)
		}
		if _, err := os.Stat(b.Dir); !os.IsNotExist(err) {
			t.Fatalf("run %d: bundle %s left: %v", i, b.Dir, err)
		}
	}
}

// TestStartExistingIDLeavesOwner starts a second container under an ID
// that is taken: runc refuses it, and Start's undo must not remove the
// container that owns the ID.
func TestStartExistingIDLeavesOwner(t *testing.T) {
	requireRunc(t)
	bin := probe(t)
	parent := t.TempDir()
	leakCheck(t, parent)
	var owner Undo
	t.Cleanup(func() {
		if err := owner.Run(); err != nil {
			t.Error(err)
		}
	})
	o := Options{Binary: bin, Args: []string{"echo", "127.0.0.1:0", "30"}, Backend: "kernel"}
	b, err := WriteBundle(&owner, parent, o)
	if err != nil {
		t.Fatal(err)
	}
	first, err := Start(&owner, "runc", b, o)
	if err != nil {
		t.Fatal(err)
	}
	nameSeq.Add(^uint32(0)) // the next Start picks first's ID again
	var u Undo
	b2, err := WriteBundle(&u, parent, o)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Start(&u, "runc", b2, o)
	if err == nil {
		if second.ID != first.ID {
			t.Fatalf("second container %s, want the taken ID %s", second.ID, first.ID)
		}
		if werr := second.Wait(context.Background(), 10*time.Second); werr == nil || !strings.Contains(werr.Error(), "exists") {
			t.Errorf("second runc run: %v, want \"already exists\"", werr)
		}
	}
	if err := u.Run(); err != nil {
		t.Error(err)
	}
	if first.Exited() {
		t.Fatalf("the first container ended: %v", first.Wait(context.Background(), time.Second))
	}
	if out, _ := command("runc", "list", "-q"); !strings.Contains(out, first.ID) {
		t.Errorf("container %s removed by the second Start's undo: runc list %q", first.ID, out)
	}
}

// TestSweepRemovesDeadOwnersOnly leaves a container, a veth pair, a
// namespace and a bundle dir named for a pid that has exited, and one
// namespace named for this live process: Sweep must remove the first four
// and keep the last.
func TestSweepRemovesDeadOwnersOnly(t *testing.T) {
	requireRunc(t)
	bin := probe(t)
	parent := t.TempDir()
	leakCheck(t, parent)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := gone.Process.Pid
	if !errors.Is(syscall.Kill(dead, 0), syscall.ESRCH) {
		t.Skipf("pid %d was reused at once", dead)
	}
	id := nameID(dead, 1)
	var u Undo // what the test made, in case Sweep misses it
	t.Cleanup(func() { u.Run() })
	b, err := WriteBundle(&u, parent, Options{Binary: bin, Args: []string{"echo", "127.0.0.1:0", "30"}, Backend: "kernel"})
	if err != nil {
		t.Fatal(err)
	}
	cid := ContainerPrefix + id
	// The container inherits runc's stdio: /dev/null, so that nothing
	// waits for it to close a pipe.
	if err := exec.Command("runc", "run", "--detach", "--bundle", b.Dir, cid).Run(); err != nil {
		t.Fatalf("runc run --detach: %v", err)
	}
	u.Push("runc delete -f "+cid, func() error { command("runc", "delete", "-f", cid); return nil })
	ns := NetnsPrefix + id
	if err := ip("netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	u.Push("ip netns del "+ns, func() error { ip("netns", "del", ns); return nil })
	va, vb := VethPrefixA+id, VethPrefixB+id
	if err := ip("link", "add", va, "type", "veth", "peer", "name", vb); err != nil {
		t.Fatal(err)
	}
	u.Push("ip link del "+va, func() error { ip("link", "del", va); return nil })
	dir := filepath.Join(os.TempDir(), BundlePrefix+strconv.Itoa(dead)+"-42")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	u.Push("rm -r "+dir, func() error { return os.RemoveAll(dir) })
	mine := NetnsPrefix + uniqueID()
	if err := ip("netns", "add", mine); err != nil {
		t.Fatal(err)
	}
	u.Push("ip netns del "+mine, func() error { return ip("netns", "del", mine) })

	removed, err := Sweep("runc")
	if err != nil {
		t.Errorf("Sweep: %v", err)
	}
	t.Logf("removed %q", removed)
	if out, _ := command("runc", "list", "-q"); strings.Contains(out, cid) {
		t.Errorf("container %s left", cid)
	}
	out, _ := command("ip", "netns", "list")
	if strings.Contains(out, ns) {
		t.Errorf("namespace %s left", ns)
	}
	if !strings.Contains(out, mine) {
		t.Errorf("namespace %s of this live process removed", mine)
	}
	if out, _ := command("ip", "-o", "link", "show", "type", "veth"); strings.Contains(out, va) {
		t.Errorf("veth %s left", va)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("bundle dir %s left: %v", dir, err)
	}
}

// TestDMALatencyInContainer opens /dev/cpu_dma_latency inside a container
// given DMALatency: the device node and the device cgroup must both carry
// the host's numbers.
func TestDMALatencyInContainer(t *testing.T) {
	requireRunc(t)
	if _, err := HostDevNum(DMALatencyPath); err != nil {
		t.Skipf("the host has no %s: %v", DMALatencyPath, err)
	}
	bin := probe(t)
	parent := t.TempDir()
	leakCheck(t, parent)
	o := Options{Binary: bin, Args: []string{"open", DMALatencyPath}, Backend: "kernel", DMALatency: true}
	out, err := Run(context.Background(), "runc", parent, o, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "opened "+DMALatencyPath) {
		t.Errorf("output %q: want opened %s", out, DMALatencyPath)
	}
}

// TestRealtimeFIFO switches to SCHED_FIFO inside a Realtime container: it
// must work when the host's cgroup has real-time runtime to give, and fail
// with EPERM (as HostRealtime predicts) when it has none.
func TestRealtimeFIFO(t *testing.T) {
	requireRunc(t)
	bin := probe(t)
	parent := t.TempDir()
	leakCheck(t, parent)
	_, rtErr := HostRealtime()
	o := Options{Binary: bin, Args: []string{"fifo"}, Backend: "kernel", Realtime: true}
	out, err := Run(context.Background(), "runc", parent, o, 20*time.Second)
	if rtErr != nil {
		t.Logf("host: %v", rtErr)
		if err == nil {
			t.Errorf("SCHED_FIFO worked though HostRealtime says %v", rtErr)
		}
		return
	}
	if err != nil || !strings.Contains(out, "fifo ok") {
		t.Errorf("SCHED_FIFO in a Realtime container: %q, %v", out, err)
	}
}

// TestPodman runs a container under podman, checks its output and a
// failing one's exit status, and undoes one right after Start.
func TestPodman(t *testing.T) {
	requireRunc(t)
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("needs podman (apt-get install podman; see docs/containers.md)")
	}
	bin := probe(t)
	parent := t.TempDir()
	leakCheck(t, parent)
	out, err := Run(context.Background(), "podman", parent, Options{Binary: bin, Args: []string{"capeff"}, Backend: "kernel"}, 60*time.Second)
	if err != nil || !strings.HasPrefix(out, "CapEff:") {
		t.Fatalf("podman capeff: %q, %v", out, err)
	}
	_, err = Run(context.Background(), "podman", parent, Options{Binary: bin, Args: []string{"no-such-command"}, Backend: "kernel"}, 60*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("failing podman container: err %v, want an exit status", err)
	}
	var u Undo
	o := Options{Binary: bin, Args: []string{"echo", "127.0.0.1:0", "30"}, Backend: "kernel"}
	b, err := WriteBundle(&u, parent, o)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(&u, "podman", b, o)
	if err != nil {
		u.Run()
		t.Fatal(err)
	}
	if err := u.Run(); err != nil {
		t.Errorf("undo: %v", err)
	}
	if out, _ := command("podman", "ps", "-a", "--format", "{{.Names}}"); strings.Contains(out, c.ID) {
		t.Errorf("podman container %s left: %s", c.ID, out)
	}
}

// TestDynamicBinaryInContainer builds the helper the default way (linked
// dynamically where cgo is on) and runs it in a container: the bundle must
// carry its loader and libraries, read-only.
func TestDynamicBinaryInContainer(t *testing.T) {
	requireRunc(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "probe-dynamic")
	if out, err := exec.Command("go", "build", "-o", bin, "./internal/probe").CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/probe: %v: %s", err, out)
	}
	if interp, err := Interpreter(bin); err != nil {
		t.Fatal(err)
	} else if interp == "" {
		t.Skip("go build made a static binary here (cgo off or no C compiler): nothing to carry")
	}
	parent := t.TempDir()
	leakCheck(t, parent)
	var u Undo
	t.Cleanup(func() {
		if err := u.Run(); err != nil {
			t.Error(err)
		}
	})
	o := Options{Binary: bin, Args: []string{"capeff"}, Backend: "kernel"}
	b, err := WriteBundle(&u, parent, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.SharedObjects) < 2 {
		t.Fatalf("shared objects %q: want the loader and at least one library", b.SharedObjects)
	}
	for _, p := range append(b.SharedObjects, LdCachePath) {
		if _, err := os.Stat(filepath.Join(b.Rootfs(), p)); err != nil {
			t.Errorf("%s not in the bundle's root: %v", p, err)
		}
	}
	if !b.Spec.Root.Readonly {
		t.Error("root not read-only")
	}
	out, err := Run(context.Background(), "runc", parent, o, 20*time.Second)
	if err != nil {
		t.Fatalf("dynamically linked helper in a container: %v", err)
	}
	if !strings.HasPrefix(strings.TrimSpace(out), "CapEff:") {
		t.Errorf("output %q: want the CapEff line", out)
	}
}
