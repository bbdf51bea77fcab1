//go:build linux

package affinity

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestHoldCPULatency(t *testing.T) {
	if os.Geteuid() != 0 {
		_, err := HoldCPULatency(0)
		if err == nil || !errors.Is(err, unix.EACCES) {
			t.Fatalf("unprivileged hold: %v", err)
		}
		t.Skip("holding /dev/cpu_dma_latency needs root")
	}
	h, err := HoldCPULatency(0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if v, err := CPULatency(); err != nil || v != 0 {
		t.Fatalf("while held: %d, %v", v, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	// After release the bound is whatever other holders ask (often none);
	// no value is asserted.
	if _, err := CPULatency(); err != nil {
		t.Fatal(err)
	}
	if _, err := HoldCPULatency(-1); err == nil {
		t.Fatal("negative bound accepted")
	}
}

func TestScheduler(t *testing.T) {
	p, prio, err := Scheduler(0)
	if err != nil || p != SchedOther || prio != 0 {
		t.Fatalf("Scheduler(0) = %v %d %v", p, prio, err)
	}
	if err := SetScheduler(0, SchedFIFO, 0); err == nil {
		t.Fatal("fifo priority 0 accepted")
	}
	if _, err := ParsePolicy("batch"); err == nil {
		t.Fatal("unknown policy accepted")
	}
	done := make(chan error)
	go func() {
		// A locked thread that exits with the goroutine takes its policy
		// with it.
		lockThread()
		err := SetScheduler(0, SchedFIFO, 10)
		if err == nil {
			p, prio, err = Scheduler(0)
			if err == nil && (p != SchedFIFO || prio != 10) {
				err = errors.New("policy not set")
			}
			if err2 := SetScheduler(0, SchedOther, 0); err == nil {
				err = err2
			}
		}
		done <- err
	}()
	if err := <-done; err != nil {
		var pe interface{ Unwrap() error }
		if os.Geteuid() != 0 && errors.As(err, &pe) && errors.Is(err, unix.EPERM) {
			t.Skipf("SCHED_FIFO needs CAP_SYS_NICE: %v", err)
		}
		t.Fatal(err)
	}
}
