//go:build linux

package afxdp

import (
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestProgramLoadsWithoutPerfmon loads the steering program on a thread
// holding only the capabilities a container running afxdp is given
// (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK): the verifier must
// accept it without CAP_PERFMON or CAP_SYS_ADMIN.
func TestProgramLoadsWithoutPerfmon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test drops capabilities from a root thread")
	}
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var saved [2]unix.CapUserData
	if err := unix.Capget(&hdr, &saved[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	reduced := saved
	for _, c := range []int{unix.CAP_SYS_ADMIN, unix.CAP_PERFMON} {
		reduced[c/32].Effective &^= 1 << (uint(c) % 32)
	}
	if err := unix.Capset(&hdr, &reduced[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	var loadErr error
	func() {
		flows, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: maxFlows})
		if err != nil {
			loadErr = err
			return
		}
		defer flows.Close()
		xsks, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			loadErr = err
			return
		}
		defer xsks.Close()
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "Dual BSD/GPL", Instructions: program(flows, xsks)})
		if err != nil {
			loadErr = err
			return
		}
		prog.Close()
	}()
	if err := unix.Capset(&hdr, &saved[0]); err != nil {
		t.Fatalf("restore capabilities: %v (thread left locked, it exits with the test)", err)
	}
	runtime.UnlockOSThread()
	if loadErr != nil {
		t.Fatalf("steering program refused without CAP_PERFMON: %v", loadErr)
	}
}
