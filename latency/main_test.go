//go:build linux

package latency_test

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestMain fails the run when the tests leave file descriptors or
// goroutines behind.
func TestMain(m *testing.M) {
	// The runtime opens its poller (an epoll descriptor and an eventfd) on
	// first use and keeps it: start it before counting.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	fds, g := openFDs(), runtime.NumGoroutine()
	code := m.Run()
	// Fuzzing starts the signal-handling goroutine for itself: check only
	// ordinary runs.
	if f := flag.Lookup("test.fuzz"); code == 0 && (f == nil || f.Value.String() == "") {
		deadline := time.Now().Add(5 * time.Second)
		for {
			nf, ng := openFDs(), runtime.NumGoroutine()
			if nf <= fds && ng <= g {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "leak: %d file descriptors (was %d), %d goroutines (was %d)\n", nf, fds, ng, g)
				for _, e := range fdList() {
					fmt.Fprintln(os.Stderr, "  fd", e)
				}
				buf := make([]byte, 1<<16)
				os.Stderr.Write(buf[:runtime.Stack(buf, true)])
				code = 1
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	os.Exit(code)
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

func fdList() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+" -> "+l)
	}
	return out
}
