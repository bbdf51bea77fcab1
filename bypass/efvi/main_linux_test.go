//go:build linux

package efvi

import (
	"os"
	"testing"

	"github.com/lowlat/lowlat/internal/testnet"
)

// TestMain fails the run when the tests leave descriptors, goroutines or
// network namespaces behind.
func TestMain(m *testing.M) { os.Exit(testnet.Main(m)) }
