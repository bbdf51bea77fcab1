//go:build !linux

package bypass

import (
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
)

// epoll off Linux: no descriptor readiness; a Poller spins over every
// connection.
type epoll struct{}

func (*epoll) open(block bool) error {
	if block {
		return backend.Unsupported("a blocking poller needs epoll (Linux)")
	}
	return nil
}
func (*epoll) add(int, bool) error                 { return nil }
func (*epoll) remove(int, bool, bool)              {}
func (*epoll) canSleep(int) bool                   { return false }
func (*epoll) wait(time.Duration, func(int)) error { return nil }
func (*epoll) close() error                        { return nil }
