package affinity

import (
	"fmt"
	"strconv"
)

// Policy is a Linux scheduling policy.
type Policy int

const (
	// SchedOther is the default time-sharing policy (SCHED_OTHER).
	SchedOther Policy = iota
	// SchedFIFO runs the task until it blocks or yields, ahead of every
	// SCHED_OTHER task (SCHED_FIFO). A spinning SCHED_FIFO thread can starve
	// kernel threads on its CPU: give it a CPU of its own.
	SchedFIFO
	// SchedRR is SCHED_FIFO with a time slice among equal priorities.
	SchedRR
)

func (p Policy) String() string {
	switch p {
	case SchedOther:
		return "other"
	case SchedFIFO:
		return "fifo"
	case SchedRR:
		return "rr"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// ParsePolicy parses "other" (or ""), "fifo" or "rr".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "", "other":
		return SchedOther, nil
	case "fifo":
		return SchedFIFO, nil
	case "rr":
		return SchedRR, nil
	}
	return 0, fmt.Errorf("scheduling policy %q: want other, fifo or rr", s)
}

func (p Policy) validate(priority int) error {
	switch p {
	case SchedOther:
		if priority != 0 {
			return fmt.Errorf("scheduling policy other: priority %d, want 0", priority)
		}
	case SchedFIFO, SchedRR:
		if priority < 1 || priority > 99 {
			return fmt.Errorf("scheduling policy %s: priority %d, want 1 to 99", p, priority)
		}
	default:
		return fmt.Errorf("scheduling policy %d: unknown", int(p))
	}
	return nil
}
