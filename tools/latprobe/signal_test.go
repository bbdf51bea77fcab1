//go:build linux

package main

import (
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalContext checks that SIGHUP cancels the context, as SIGINT and
// SIGTERM do, and that SIGPIPE is ignored.
func TestSignalContext(t *testing.T) {
	ctx, stop := signalContext()
	defer stop()
	if !signal.Ignored(syscall.SIGPIPE) {
		t.Error("SIGPIPE is not ignored: a closed stdout pipe kills latprobe mid-run")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP did not cancel the context")
	}
}

// TestServerSIGHUP sends SIGHUP to a running latprobe server: it must end
// through its context (and its undo), not be killed by the signal.
func TestServerSIGHUP(t *testing.T) {
	cmd := exec.Command(binary, "server", "--addr", "127.0.0.1:0", "--duration", "30s")
	cmd.Env = cleanEnv()
	var out lockedWriter
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "udp") {
		if time.Now().After(deadline) {
			t.Fatalf("server did not start: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("server still running after SIGHUP")
	}
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Errorf("server killed by %v instead of shutting down: %s", ws.Signal(), out.String())
	}
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
