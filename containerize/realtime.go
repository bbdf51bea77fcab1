package containerize

import "errors"

// ErrNoRealtime says that a container here cannot get real-time runtime,
// so SCHED_FIFO fails in it with EPERM even with CAP_SYS_NICE.
var ErrNoRealtime = errors.New("containerize: SCHED_FIFO unavailable in containers here: the cgroup has no real-time runtime")

// RealtimeBudget is a cgroup's cpu.rt_runtime_us per cpu.rt_period_us.
type RealtimeBudget struct {
	Runtime, Period int64
}

// Share is the runtime and period a container gets from a parent with
// budget b: a quarter of the parent's runtime, so that the suite's two
// containers and their siblings fit under it.
func (b RealtimeBudget) Share() (runtime, period int64) {
	return b.Runtime / 4, b.Period
}
