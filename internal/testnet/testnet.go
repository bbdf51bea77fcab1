//go:build linux

// Package testnet builds throwaway network topologies for tests: network
// namespaces joined by veth pairs, addressed from a private subnet that
// exists only inside them, so no test packet can reach a real network.
// Everything it creates is deleted in t.Cleanup, whether the test passes or
// fails.
package testnet

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireRoot skips the test, with the reason, unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces and veth links; CI runs it as root")
	}
}

// NS is a network namespace created for one test.
type NS struct {
	Name string     // name under /run/netns
	Link string     // the veth end inside it
	Addr netip.Addr // its IPv4 address on Link
	MAC  net.HardwareAddr
}

// Pair is two namespaces joined by one veth pair.
type Pair struct {
	A, B   *NS
	Prefix netip.Prefix
}

// Config shapes a Pair. The zero value gives single-queue veths with
// checksum offload left on.
type Config struct {
	// Queues gives each veth end that many RX and TX queues (0 means 1).
	Queues int
	// TxChecksumOff turns off TX checksum offload on both ends
	// (ethtool -K IF tx off), so that frames carry complete UDP checksums;
	// AF_XDP readers see frames as sent and need that.
	TxChecksumOff bool
}

var seq atomic.Uint32

// NewPair creates namespaces A and B, a veth pair between them addressed
// 10.199.0.1/30 (A) and 10.199.0.2/30 (B), both up, with loopback up in
// each. It skips the test when not root and fails it on any other error.
func NewPair(t testing.TB, cfg Config) *Pair {
	t.Helper()
	RequireRoot(t)
	n := seq.Add(1)
	id := fmt.Sprintf("%d-%d", os.Getpid()%100000, n)
	p := &Pair{
		A:      &NS{Name: "llt-a-" + id, Link: "lla" + id, Addr: netip.MustParseAddr("10.199.0.1")},
		B:      &NS{Name: "llt-b-" + id, Link: "llb" + id, Addr: netip.MustParseAddr("10.199.0.2")},
		Prefix: netip.MustParsePrefix("10.199.0.0/30"),
	}
	if len(p.A.Link) > 15 {
		p.A.Link, p.B.Link = p.A.Link[:15], p.B.Link[:15]
	}
	for _, ns := range []*NS{p.A, p.B} {
		run(t, "ip", "netns", "add", ns.Name)
		name := ns.Name
		t.Cleanup(func() { deleteNS(t, name) })
	}
	q := max(cfg.Queues, 1)
	args := []string{"link", "add", p.A.Link, "netns", p.A.Name}
	if q > 1 {
		args = append(args, "numtxqueues", fmt.Sprint(q), "numrxqueues", fmt.Sprint(q))
	}
	args = append(args, "type", "veth", "peer", "name", p.B.Link, "netns", p.B.Name)
	if q > 1 {
		args = append(args, "numtxqueues", fmt.Sprint(q), "numrxqueues", fmt.Sprint(q))
	}
	run(t, "ip", args...)
	for _, ns := range []*NS{p.A, p.B} {
		p.Exec(t, ns, "ip", "link", "set", "lo", "up")
		p.Exec(t, ns, "ip", "addr", "add", ns.Addr.String()+"/30", "dev", ns.Link)
		p.Exec(t, ns, "ip", "link", "set", ns.Link, "up")
		if cfg.TxChecksumOff {
			p.Exec(t, ns, "ethtool", "-K", ns.Link, "tx", "off")
		}
		out := p.Exec(t, ns, "cat", "/sys/class/net/"+ns.Link+"/address")
		mac, err := net.ParseMAC(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("testnet: mac of %s: %v", ns.Link, err)
		}
		ns.MAC = mac
	}
	return p
}

// deleteNS removes a namespace, retrying while a process that entered it
// through `ip netns exec` is still being torn down (its mount namespace
// holds the bind mount, and the unlink fails until it is gone). A namespace
// that outlives the retries fails the test.
func deleteNS(t testing.TB, name string) {
	var out []byte
	for range 150 {
		out, _ = exec.Command("ip", "netns", "del", name).CombinedOutput()
		if _, err := os.Stat("/run/netns/" + name); os.IsNotExist(err) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("testnet: namespace %s left behind: %s", name, strings.TrimSpace(string(out)))
}

// Exec runs a command inside ns and returns its standard output; it fails
// the test when the command fails.
func (p *Pair) Exec(t testing.TB, ns *NS, name string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Command returns a command that will run inside ns.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("testnet: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String()
}

// Do runs fn on a locked OS thread switched into ns, and switches back
// afterwards. Sockets fn creates belong to ns and may be used from any
// goroutine after Do returns. Goroutines fn starts do not run in ns.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("testnet: open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+ns.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("testnet: open netns %s: %w", ns.Name, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("testnet: setns %s: %w", ns.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it exits with this goroutine
			// rather than return to the pool in the wrong namespace.
			errc <- fmt.Errorf("testnet: setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Go runs fn in ns on its own locked OS thread, for servers that must stay
// inside the namespace for their whole life (spinning readers pinned to a
// thread). The thread is discarded when fn returns. The returned channel
// yields fn's error.
func (ns *NS) Go(fn func() error) <-chan error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		target, err := unix.Open("/run/netns/"+ns.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("testnet: open netns %s: %w", ns.Name, err)
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			errc <- fmt.Errorf("testnet: setns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return errc
}

// RunAsNobody runs this test binary again as the unprivileged user 65534
// (and group 65534, no supplementary groups) with args and extra
// environment, inside namespace ns when it is not empty, and returns its
// combined output. The binary is copied to a directory that user can read,
// since the go command builds tests into one it cannot. It skips the test
// when setpriv (util-linux) is missing.
func RunAsNobody(t testing.TB, ns string, env []string, args ...string) ([]byte, error) {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to drop privileges")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(exe))
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}
