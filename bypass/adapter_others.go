//go:build !linux

package bypass

import "time"

// wakeup off Linux: the adapter waits in short slices.
type wakeup struct{}

func initWakeup[T any](*wakeup, *T) {}

func (*wakeup) wake() {}
func (*wakeup) wait(_ int, _ bool, d time.Duration) error {
	if d < 0 || d > maxSlice {
		d = maxSlice
	}
	time.Sleep(min(d, 50*time.Microsecond))
	return nil
}
