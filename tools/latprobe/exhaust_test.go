//go:build linux

package main

import (
	"bufio"
	encbin "encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lowlat/lowlat/latency"
)

// procStatus reads a "Name:   N kB" (or plain count) field of
// /proc/PID/status.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, line, err)
			}
			if len(f) > 1 && f[1] == "kB" {
				n <<= 10
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// raiseNoFile raises this process's soft RLIMIT_NOFILE to at least n (as
// far as the hard limit allows) and puts it back when the test ends.
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= n {
		return
	}
	if old.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is under the %d descriptors this test holds", old.Max, n)
	}
	raised := old
	raised.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// TestTCPServerBoundedMemory plays a careless or hostile crowd against
// latprobe server --proto tcp in a child process: rounds of 500
// connections (2,000 in all) opened over 127.0.0.1, held, and abandoned,
// each silent, or stopping partway through a length field or a message, or
// sending garbage. The server's resident memory must stay under 64 MB at
// its peak and come back to within 16 MB of where it started; a real
// client must be served during the rounds and after them; connections
// left open must be closed by the idle timeout; and the server's
// per-connection lines must be rate limited.
func TestTCPServerBoundedMemory(t *testing.T) {
	const (
		rounds    = 4
		perRound  = 500
		idle      = 3 * time.Second
		peakLimit = 64 << 20
		backLimit = 16 << 20
	)
	raiseNoFile(t, 4*perRound)
	cmd := exec.Command(binary, "server", "--proto", "tcp", "--backend", "kernel", "--wait", "block",
		"--addr", "127.0.0.1:0", "--idle-timeout", idle.String(), "--duration", "5m")
	cmd.Env = cleanEnv()
	var stdout, stderr lockedWriter
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("server ignored SIGINT for 15s")
		}
	})
	pid := cmd.Process.Pid
	var addr string
	for deadline := time.Now().Add(20 * time.Second); addr == ""; {
		if m := serverAddr.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start: %s %s", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	served := func(when string) {
		t.Helper()
		r := runBinary(t, "client", "--peer", addr, "--backend", "kernel", "--wait", "block", "--proto", "tcp",
			"--count", "200", "--warmup", "10", "--timeout", "5s", "--json")
		if r.code != 0 {
			t.Fatalf("real client %s: exit %d: %s", when, r.code, r.stderr)
		}
		if got := parseReports(t, r.stdout)[0]; got.Sent != 200 || got.Lost != 0 {
			t.Fatalf("real client %s: %+v", when, got)
		}
	}
	served("before")
	base := procStatus(t, pid, "VmRSS")
	baseThreads := procStatus(t, pid, "Threads")
	t.Logf("server RSS %d kB, %d threads at the start", base>>10, baseThreads)
	began := time.Now()

	// What each connection sends before it is held and abandoned.
	lowlat := encbin.BigEndian.AppendUint32(nil, latency.MaxSize)
	lowlat = encbin.BigEndian.AppendUint32(lowlat, latency.Magic)
	sockperf := make([]byte, latency.SockperfHeaderLen)
	encbin.BigEndian.PutUint32(sockperf[10:], latency.SockperfMaxSize)
	behaviours := [][]byte{
		nil,                                     // silent
		lowlat[:2],                              // half a length prefix
		append(lowlat, make([]byte, 2000)...),   // part of a message
		append(sockperf, make([]byte, 3000)...), // part of a large sockperf message
		[]byte("GET / HTTP/1.0\r\n\r\n"),        // not a message at all
	}
	var left []net.Conn // the last round's silent ones, left for the idle timeout
	peak := base
	for r := range rounds {
		var conns []net.Conn
		for i := range perRound {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatalf("round %d: connection %d: %v", r, i, err)
			}
			conns = append(conns, c)
			if b := behaviours[i%len(behaviours)]; b != nil {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(b); err != nil && !isReset(err) {
					t.Fatalf("round %d: connection %d: write: %v", r, i, err)
				}
			}
		}
		if r == 1 {
			served("during the rounds")
		}
		time.Sleep(500 * time.Millisecond)
		peak = max(peak, procStatus(t, pid, "VmRSS"))
		for i, c := range conns {
			if r == rounds-1 && i%len(behaviours) == 0 && len(left) < 100 {
				left = append(left, c)
				continue
			}
			if i%2 == 0 {
				c.(*net.TCPConn).SetLinger(0) // abandoned with a reset
			}
			c.Close()
		}
	}
	// The ones left open are closed by the server once idle.
	for _, c := range left {
		c.SetReadDeadline(time.Now().Add(idle + 10*time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || !(err.Error() == "EOF" || isReset(err)) {
			t.Errorf("connection left idle: read %v, want EOF from the idle timeout", err)
		}
		c.Close()
	}
	served("after the rounds")

	hwm := procStatus(t, pid, "VmHWM")
	var now int64
	for deadline := time.Now().Add(30 * time.Second); ; {
		now = procStatus(t, pid, "VmRSS")
		if now-base <= backLimit || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("server RSS: start %d kB, peak sampled %d kB, high-water mark %d kB, after %d kB; threads after %d",
		base>>10, peak>>10, hwm>>10, now>>10, procStatus(t, pid, "Threads"))
	if hwm >= peakLimit {
		t.Errorf("server RSS peaked at %d kB, want under %d kB", hwm>>10, peakLimit>>10)
	}
	if now-base > backLimit {
		t.Errorf("server RSS %d kB after the connections closed, %d kB over the start; want at most %d kB over",
			now>>10, (now-base)>>10, backLimit>>10)
	}

	// Rate-limited lines: at most logBurst a second on each stream, plus
	// the notes of how many were left out.
	secs := int(time.Since(began)/time.Second) + 2
	for name, w := range map[string]*lockedWriter{"stdout": &stdout, "stderr": &stderr} {
		n := strings.Count(w.String(), "\n")
		if limit := 2 * logBurst * secs; n > limit {
			t.Errorf("server wrote %d lines to %s in about %d s for %d connections; want at most %d", n, name, secs, rounds*perRound, limit)
		}
	}
	if !strings.Contains(stderr.String(), "left out") {
		t.Errorf("server stderr has no note of lines left out:\n%s", tail(stderr.String(), 20))
	}
	if !strings.Contains(stderr.String(), "idle") {
		t.Errorf("server stderr never says a connection was closed as idle:\n%s", tail(stderr.String(), 20))
	}
}

// TestTCPServerMaxConns: a connection over --max-conns is closed at once,
// the server says why, and a connection is served again once one ends.
func TestTCPServerMaxConns(t *testing.T) {
	addr := startServer(t, nil, "--proto", "tcp", "--backend", "kernel", "--wait", "block", "--addr", "127.0.0.1:0", "--max-conns", "2")
	var held []net.Conn
	for range 2 {
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Every dial completes in the kernel; the third is closed by the
	// server as soon as it is accepted. The two held ones are served, so
	// the server has registered them by the time they answer.
	for _, c := range held {
		echoOnce(t, c)
	}
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || !(err.Error() == "EOF" || isReset(err)) {
		t.Fatalf("connection over --max-conns: read %v, want it closed", err)
	}
	c.Close()
	held[0].Close()
	// The server notices the close asynchronously: retry, bounded.
	for try := 0; ; try++ {
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ok := tryEcho(c)
		c.Close()
		if ok {
			break
		}
		if try == 50 {
			t.Fatal("no connection served after one of the two ended")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// echoOnce sends one lowlat request on c and reads the reply.
func echoOnce(t *testing.T, c net.Conn) {
	t.Helper()
	if !tryEcho(c) {
		t.Fatalf("no echo on %v", c.LocalAddr())
	}
}

func tryEcho(c net.Conn) bool {
	req := make([]byte, 4+64)
	encbin.BigEndian.PutUint32(req, 64)
	latency.Lowlat.PutRequest(req[4:], 1, 1)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(req); err != nil {
		return false
	}
	resp := make([]byte, len(req))
	_, err := bufio.NewReader(c).Read(resp)
	return err == nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprint(strings.Join(lines, "\n"))
}
