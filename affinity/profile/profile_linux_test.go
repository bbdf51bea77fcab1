//go:build linux

package profile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLoadOnlyRegularFiles: a device (endless, as /dev/zero) or a pipe
// (blocks, as /dev/stdin on a terminal or a FIFO with no writer) is refused
// before it is read, and a regular file past the size bound is refused
// after at most one byte more than the bound.
func TestLoadOnlyRegularFiles(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo.profile")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	paths := []string{"/dev/zero", fifo, t.TempDir()}
	if st, err := os.Stat("/dev/stdin"); err == nil && !st.Mode().IsRegular() {
		paths = append(paths, "/dev/stdin") // unless go test's stdin is redirected from a file
	}
	for _, p := range paths {
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Load(%q): %v", p, err)
		}
	}
	big := filepath.Join(t.TempDir(), "big.profile")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", maxSize)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load of a %d-byte file: %v", maxSize+3, err)
	}
}
