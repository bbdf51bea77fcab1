//go:build linux

package afxdp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/stack"
	"github.com/lowlat/lowlat/bypass/internal/undo"
	"github.com/lowlat/lowlat/internal/priv"
)

// Backend is the "afxdp" backend.
type Backend struct{}

var (
	_ backend.StackBackend  = Backend{}
	_ backend.StreamBackend = Backend{}
	_ backend.ContextDialer = Backend{}
)

func (Backend) Name() string { return "afxdp" }

// Defaults for XDPOptions' zero values.
const (
	DefaultFrameSize = 4096
	DefaultNumFrames = 4096
	DefaultRingSize  = 2048
)

// Conn is a UDP socket on an afxdp stack.
type Conn = stack.Socket

// stacks holds this process's afxdp stacks: one per interface and
// network namespace, shared by every socket on that interface.
var stacks stack.Registry

// ListenUDP opens a UDP socket for laddr on the afxdp stack of o.Interface
// (or of the interface that owns laddr's address), opening the stack when
// this process has none there yet.
func (Backend) ListenUDP(laddr netip.AddrPort, o backend.Options) (backend.PacketConn, error) {
	c, err := listen(laddr, o)
	if err != nil {
		return nil, fmt.Errorf("afxdp: listen udp %v: %w", laddr, err)
	}
	return c, nil
}

func listen(laddr netip.AddrPort, o backend.Options) (*Conn, error) {
	st, err := acquire(laddr.Addr(), o)
	if err != nil {
		return nil, err
	}
	defer st.Release() // the socket holds its own reference
	return st.Listen(laddr, o)
}

// DialTCP opens a TCP connection to raddr on the afxdp stack of
// o.Interface (or of the interface the route to raddr leaves by): the
// user-space TCP of package stack, run inline by the threads that read.
func (b Backend) DialTCP(raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	return b.DialTCPContext(context.Background(), raddr, o)
}

// DialTCPContext is DialTCP whose handshake ends with ctx.
func (Backend) DialTCPContext(ctx context.Context, raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	c, err := stack.Dial(ctx, func(a netip.Addr) (*stack.Stack, error) { return acquire(a, o) }, raddr, o)
	if err != nil {
		return nil, fmt.Errorf("afxdp: dial tcp %v: %w", raddr, err)
	}
	return c, nil
}

// ListenTCP listens for TCP connections on laddr on the afxdp stack.
func (Backend) ListenTCP(laddr netip.AddrPort, o backend.Options) (backend.StreamListener, error) {
	l, err := stack.Listen(func(a netip.Addr) (*stack.Stack, error) { return acquire(a, o) }, laddr, o)
	if err != nil {
		return nil, fmt.Errorf("afxdp: listen tcp %v: %w", laddr, err)
	}
	return l, nil
}

// OpenStack returns this process's afxdp stack on o.Interface, opening it
// when there is none yet. Sockets opened on it share its rings and its
// thread; Close gives back this handle's reference.
func (Backend) OpenStack(o backend.Options) (backend.Stack, error) {
	if o.Interface == "" {
		return nil, fmt.Errorf("afxdp: open stack: name the interface")
	}
	st, err := acquire(netip.IPv4Unspecified(), o)
	if err != nil {
		return nil, fmt.Errorf("afxdp: open stack on %s: %w", o.Interface, err)
	}
	return stack.Handle(st), nil
}

// acquire finds or opens the stack for the interface o names or that owns
// addr, in the calling thread's network namespace.
func acquire(addr netip.Addr, o backend.Options) (*stack.Stack, error) {
	cfg, err := config(o)
	if err != nil {
		return nil, err
	}
	if a := addr.Unmap(); a.IsValid() && !a.Is4() {
		return nil, backend.Unsupported("afxdp carries IPv4 only; %v is not IPv4", addr)
	}
	if err := supported(); err != nil {
		return nil, err
	}
	ifc, err := stack.FindInterface("AF_XDP", o.Interface, addr)
	if err != nil {
		return nil, err
	}
	ns, err := netnsID()
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("afxdp ns %d ifindex %d", ns, ifc.Index)
	st, existing, err := stacks.Acquire(key, func() (*stack.Stack, error) { return open(ifc, cfg, o) })
	if err != nil {
		return nil, err
	}
	if existing {
		if q := st.Info().Queue; q != o.Queue && !(q == -1 && o.Queue < 0) {
			st.Release()
			return nil, fmt.Errorf("queue %d: this process's afxdp stack on %s serves queue %d; open every socket of the interface on the same queue", o.Queue, ifc.Name, q)
		}
	}
	return st, nil
}

