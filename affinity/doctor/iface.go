package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lowlat/lowlat/affinity"
)

// Drivers with native (driver-mode) XDP, and those of them with AF_XDP
// zero-copy, in mainline Linux 6.x as far as this list knows (it is a
// list, not a probe: a driver missing here is reported as generic only).
// Generic (SKB) XDP works on every interface, slower.
var (
	nativeXDP = map[string]bool{
		"veth": true, "virtio_net": true, "tun": true, "ixgbe": true, "ixgbevf": true, "i40e": true,
		"ice": true, "igb": true, "igc": true, "mlx4_en": true, "mlx5_core": true, "bnxt_en": true,
		"ena": true, "sfc": true, "nfp": true, "qede": true, "thunder-nicvf": true, "hv_netvsc": true,
		"stmmac": true, "mvneta": true, "mvpp2": true, "fec": true, "bond": true, "netdevsim": true,
		"dpaa2-eth": true, "enetc": true, "cpsw": true, "tsnep": true, "gve": true, "idpf": true,
	}
	zeroCopyXDP = map[string]bool{
		"i40e": true, "ice": true, "ixgbe": true, "igb": true, "igc": true, "mlx5_core": true,
		"stmmac": true, "gve": true,
	}
)

func ifaceChecks(opts Options, h host) []Check {
	iface := opts.Iface
	if _, err := os.Stat(filepath.Join("/sys/class/net", iface)); err != nil {
		return []Check{{Name: "iface", Status: Fail, Detail: fmt.Sprintf("%s: no such network interface", iface),
			Fix: "give an interface from `ip -br link`"}}
	}
	return []Check{irqPlacement(opts, h), queueCount(iface), xdpSupport(iface)}
}

func irqPlacement(opts Options, h host) Check {
	c := Check{Name: "iface irqs"}
	irqs, err := affinity.InterfaceIRQs(opts.Iface)
	if err != nil {
		return unreadable(c, err)
	}
	if len(irqs) == 0 {
		c.Status = OK
		c.Detail = opts.Iface + " has no IRQs of its own (a virtual device): its packets are processed in softirq on the sending or polling CPU"
		return c
	}
	var parts []string
	for _, q := range irqs {
		parts = append(parts, fmt.Sprintf("%d(%s)->%s", q.Num, q.Name, q.Affinity))
	}
	list := strings.Join(parts, " ")
	hot := opts.CPUs
	source := "--cpus"
	if hot.IsEmpty() {
		hot, _ = h.cpuList(sysCPU + "/isolated")
		source = "isolated CPUs"
	}
	if hot.IsEmpty() {
		c.Status = Warn
		c.Detail = fmt.Sprintf("%d IRQs %s; with no isolated CPUs (and no program CPUs given) nothing keeps them off the program's CPU", len(irqs), list)
		c.Fix = fmt.Sprintf("onload-run --iface %s --cpus N moves them off CPU N while the program runs (same as echo LIST > /proc/irq/IRQ/smp_affinity_list)", opts.Iface)
		return c
	}
	var bad []string
	for _, q := range irqs {
		if !q.Affinity.Intersect(hot).IsEmpty() {
			bad = append(bad, fmt.Sprint(q.Num))
		}
	}
	if len(bad) > 0 {
		c.Status = Warn
		c.Detail = fmt.Sprintf("IRQs %s may fire on %s %s: %s", strings.Join(bad, ","), source, hot, list)
		c.Fix = fmt.Sprintf("echo %s > /proc/irq/IRQ/smp_affinity_list for each (onload-run --iface %s --cpus %s does it while the program runs)",
			mustOther(hot), opts.Iface, hot)
		return c
	}
	c.Status = OK
	c.Detail = fmt.Sprintf("%d IRQs, none on %s %s: %s", len(irqs), source, hot, list)
	return c
}

func mustOther(hot affinity.CPUSet) string {
	online, err := affinity.OnlineCPUs()
	if err != nil {
		return "LIST"
	}
	if rest := online.Difference(hot); !rest.IsEmpty() {
		return rest.String()
	}
	return "LIST"
}

func queueCount(iface string) Check {
	c := Check{Name: "iface queues"}
	rx, tx, err := affinity.InterfaceQueues(iface)
	if err != nil {
		return unreadable(c, err)
	}
	c.Status = OK
	c.Detail = fmt.Sprintf("%d rx, %d tx", rx, tx)
	if rx > 1 {
		c.Detail += ": steer the program's flow to one queue (ethtool -N flow rules) and bind AF_XDP to that queue"
	}
	return c
}

func xdpSupport(iface string) Check {
	c := Check{Name: "iface xdp"}
	drv := affinity.InterfaceDriver(iface)
	switch {
	case drv == "":
		c.Status = Warn
		c.Detail = "driver unknown: generic (SKB) XDP only, as far as can be told"
		c.Fix = "ethtool -i " + iface
	case nativeXDP[drv] && zeroCopyXDP[drv]:
		c.Status = OK
		c.Detail = "driver " + drv + ": native XDP and AF_XDP zero-copy"
	case nativeXDP[drv]:
		c.Status = OK
		c.Detail = "driver " + drv + ": native XDP, AF_XDP in copy mode"
	default:
		c.Status = Warn
		c.Detail = "driver " + drv + ": generic (SKB) XDP only; AF_XDP works in copy mode behind the kernel's skb path, with little gain"
		c.Fix = "use a NIC whose driver has native XDP (mlx5_core, ice, i40e, ixgbe, ...)"
	}
	return c
}
