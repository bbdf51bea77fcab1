//go:build linux && onload && cgo

package onload_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/bypass/onload"
	"github.com/lowlat/lowlat/bypass/onload/onloadtest"
)

// The tests in this file run in child processes of the test binary with
// the interposer (onloadtest) preloaded in place of libonload.so: the
// parent test builds it, starts this binary again with LD_PRELOAD and
// one child test selected, and the child asserts from the inside, reading
// the interposer's counts file.

// childEnv names the child test a process was started for.
const childEnv = "LOWLAT_ONLOAD_TEST_CHILD"

var children = []string{"TestChildSignal", "TestChildUDP", "TestChildTCP", "TestChildExtensions"}

func TestUnderInterposer(t *testing.T) {
	lib := onloadtest.Build(t)
	for _, name := range children {
		t.Run(strings.TrimPrefix(name, "TestChild"), func(t *testing.T) {
			counts := filepath.Join(t.TempDir(), "counts")
			runChild(t, name, "LD_PRELOAD="+lib, onloadtest.EnvCounts+"="+counts)
		})
	}
}

// runChild runs the child test name in a new process of this test binary
// with env added, and fails t with the child's output when it fails.
func runChild(t *testing.T, name string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1", "-test.timeout=90s")
	cmd.Env = append(append(os.Environ(), env...), childEnv+"="+name)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil || !strings.Contains(out.String(), "--- PASS: "+name) {
		t.Fatalf("%s in a child process (%s): %v\n%s", name, strings.Join(env, " "), err, out.String())
	}
	return out.String()
}

// inChild skips t unless this process was started for it, and returns
// the interposer's counts file.
func inChild(t *testing.T) string {
	t.Helper()
	if os.Getenv(childEnv) != t.Name() {
		t.Skip("runs in a child process with the interposer preloaded: see TestUnderInterposer")
	}
	return os.Getenv(onloadtest.EnvCounts)
}

