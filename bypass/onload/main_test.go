//go:build linux

package onload_test

import (
	"os"
	"testing"

	"github.com/lowlat/lowlat/internal/testnet"
)

// TestMain fails the run when the tests leave descriptors or goroutines
// behind. A child process started for one test (interposer_test.go) skips
// the check: os/signal keeps a goroutine once a test has used it.
func TestMain(m *testing.M) {
	if os.Getenv("LOWLAT_ONLOAD_TEST_CHILD") != "" {
		os.Exit(m.Run())
	}
	os.Exit(testnet.Main(m))
}