// netnsID identifies the calling thread's network namespace.
func netnsID() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &st); err != nil {
		return 0, fmt.Errorf("network namespace: %w", os.NewSyscallError("stat", err))
	}
	return st.Ino, nil
}

// open attaches the steering program to the interface and opens one AF_XDP
// socket per served queue. Every step registers its undo on the stack's
// config, which New (or Close) runs.
func open(ifc stack.Interface, cfg xskConfig, o backend.Options) (_ *stack.Stack, err error) {
	var u undo.Stack
	defer u.RunIfFailed(&err)
	var notes []string
	nq := max(ifc.NumRxQueues, 1)
	var queues []int
	switch {
	case o.Queue < 0:
		for q := range nq {
			queues = append(queues, q)
		}
	case o.Queue >= nq:
		return nil, fmt.Errorf("queue %d out of range: %s has %d receive queue(s)", o.Queue, ifc.Name, nq)
	default:
		queues = []int{o.Queue}
		if nq > 1 {
			notes = append(notes, fmt.Sprintf("%s has %d receive queues and only queue %d is served: steer the flow there (ethtool -N) or bind all with queue -1", ifc.Name, nq, o.Queue))
		}
	}
	cfg.ifindex = ifc.Index
	if err := fitMemlock(&cfg, len(queues), o.XDP.NumFrames != 0, &notes); err != nil {
		return nil, err
	}
	drv := driverOf(ifc.Name)
	d := &driver{busyPoll: o.XDP.BusyPoll && o.Wait != backend.WaitBlock}
	if d.steer, err = attach(ifc.Index, nq, o.XDP.Mode, drv); err != nil {
		return nil, err
	}
	u.Add(d.Close) // detaches, then closes the sockets opened so far
	cfg.generic = d.steer.mode == "skb"
	for _, q := range queues {
		cfg.queue = q
		x, err := openXSK(cfg)
		if err != nil {
			return nil, err
		}
		d.socks = append(d.socks, x)
		if err := d.steer.setSocket(q, x.fd); err != nil {
			return nil, err
		}
		if o.XDP.BusyPoll {
			notes = append(notes, applyBusyPoll(x.fd, o)...)
		}
	}
	d.tx = d.socks[0]
	if virtualLink[drv] {
		notes = append(notes, drv+": UDP checksums left to offload by the peer (pseudo-header only) are accepted")
	}
	queue := queues[0]
	if len(queues) > 1 {
		queue = -1
	}
	u.Take() // New owns the driver from here
	return stack.New(stack.Config{
		Backend: "afxdp", Driver: d, Iface: ifc,
		BufSize:          int(cfg.frameSize),
		PartialChecksums: virtualLink[drv],
		Batch:            o.Batch(),
		Info: backend.Info{
			Backend: "afxdp", Interface: ifc.Name, Queue: queue,
			XDPMode: d.steer.mode, BindMode: d.tx.bindMode, Notes: notes,
		},
	})
}

// virtualLink lists drivers whose links carry frames between kernels in
// memory, with no NIC to complete an offloaded checksum and no wire to
// corrupt a frame: a peer with TX checksum offload on (the default) sends
// UDP datagrams whose checksum field holds only the pseudo-header sum.
var virtualLink = map[string]bool{"veth": true}

