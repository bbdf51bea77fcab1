// Package onloadtest builds and reads the interposing library that the
// onload backend's tests preload in place of libonload.so: a C library
// (testdata/interposer.c) that takes over the C library's socket calls as
// Onload does, counts them per function, forwards them, stands in for
// Onload's extension API, and claims SIGRTMAX-10 as Onload does. Tests
// build it into a temporary directory with the C compiler; nothing built
// is kept.
package onloadtest

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

//go:embed testdata/interposer.c
var source []byte

// EnvCounts names the file the interposer keeps its counts in (mapped
// shared, current at every moment). Set it in the environment of the
// process the interposer is preloaded into.
const EnvCounts = "LOWLAT_INTERPOSER_COUNTS"

// Build compiles the interposer into a new temporary directory of tb and
// returns the shared library's path. Without a C compiler it skips tb,
// saying so.
func Build(tb testing.TB) string {
	tb.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		tb.Skipf("the interposer needs a C compiler (%s): %v", cc, err)
	}
	dir := tb.TempDir()
	src := filepath.Join(dir, "interposer.c")
	lib := filepath.Join(dir, "libinterposer.so")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", lib, src, "-ldl")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build the interposer: %s: %v\n%s", cmd, err, out)
	}
	return lib
}

// Counts is a snapshot of the interposer's counts file.
type Counts struct {
	Signal  int               // SIGRTMAX-10 as the interposer numbered it
	Handler uintptr           // the handler it installed for that signal
	Calls   map[string]uint64 // per function: calls on sockets it created
	OK      map[string]uint64 // per function: those that did not fail
}

// Delta returns c minus before, function by function.
func (c Counts) Delta(before Counts) Counts {
	d := Counts{Signal: c.Signal, Handler: c.Handler, Calls: map[string]uint64{}, OK: map[string]uint64{}}
	for k, v := range c.Calls {
		d.Calls[k] = v - before.Calls[k]
	}
	for k, v := range c.OK {
		d.OK[k] = v - before.OK[k]
	}
	return d
}

// Nonzero lists the functions called, for failure messages.
func (c Counts) Nonzero() string {
	s := ""
	for k, v := range c.Calls {
		if v != 0 {
			s += fmt.Sprintf(" %s=%d/%d", k, c.OK[k], v)
		}
	}
	return s
}

const (
	headerSize = 64
	entrySize  = 48
)

// ReadCounts reads the counts file at path.
func ReadCounts(path string) (Counts, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Counts{}, fmt.Errorf("interposer counts: %w", err)
	}
	if len(b) < headerSize || string(b[:8]) != "LLITCNT1" {
		return Counts{}, errors.New("interposer counts: " + path + ": not written by the interposer (was it preloaded?)")
	}
	ne := binary.NativeEndian
	n := int(ne.Uint32(b[8:]))
	if len(b) < headerSize+n*entrySize {
		return Counts{}, fmt.Errorf("interposer counts: %s: %d bytes, want %d", path, len(b), headerSize+n*entrySize)
	}
	c := Counts{
		Handler: uintptr(ne.Uint64(b[16:])),
		Signal:  int(ne.Uint64(b[24:])),
		Calls:   make(map[string]uint64, n),
		OK:      make(map[string]uint64, n),
	}
	for i := range n {
		e := b[headerSize+i*entrySize:]
		name := string(e[:32])
		for j := range 32 {
			if e[j] == 0 {
				name = string(e[:j])
				break
			}
		}
		c.Calls[name] = ne.Uint64(e[32:])
		c.OK[name] = ne.Uint64(e[40:])
	}
	return c, nil
}

// WaitCount waits up to timeout for the OK count of name in the counts
// file to reach at least want, and returns the last count read.
func WaitCount(path, name string, want uint64, timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := ReadCounts(path)
		if err != nil {
			return 0, err
		}
		if got := c.OK[name]; got >= want || time.Now().After(deadline) {
			return got, nil
		}
		time.Sleep(time.Millisecond)
	}
}
