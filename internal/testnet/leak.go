//go:build linux

package testnet

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs a package's tests and then fails the run when they left file
// descriptors, goroutines, or network namespaces of this process behind.
// Use it as the package's TestMain: func TestMain(m *testing.M) { os.Exit(testnet.Main(m)) }.
func Main(m *testing.M) int {
	// The runtime opens its poller on first use and keeps it: start it
	// before counting.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	fds, gs := openFDs(), runtime.NumGoroutine()
	code := m.Run()
	if f := flag.Lookup("test.fuzz"); code != 0 || (f != nil && f.Value.String() != "") {
		return code // fuzzing keeps goroutines of its own
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		nf, ng, ns := openFDs(), runtime.NumGoroutine(), ownNamespaces()
		if nf <= fds && ng <= gs && len(ns) == 0 {
			return code
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "leak: %d file descriptors (was %d), %d goroutines (was %d), namespaces %q\n", nf, fds, ng, gs, ns)
			if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
				for _, e := range ents {
					l, _ := os.Readlink("/proc/self/fd/" + e.Name())
					fmt.Fprintf(os.Stderr, "  fd %s -> %s\n", e.Name(), l)
				}
			}
			buf := make([]byte, 1<<16)
			os.Stderr.Write(buf[:runtime.Stack(buf, true)])
			return 1
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

// ownNamespaces lists the namespaces NewPair made in this process that
// still exist.
func ownNamespaces() []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	mark := fmt.Sprintf("-%d-", os.Getpid()%100000)
	var left []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "llt-") && strings.Contains(f[0], mark) {
			left = append(left, f[0])
		}
	}
	return left
}