func applyBusyPoll(fd int, o backend.Options) []string {
	var notes []string
	us := o.BusyPollUS
	if us == 0 {
		us = backend.DefaultBusyUS
	}
	budget := o.BusyPollBudget
	if budget == 0 {
		budget = backend.DefaultBudget
	}
	set := func(name string, opt, v int) {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
			notes = append(notes, priv.Wrap("setsockopt "+name, "CAP_NET_ADMIN", os.NewSyscallError("setsockopt", err)).Error())
		}
	}
	if us > 0 {
		set("SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1)
		set("SO_BUSY_POLL", unix.SO_BUSY_POLL, us)
	}
	if budget > 0 {
		set("SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, budget)
	}
	return notes
}

// config resolves o into socket settings without touching the network.
func config(o backend.Options) (xskConfig, error) {
	if err := o.Validate(); err != nil {
		return xskConfig{}, err
	}
	x := o.XDP
	cfg := xskConfig{
		numFrames:  uint32(x.NumFrames),
		frameSize:  uint32(x.FrameSize),
		ringSize:   uint32(x.RingSize),
		bind:       x.Bind,
		needWakeup: x.NeedWakeup != "off",
	}
	if cfg.frameSize == 0 {
		cfg.frameSize = DefaultFrameSize
	}
	if cfg.ringSize == 0 {
		cfg.ringSize = DefaultRingSize
	}
	if cfg.numFrames == 0 {
		cfg.numFrames = DefaultNumFrames
	}
	if cfg.bind == "" {
		cfg.bind = "auto"
	}
	return cfg, nil
}

// fitMemlock trims the UMEM to RLIMIT_MEMLOCK when the process lacks
// CAP_IPC_LOCK (the kernel charges UMEM pages against that limit). A frame
// count the user chose explicitly is never trimmed: it is an error instead.
func fitMemlock(cfg *xskConfig, sockets int, explicit bool, notes *[]string) error {
	if hasCap(unix.CAP_IPC_LOCK) {
		return nil
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		return os.NewSyscallError("getrlimit RLIMIT_MEMLOCK", err)
	}
	if rl.Cur == unix.RLIM_INFINITY {
		return nil
	}
	// Each socket (one per bound queue) registers a UMEM of its own.
	limit := rl.Cur / uint64(max(sockets, 1))
	need := uint64(cfg.numFrames) * uint64(cfg.frameSize)
	if need <= limit {
		return nil
	}
	if explicit {
		return fmt.Errorf("%d UMEM(s) of %d frames x %d bytes = %d bytes each exceed RLIMIT_MEMLOCK (%d bytes) and the process lacks CAP_IPC_LOCK: grant CAP_IPC_LOCK, raise the limit (ulimit -l), or use fewer frames",
			sockets, cfg.numFrames, cfg.frameSize, need, rl.Cur)
	}
	n := cfg.numFrames
	for n > 64 && uint64(n)*uint64(cfg.frameSize) > limit {
		n /= 2
	}
	if uint64(n)*uint64(cfg.frameSize) > limit {
		return fmt.Errorf("RLIMIT_MEMLOCK (%d bytes) is too small for the smallest UMEM (%d bytes) and the process lacks CAP_IPC_LOCK: grant CAP_IPC_LOCK or raise the limit (ulimit -l)",
			rl.Cur, uint64(n)*uint64(cfg.frameSize))
	}
	*notes = append(*notes, fmt.Sprintf("UMEM trimmed to %d frames per socket to fit %d socket(s) in RLIMIT_MEMLOCK of %d bytes (no CAP_IPC_LOCK)", n, max(sockets, 1), rl.Cur))
	cfg.numFrames = n
	cfg.ringSize = min(cfg.ringSize, n/2)
	return nil
}

// hasCap reports whether the calling thread has capability c in its
// effective set.
func hasCap(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0
}

// supported reports whether this kernel has AF_XDP at all, for a fast and
// clear skip before any setup.
func supported() error {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if errors.Is(err, unix.EAFNOSUPPORT) {
		return backend.UnsupportedErr("socket(AF_XDP): kernel built without CONFIG_XDP_SOCKETS", err)
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return backend.UnsupportedErr("socket(AF_XDP): needs CAP_NET_RAW (and CAP_NET_ADMIN, CAP_BPF to attach the XDP program)", err)
	}
	return fmt.Errorf("socket(AF_XDP): %w", err)
}

// driverOf names the interface's driver (ETHTOOL_GDRVINFO), or "" when
// the driver will not say.
func driverOf(ifname string) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, ifname)
	if err != nil {
		return ""
	}
	return unix.ByteSliceToString(info.Driver[:])
}