func readCounts(t *testing.T, path string) onloadtest.Counts {
	t.Helper()
	c, err := onloadtest.ReadCounts(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestChildSignal: the interposer claimed SIGRTMAX-10 before the runtime
// started; the runtime replaced its handler at start-up (the problem);
// the backend put it back; os/signal asking for every signal does not take
// it; it is delivered to the interposer's handler on a thread running Go
// code and on one waiting in the backend's blocking read (which the signal
// interrupts, as Onload means it to, without failing the read); and after
// signal.Ignore took it, KeepSignal and every socket open put it back.
func TestChildSignal(t *testing.T) {
	path := inChild(t)
	c := readCounts(t, path)
	st := onload.Signal()
	if st.Signal != c.Signal || st.Signal != 54 || !st.Claimed || st.Handler != c.Handler {
		t.Fatalf("signal state %+v; the interposer installed %#x for signal %d", st, c.Handler, c.Signal)
	}
	if !st.TakenAtStart || c.Calls["sigaction_refused"] == 0 {
		t.Errorf("the runtime did not try to replace the handler at start-up (taken %v, refused %d times): this test no longer shows the problem it guards against",
			st.TakenAtStart, c.Calls["sigaction_refused"])
	}
	if !st.Installed {
		t.Fatalf("after start-up the handler is not the interposer's: %+v", st)
	}
	sig := syscall.Signal(st.Signal)

	ch := make(chan os.Signal, 256)
	signal.Notify(ch) // every signal
	defer signal.Reset()
	if !onload.Signal().Installed {
		t.Fatal("signal.Notify for every signal replaced the handler")
	}

	delivered := c.OK["sigonload_delivered"]
	deliver := func(tid int) {
		t.Helper()
		if err := unix.Tgkill(unix.Getpid(), tid, sig); err != nil {
			t.Fatalf("tgkill: %v", err)
		}
		delivered++
		if got, err := onloadtest.WaitCount(path, "sigonload_delivered", delivered, 5*time.Second); err != nil || got != delivered {
			t.Fatalf("signal %d sent to thread %d: the interposer's handler ran %d times, want %d (%v)", sig, tid, got, delivered, err)
		}
	}

	// A thread running Go code.
	runtime.LockOSThread()
	deliver(unix.Gettid())
	runtime.UnlockOSThread()

	// A thread waiting in poll(3) inside the backend's blocking read.
	a, b := udpPair(t, bypass.Options{Wait: bypass.WaitBlock, ReadTimeout: 20 * time.Second})
	tids, res := make(chan int), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- unix.Gettid()
		buf := make([]byte, 16)
		n, _, err := b.ReadFrom(buf)
		if err == nil && n != 3 {
			err = errors.New("read the wrong datagram")
		}
		res <- err
	}()
	tid := <-tids
	before := readCounts(t, path)
	waitInPoll(t, tid)
	deliver(tid)
	if _, err := a.WriteTo([]byte{1, 2, 3}, b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("the read the signal interrupted: %v", err)
	}
	d := readCounts(t, path).Delta(before)
	if d.Calls["poll"] == d.OK["poll"] {
		t.Errorf("no poll() failed (EINTR) while the signal was delivered to the waiting thread: polls %d, ok %d", d.Calls["poll"], d.OK["poll"])
	}

	// signal.Ignore takes it; KeepSignal, and any socket the backend
	// opens, puts it back.
	signal.Ignore(sig)
	if onload.Signal().Installed {
		t.Log("signal.Ignore no longer replaces the handler")
	}
	st, err := onload.KeepSignal()
	if err != nil || !st.Installed || st.Repairs != 1 {
		t.Fatalf("KeepSignal after Ignore: %+v, %v", st, err)
	}
	signal.Ignore(sig)
	signal.Notify(ch, sig)
	x, _ := udpPair(t, bypass.Options{})
	x.Close()
	if st := onload.Signal(); !st.Installed || st.Repairs != 2 {
		t.Fatalf("a socket opened after Ignore and Notify did not put the handler back: %+v", st)
	}
	deliver(unix.Gettid())

	// None of it reached os/signal.
	deadline := time.After(200 * time.Millisecond)
	for {
		select {
		case s := <-ch:
			if s == sig {
				t.Fatalf("os/signal received signal %d", sig)
			}
		case <-deadline:
			return
		}
	}
}

// signalAtEnd checks, after a run, that the interposer's SIGRTMAX-10
// handler is still the kernel's, and that a signal sent now reaches it.
func signalAtEnd(t *testing.T, path string) {
	t.Helper()
	st := onload.Signal()
	if !st.Installed {
		t.Fatalf("at the end of the run the SIGONLOAD handler is not the interposer's: %+v", st)
	}
	want := readCounts(t, path).OK["sigonload_delivered"] + 1
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Tgkill(unix.Getpid(), unix.Gettid(), syscall.Signal(st.Signal)); err != nil {
		t.Fatal(err)
	}
	if got, err := onloadtest.WaitCount(path, "sigonload_delivered", want, 5*time.Second); err != nil || got != want {
		t.Fatalf("at the end of the run: signal delivered %d times, want %d (%v)", got, want, err)
	}
}

// waitInPoll waits until thread tid sleeps in poll(2) or ppoll(2).
func waitInPoll(t *testing.T, tid int) {
	t.Helper()
	calls := []string{strconv.Itoa(unix.SYS_PPOLL)}
	if runtime.GOARCH == "amd64" {
		calls = append(calls, "7") // poll
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/syscall", tid))
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(string(b)); len(f) > 0 && slices.Contains(calls, f[0]) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d did not reach poll() in 10s (%s)", tid, b)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestChildUDP: every operation of a UDP ping-pong, spinning and
// blocking, went through the interposer, one successful C library call
// per datagram and per batch, and nothing went around it (its descriptors
// are not kernel sockets).
func TestChildUDP(t *testing.T) {
	path := inChild(t)
	if !onload.Find().Present {
		t.Fatal("onload_is_present not found, or false, with the interposer preloaded")
	}
	if err := bypass.AutoSkip("onload"); err != nil {
		t.Fatalf("AutoSkip(onload) with Onload present: %v", err)
	}
	for _, w := range []bypass.WaitMode{bypass.WaitSpin, bypass.WaitBlock} {
		t.Run(w.String(), func(t *testing.T) {
			c0 := readCounts(t, path)
			a, b := udpPair(t, bypass.Options{Wait: w, ReadTimeout: 10 * time.Second})
			c1 := readCounts(t, path)
			d := c1.Delta(c0)
			for _, f := range []string{"socket", "bind", "getsockname"} {
				if d.OK[f] != 2 || d.Calls[f] != 2 {
					t.Errorf("%s: %d calls, %d ok; want 2 (one per socket):%s", f, d.Calls[f], d.OK[f], d.Nonzero())
				}
			}
			// The descriptor is the interposer's stand-in (it reports it as
			// the endpoint): a system call around the C library fails.
			st, _ := onload.StatOf(a)
			if _, _, err := unix.Recvfrom(st.EndpointID, make([]byte, 8), unix.MSG_DONTWAIT); !errors.Is(err, unix.ENOTSOCK) {
				t.Fatalf("a raw recvfrom on descriptor %d: %v; want ENOTSOCK", st.EndpointID, err)
			}
			c1 = readCounts(t, path)
			const n = 300
			pingPong(t, a, b, n)
			c2 := readCounts(t, path)
			d = c2.Delta(c1)
			tx := a.Stats().TxPackets + b.Stats().TxPackets
			rx := a.Stats().RxPackets + b.Stats().RxPackets
			if tx != 2*n || rx != 2*n {
				t.Fatalf("stats: tx %d rx %d, want %d", tx, rx, 2*n)
			}
			if d.OK["sendto"] != tx || d.Calls["sendto"] != tx {
				t.Errorf("sendto: %d calls, %d ok; want %d, one per datagram sent:%s", d.Calls["sendto"], d.OK["sendto"], tx, d.Nonzero())
			}
			if d.OK["recvfrom"] != rx || d.Calls["recvfrom"] < rx {
				t.Errorf("recvfrom: %d calls, %d ok; want %d ok, one per datagram received:%s", d.Calls["recvfrom"], d.OK["recvfrom"], rx, d.Nonzero())
			}
			for f, calls := range d.Calls {
				if calls != 0 && f != "sendto" && f != "recvfrom" && f != "poll" {
					t.Errorf("%s called %d times during the ping-pong", f, calls)
				}
			}
			if w == bypass.WaitSpin && d.Calls["poll"] != 0 {
				t.Errorf("spinning reads called poll %d times", d.Calls["poll"])
			}

			// Batches: one sendmmsg for 8 datagrams, recvmmsg until all
			// are in, and one that finds nothing.
			msgs := make([]bypass.Message, 8)
			for i := range msgs {
				msgs[i] = bypass.Message{Buf: []byte{byte(i)}, Addr: b.LocalAddr()}
			}
			if m, err := a.WriteBatch(msgs); m != 8 || err != nil {
				t.Fatalf("WriteBatch = %d, %v", m, err)
			}
			in := make([]bypass.Message, 8)
			for i := range in {
				in[i].Buf = make([]byte, 8)
			}
			for got := 0; got < 8; {
				m, err := b.ReadBatch(in[got:])
				if err != nil {
					t.Fatal(err)
				}
				got += m
			}
			if m, err := b.TryReadBatch(in); m != 0 || err != nil {
				t.Fatalf("TryReadBatch on nothing = %d, %v", m, err)
			}
			c3 := readCounts(t, path)
			d = c3.Delta(c2)
			if d.OK["sendmmsg"] != 1 || d.Calls["sendmmsg"] != 1 {
				t.Errorf("sendmmsg: %d calls, %d ok; want 1", d.Calls["sendmmsg"], d.OK["sendmmsg"])
			}
			if d.OK["recvmmsg"] < 1 || d.OK["recvmmsg"] > 8 || d.Calls["recvmmsg"] == d.OK["recvmmsg"] {
				t.Errorf("recvmmsg: %d calls, %d ok; want 1 to 8 that received, and the empty try", d.Calls["recvmmsg"], d.OK["recvmmsg"])
			}

			a.Close()
			b.Close()
			d = readCounts(t, path).Delta(c3)
			if d.OK["close"] != 2 || d.Calls["shutdown"] != 2 {
				t.Errorf("Close: close %d ok, shutdown %d calls; want 2 each:%s", d.OK["close"], d.Calls["shutdown"], d.Nonzero())
			}
		})
	}
	signalAtEnd(t, path)
}

// TestChildTCP: a TCP ping-pong, spinning and blocking, through the
// interposer: one send per message each way, receives that add up, and
// the setup calls a dial, a listen and an accept make.
func TestChildTCP(t *testing.T) {
	path := inChild(t)
	for _, w := range []bypass.WaitMode{bypass.WaitSpin, bypass.WaitBlock} {
		t.Run(w.String(), func(t *testing.T) {
			c0 := readCounts(t, path)
			srv, cli := tcpPair(t, bypass.Options{Wait: w, ReadTimeout: 10 * time.Second})
			c1 := readCounts(t, path)
			d := c1.Delta(c0)
			for f, want := range map[string]uint64{"socket": 2, "bind": 1, "listen": 1, "accept4": 1} {
				if d.OK[f] != want {
					t.Errorf("%s: %d ok, want %d:%s", f, d.OK[f], want, d.Nonzero())
				}
			}
			if d.Calls["connect"] != 1 {
				t.Errorf("connect: %d calls, want 1", d.Calls["connect"])
			}
			const n = 300
			tcpPingPong(t, srv, cli, n)
			d = readCounts(t, path).Delta(c1)
			if d.OK["send"] != 2*n || d.Calls["send"] != 2*n {
				t.Errorf("send: %d calls, %d ok; want %d, one per message:%s", d.Calls["send"], d.OK["send"], 2*n, d.Nonzero())
			}
			if d.OK["recv"] < 2*n || d.OK["recv"] > 4*n {
				t.Errorf("recv: %d ok; want %d to %d:%s", d.OK["recv"], 2*n, 4*n, d.Nonzero())
			}
			for f, calls := range d.Calls {
				if calls != 0 && f != "send" && f != "recv" && f != "poll" {
					t.Errorf("%s called %d times during the ping-pong", f, calls)
				}
			}
			st, err := onload.StatOf(cli)
			if err != nil || !st.Accelerated || st.StackID != 7 {
				t.Errorf("StatOf(client) = %+v, %v; want accelerated on the interposer's stack 7", st, err)
			}
		})
	}
	signalAtEnd(t, path)
}

// TestChildExtensions: the extension API is found and used: stack name,
// per-thread spin, per-socket facts in Info, and send templates.
func TestChildExtensions(t *testing.T) {
	path := inChild(t)
	e := onload.Find()
	want := onload.Extensions{Present: true, StackName: true, ThreadSpin: true, FdStat: true, Templates: true}
	if e != want {
		t.Fatalf("Find() = %s; want %s", e, want)
	}
	c0 := readCounts(t, path)
	if err := onload.SetStackName("lowlat-test", onload.ScopeProcess); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	err := onload.SetThreadSpin(onload.SpinAll, true)
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	if err := onload.SetThreadSpin(onload.Spin(99), true); err == nil {
		t.Error("SetThreadSpin accepted kind 99")
	}
	a, _ := udpPair(t, bypass.Options{})
	st, err := onload.StatOf(a)
	if err != nil || !st.Known || !st.Accelerated || st.StackID != 7 || st.StackName != "lowlat-test" {
		t.Fatalf("StatOf = %+v, %v", st, err)
	}
	if d := bypass.Describe(a.Info()); !strings.Contains(d, `accelerated by Onload stack 7 "lowlat-test"`) {
		t.Errorf("Info does not name the stack:\n%s", d)
	}
	d := readCounts(t, path).Delta(c0)
	for _, f := range []string{"onload_set_stackname", "onload_thread_set_spin", "onload_fd_stat"} {
		if d.OK[f] == 0 {
			t.Errorf("%s not called:%s", f, d.Nonzero())
		}
	}

	// A template: a framed message, patched at one place and sent.
	srv, cli := tcpPair(t, bypass.Options{ReadTimeout: 10 * time.Second})
	msg := []byte("\x00\x00\x00\x0bprice=00000")
	tp, err := onload.NewTemplate(cli, msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Update(10, []byte("12")); err != nil {
		t.Fatal(err)
	}
	if err := tp.Send(13, []byte("99")); err != nil {
		t.Fatal(err)
	}
	if err := tp.Send(0, nil); !errors.Is(err, onload.ErrTemplateUsed) {
		t.Errorf("second Send: %v", err)
	}
	buf := make([]byte, 64)
	m, err := srv.ReadMsg(buf)
	if err != nil || string(buf[:m]) != "price=12099" {
		t.Fatalf("read %q, %v; want price=12099", buf[:m], err)
	}
	tp, err = onload.NewTemplate(cli, msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Update(20, []byte("x")); err == nil {
		t.Error("an update past the end was accepted")
	}
	if err := tp.Abort(); err != nil {
		t.Fatal(err)
	}
	d = readCounts(t, path).Delta(c0)
	if d.OK["onload_msg_template_alloc"] != 2 || d.OK["onload_msg_template_update"] != 2 || d.OK["onload_msg_template_abort"] != 1 {
		t.Errorf("templates: %s", d.Nonzero())
	}
	if _, err := onload.StatOf(struct{}{}); err == nil {
		t.Error("StatOf accepted something that is not a connection")
	}
}

// onloadDirs are where a packaged Onload installs libonload.so.
var onloadDirs = []string{
	"/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
	"/usr/lib", "/lib64", "/usr/local/lib64", "/usr/local/lib",
}

// TestRealOnload runs the UDP and TCP ping-pongs and the signal checks
// with Onload's own libonload.so preloaded, where this host has one. On a
// host without an Onload adapter, Onload hands every socket to the kernel:
// the backend must work the same way there.
func TestRealOnload(t *testing.T) {
	lib := ""
	for _, d := range onloadDirs {
		if st, err := os.Stat(filepath.Join(d, "libonload.so")); err == nil && st.Mode().IsRegular() {
			lib = filepath.Join(d, "libonload.so")
			break
		}
	}
	if lib == "" {
		t.Skipf("Onload is not installed here (no libonload.so in %s)", strings.Join(onloadDirs, ", "))
	}
	runChild(t, "TestChildRealOnload", "LD_PRELOAD="+lib)
}

func TestChildRealOnload(t *testing.T) {
	inChild(t)
	if !onload.Find().Present {
		t.Fatal("libonload.so is preloaded but onload_is_present says no")
	}
	if st := onload.Signal(); !st.Claimed || !st.Installed {
		t.Fatalf("SIGONLOAD: %+v", st)
	}
	for _, w := range []bypass.WaitMode{bypass.WaitSpin, bypass.WaitBlock} {
		a, b := udpPair(t, bypass.Options{Wait: w, ReadTimeout: 10 * time.Second})
		pingPong(t, a, b, 100)
		st, _ := onload.StatOf(a)
		t.Logf("udp %v: %s", w, st)
		srv, cli := tcpPair(t, bypass.Options{Wait: w, ReadTimeout: 10 * time.Second})
		tcpPingPong(t, srv, cli, 100)
		st, _ = onload.StatOf(cli)
		t.Logf("tcp %v: %s", w, st)
	}
	if st := onload.Signal(); !st.Installed {
		t.Fatalf("SIGONLOAD after the run: %+v", st)
	}
}
