//go:build linux

package containerize

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
)

// Netns is a named network namespace this package created
// (same as `ip netns add NAME`), with loopback up.
type Netns struct {
	Name string
	Path string // /run/netns/NAME, for Options.NetnsPath
}

// Link is one end of a veth pair: its interface name, the namespace it is
// in (nil for the host's) and its IPv4 address.
type Link struct {
	Netns *Netns
	Name  string
	Addr  netip.Addr
}

var nameSeq atomic.Uint32

// uniqueID returns a short name part unique to this process and call:
// PID-SEQ (see nameID).
func uniqueID() string {
	return nameID(os.Getpid(), nameSeq.Add(1))
}

// NewNetns creates a network namespace named prefix plus a unique suffix
// and brings its loopback up. Its removal (ip netns del NAME) is
// registered with u at once.
func NewNetns(u *Undo, prefix string) (*Netns, error) {
	name := prefix + uniqueID()
	if err := ip("netns", "add", name); err != nil {
		return nil, err
	}
	u.Push("ip netns del "+name, func() error { return ip("netns", "del", name) })
	ns := &Netns{Name: name, Path: "/run/netns/" + name}
	if err := ip("-n", name, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return ns, nil
}

// NewVeth joins a and b (nil means the host's namespace; at most one may be
// nil) with a veth pair addressed from the /30 prefix: a gets the first
// host address, b the second. Both ends come up with TX checksum offload
// off (ethtool -K IF tx off), so AF_XDP readers see complete UDP
// checksums. The link's removal (ip link del) is registered with u at once;
// deleting either end deletes both.
func NewVeth(u *Undo, a, b *Netns, prefix netip.Prefix) (Link, Link, error) {
	if a == nil && b == nil {
		return Link{}, Link{}, errors.New("containerize: veth: at least one end must be in a namespace of its own")
	}
	if prefix.Bits() != 30 || !prefix.Addr().Is4() {
		return Link{}, Link{}, fmt.Errorf("containerize: veth prefix %v: want an IPv4 /30", prefix)
	}
	id := uniqueID()
	p := prefix.Masked().Addr()
	la := Link{Netns: a, Name: VethPrefixA + id, Addr: p.Next()}
	lb := Link{Netns: b, Name: VethPrefixB + id, Addr: p.Next().Next()}
	args := []string{"link", "add", la.Name}
	if a != nil {
		args = append(args, "netns", a.Name)
	}
	args = append(args, "type", "veth", "peer", "name", lb.Name)
	if b != nil {
		args = append(args, "netns", b.Name)
	}
	if err := ip(args...); err != nil {
		return Link{}, Link{}, err
	}
	owner := la
	if a != nil {
		owner = lb
	}
	if owner.Netns == nil {
		name := owner.Name
		u.Push("ip link del "+name, func() error { return ip("link", "del", name) })
	} else {
		ns, name := owner.Netns.Name, owner.Name
		u.Push("ip -n "+ns+" link del "+name, func() error {
			if _, err := os.Stat("/run/netns/" + ns); err != nil {
				return nil // the namespace, and the link with it, is gone
			}
			return ip("-n", ns, "link", "del", name)
		})
	}
	for _, l := range []Link{la, lb} {
		if err := ipIn(l.Netns, "addr", "add", l.Addr.String()+"/30", "dev", l.Name); err != nil {
			return Link{}, Link{}, err
		}
		if err := ipIn(l.Netns, "link", "set", l.Name, "up"); err != nil {
			return Link{}, Link{}, err
		}
		if err := inNetns(l.Netns, "ethtool", "-K", l.Name, "tx", "off"); err != nil {
			return Link{}, Link{}, err
		}
	}
	return la, lb, nil
}

// FreeSubnet returns a 10.199.X.0/30, X from 100 to 249, that no address
// or route on the host covers, so that an address put on a host-side veth
// end captures no traffic meant for anything else.
func FreeSubnet() (netip.Prefix, error) {
	var taken []netip.Prefix
	for _, args := range [][]string{
		{"-4", "-o", "addr", "show"},
		{"-4", "route", "show", "table", "all"},
	} {
		out, err := ipOut(args...)
		if err != nil {
			return netip.Prefix{}, err
		}
		for _, f := range strings.Fields(out) {
			if p, err := netip.ParsePrefix(f); err == nil {
				taken = append(taken, p.Masked())
			} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
				taken = append(taken, netip.PrefixFrom(a, 32))
			}
		}
	}
	start := os.Getpid() % 150
	for i := range 150 {
		c := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 199, byte(100 + (start+i)%150), 0}), 30)
		free := true
		for _, t := range taken {
			if t.Overlaps(c) {
				free = false
				break
			}
		}
		if free {
			return c, nil
		}
	}
	return netip.Prefix{}, errors.New("containerize: no free 10.199.100-249.0/30 subnet on this host")
}

func ipIn(ns *Netns, args ...string) error {
	if ns != nil {
		args = append([]string{"-n", ns.Name}, args...)
	}
	return ip(args...)
}

func inNetns(ns *Netns, name string, args ...string) error {
	if ns != nil {
		args = append([]string{"netns", "exec", ns.Name, name}, args...)
		name = "ip"
	}
	_, err := command(name, args...)
	return err
}

func ip(args ...string) error {
	_, err := command("ip", args...)
	return err
}

func ipOut(args ...string) (string, error) { return command("ip", args...) }

// command runs name with args and returns its standard output; a failure
// carries the command line and its standard error.
func command(name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("containerize: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
