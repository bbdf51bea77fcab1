//go:build linux

package afxdp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Backend is the "afxdp" backend.
type Backend struct{}

var _ backend.Backend = Backend{}

func (Backend) Name() string { return "afxdp" }

// Defaults for XDPOptions' zero values.
const (
	DefaultFrameSize = 4096
	DefaultNumFrames = 4096
	DefaultRingSize  = 2048
)

// ListenUDP opens an AF_XDP endpoint for laddr on o.Interface (or the
// interface that owns laddr's address).
func (Backend) ListenUDP(laddr netip.AddrPort, o backend.Options) (backend.PacketConn, error) {
	c, err := listen(laddr, o)
	if err != nil {
		return nil, fmt.Errorf("afxdp: listen udp %v: %w", laddr, err)
	}
	return c, nil
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

// interfaceFor finds the interface that owns a local address.
func interfaceFor(a netip.Addr) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == a {
					return &ifs[i], nil
				}
			}
		}
	}
	return nil, backend.Unsupported("no interface owns %v: name one with --iface", a)
}

// ifaceCheck returns the interface, refusing ones AF_XDP cannot serve.
func ifaceCheck(name string, laddr netip.AddrPort) (*net.Interface, error) {
	var ifi *net.Interface
	var err error
	if name == "" {
		if !laddr.Addr().IsValid() || laddr.Addr().IsUnspecified() {
			return nil, backend.Unsupported("no interface named and the address %v is unspecified: name one with --iface", laddr.Addr())
		}
		ifi, err = interfaceFor(laddr.Addr().Unmap())
	} else {
		ifi, err = net.InterfaceByName(name)
		if err != nil {
			err = fmt.Errorf("interface %q: %w", name, err)
		}
	}
	if err != nil {
		return nil, err
	}
	if ifi.Flags&net.FlagLoopback != 0 {
		return nil, backend.Unsupported("interface %s is loopback, which carries no Ethernet frames for AF_XDP", ifi.Name)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("interface %s is down: bring it up with `ip link set dev %s up`", ifi.Name, ifi.Name)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, backend.Unsupported("interface %s is not Ethernet", ifi.Name)
	}
	return ifi, nil
}

// ipv4Of returns the interface's first IPv4 address.
func ipv4Of(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, ad := range addrs {
		if ipn, ok := ad.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", ifi.Name)
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

// driverOf names the interface's driver (ETHTOOL_GDRVINFO through fd, a
// socket in the interface's namespace), or "" when the driver will not say.
func driverOf(fd int, ifname string) string {
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, ifname)
	if err != nil {
		return ""
	}
	return unix.ByteSliceToString(info.Driver[:])
}
