//go:build linux

package stack

import (
	"bytes"
	"os"
	"testing"

	"github.com/lowlat/lowlat/internal/testnet"
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
	out, err := testnet.RunAsNobody(t, "", []string{"LLSTACK_CHILD=1"}, "-test.v", "-test.count=1")
	if err != nil || !bytes.Contains(out, []byte("\nPASS\n")) || bytes.Contains(out, []byte("--- SKIP")) {
		t.Fatalf("the core's tests as uid 65534: %v\n%s", err, out)
	}
	t.Logf("the core's tests passed as uid 65534 (%d lines of output)", bytes.Count(out, []byte("\n")))
}
