//go:build linux

package affinity

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"

	"github.com/lowlat/lowlat/internal/priv"
)

// CPUDMALatencyPath is the PM QoS device that bounds how long any CPU may
// take to wake from idle.
const CPUDMALatencyPath = "/dev/cpu_dma_latency"

// LatencyHold is an open request on /dev/cpu_dma_latency. The kernel keeps
// the request, and so keeps CPUs out of idle states slower than its bound,
// exactly as long as the file stays open: closing it, or the death of the
// process, drops the request. Nothing needs journaling.
type LatencyHold struct {
	f  *os.File
	us int32
}

// HoldCPULatency asks that no CPU take longer than us microseconds to wake
// (0: stay in C0/poll), writing a 32-bit value to /dev/cpu_dma_latency, and
// reads the device back to confirm the request is in force. Opening the
// device needs root (it is mode 0600).
func HoldCPULatency(us int) (*LatencyHold, error) {
	if us < 0 || us > math.MaxInt32 {
		return nil, fmt.Errorf("cpu latency %dus: want 0 to %d", us, math.MaxInt32)
	}
	f, err := os.OpenFile(CPUDMALatencyPath, os.O_RDWR, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, priv.Wrap("open "+CPUDMALatencyPath, "CAP_DAC_OVERRIDE", err)
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(us))
	if _, err := f.Write(b[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %dus to %s: %w", us, CPUDMALatencyPath, err)
	}
	h := &LatencyHold{f: f, us: int32(us)}
	got, err := h.Current()
	if err != nil {
		f.Close()
		return nil, err
	}
	if got > us {
		f.Close()
		return nil, fmt.Errorf("hold %s at %dus: reads back %dus", CPUDMALatencyPath, us, got)
	}
	return h, nil
}

// Current reads the latency bound in force now, in microseconds: the
// lowest of all holders' requests.
func (h *LatencyHold) Current() (int, error) {
	return readCPULatency(h.f)
}

// Requested is the bound this hold asked for.
func (h *LatencyHold) Requested() int { return int(h.us) }

// Close drops the request. Closing twice is harmless.
func (h *LatencyHold) Close() error {
	if h == nil || h.f == nil {
		return nil
	}
	err := h.f.Close()
	h.f = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", CPUDMALatencyPath, err)
	}
	return nil
}

// CPULatency reads the latency bound in force now (2000000000 means no
// bound). Opening the device to read it registers a request at the
// default (no bound) for the instant it is open, which changes nothing.
func CPULatency() (int, error) {
	f, err := os.Open(CPUDMALatencyPath)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return 0, priv.Wrap("open "+CPUDMALatencyPath, "CAP_DAC_OVERRIDE", err)
	}
	defer f.Close()
	return readCPULatency(f)
}

func readCPULatency(f *os.File) (int, error) {
	var b [4]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return 0, fmt.Errorf("read %s: %w", CPUDMALatencyPath, err)
	}
	return int(int32(binary.NativeEndian.Uint32(b[:]))), nil
}
