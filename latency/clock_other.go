//go:build !amd64

package latency

import "errors"

// readTSC is never called where tscUsable fails.
func readTSC() uint64 { return 0 }

// tscUsable: only amd64 reads the TSC; other architectures use the
// monotonic clock.
func tscUsable() error { return errors.New("no TSC clock on this architecture") }
