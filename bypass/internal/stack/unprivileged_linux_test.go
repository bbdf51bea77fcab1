//go:build linux

package stack

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCoreRunsUnprivileged runs every other test of this package again as
// the unprivileged user 65534: the core is tested against MemDriver, so it
// needs neither root nor hardware, and this keeps it so.
func TestCoreRunsUnprivileged(t *testing.T) {
	if os.Getenv("LLSTACK_CHILD") != "" {
		if os.Geteuid() == 0 {
			t.Fatal("the unprivileged child runs as root")
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skipf("already unprivileged (uid %d): this run is the proof", os.Geteuid())
	}
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
	bin := filepath.Join(dir, "stack.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LLSTACK_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("\nPASS\n")) || bytes.Contains(out, []byte("--- SKIP")) {
		t.Fatalf("the core's tests as uid 65534: %v\n%s", err, out)
	}
	t.Logf("the core's tests passed as uid 65534 (%d lines of output)", bytes.Count(out, []byte("\n")))
}
