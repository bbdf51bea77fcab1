package containerize

import (
	"fmt"
	"slices"
)

// Backends are the latprobe backends a container can be set up for.
var Backends = []string{"kernel", "busypoll", "afxdp", "efvi", "onload"}

// Capabilities returns the Linux capabilities, in the OCI spelling
// ("CAP_NET_ADMIN"), that latprobe needs with backend and nothing more:
//
//	kernel:   none
//	busypoll: CAP_NET_ADMIN (SO_PREFER_BUSY_POLL, SO_BUSY_POLL_BUDGET)
//	afxdp:    CAP_NET_RAW (AF_XDP socket), CAP_NET_ADMIN (XDP attach),
//	          CAP_BPF (load the redirect program), CAP_IPC_LOCK (UMEM
//	          beyond RLIMIT_MEMLOCK)
//	efvi:     CAP_NET_RAW (ef_vi filters on the Onload device)
//	onload:   none (Onload's driver does the privileged work behind
//	          /dev/onload; the container needs the devices, not
//	          capabilities)
//
// realtime adds CAP_SYS_NICE, for CPU pinning outside the cpuset's default
// and SCHED_FIFO. The result is sorted.
func Capabilities(backend string, realtime bool) ([]string, error) {
	var caps []string
	switch backend {
	case "kernel":
	case "busypoll":
		caps = []string{"CAP_NET_ADMIN"}
	case "afxdp":
		caps = []string{"CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_BPF", "CAP_IPC_LOCK"}
	case "efvi":
		caps = []string{"CAP_NET_RAW"}
	case "onload":
	default:
		return nil, fmt.Errorf("containerize: backend %q: want one of %v", backend, Backends)
	}
	if realtime {
		caps = append(caps, "CAP_SYS_NICE")
	}
	slices.Sort(caps)
	return caps, nil
}

// capBits maps the capabilities this package grants to their bit numbers
// in /proc/PID/status CapEff (linux/capability.h).
var capBits = map[string]uint{
	"CAP_NET_ADMIN": 12,
	"CAP_NET_RAW":   13,
	"CAP_IPC_LOCK":  14,
	"CAP_SYS_NICE":  23,
	"CAP_BPF":       39,
}

// CapMask is the CapEff bit mask of caps, as /proc/PID/status prints it in
// hex. It fails on a capability this package never grants.
func CapMask(caps []string) (uint64, error) {
	var m uint64
	for _, c := range caps {
		b, ok := capBits[c]
		if !ok {
			return 0, fmt.Errorf("containerize: capability %q: not one this package grants", c)
		}
		m |= 1 << b
	}
	return m, nil
}
