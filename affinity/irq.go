package affinity

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// virtioDevRE matches a virtio device's sysfs directory name ("virtio2"):
// its interrupts belong to the PCI function above it.
var virtioDevRE = regexp.MustCompile(`^virtio[0-9]+$`)

// deviceIRQs returns the interrupts of the device whose sysfs directory is
// dev (symbolic links resolved): its MSI vectors (msi_irqs), else its
// legacy INTx line (the irq file). Only for a virtio device, which has
// neither of its own, is the parent directory (the virtio PCI function)
// read instead; any other device's parent is a bus or bridge whose
// interrupts are not the device's.
func deviceIRQs(dev string) []int {
	dirs := []string{dev}
	if virtioDevRE.MatchString(filepath.Base(dev)) {
		dirs = append(dirs, filepath.Dir(dev))
	}
	for _, dir := range dirs {
		ents, err := os.ReadDir(filepath.Join(dir, "msi_irqs"))
		if err != nil {
			continue
		}
		var nums []int
		for _, e := range ents {
			if n, err := strconv.Atoi(e.Name()); err == nil {
				nums = append(nums, n)
			}
		}
		if len(nums) > 0 {
			sort.Ints(nums)
			return nums
		}
	}
	// Legacy INTx: one line in the irq file.
	for _, dir := range dirs {
		if v, err := readValue(KindFile, filepath.Join(dir, "irq")); err == nil {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return []int{n}
			}
		}
	}
	return nil
}

// IRQ is one interrupt line of a device.
type IRQ struct {
	Num      int    `json:"irq"`
	Name     string `json:"name"`     // the action name in /proc/interrupts, e.g. "virtio2-input.0"
	Affinity CPUSet `json:"affinity"` // smp_affinity_list
	Count    uint64 `json:"count"`    // interrupts taken, all CPUs together
}

// InterfaceIRQs lists the interrupts of network interface iface: the MSI
// vectors of its device (/sys/class/net/IF/device/msi_irqs, or the same
// directory of the parent PCI function for a virtio device), else the rows
// of /proc/interrupts that carry the interface's name ("eth0-TxRx-0"). A
// virtual interface (veth, loopback, bridge) has none: the list is empty
// and err nil.
func InterfaceIRQs(iface string) ([]IRQ, error) {
	if iface == "" || strings.ContainsAny(iface, "/\x00") || iface == "." || iface == ".." {
		return nil, fmt.Errorf("interface %q: not an interface name", iface)
	}
	base := filepath.Join("/sys/class/net", iface)
	if _, err := os.Stat(base); err != nil {
		return nil, fmt.Errorf("interface %s: %w", iface, err)
	}
	table, err := readInterrupts()
	if err != nil {
		return nil, err
	}
	nums := map[int]bool{}
	if dev, err := filepath.EvalSymlinks(filepath.Join(base, "device")); err == nil {
		for _, n := range deviceIRQs(dev) {
			nums[n] = true
		}
	}
	if len(nums) == 0 {
		for n, row := range table {
			if nameMentions(row.Name, iface) {
				nums[n] = true
			}
		}
	}
	var out []IRQ
	for n := range nums {
		irq := IRQ{Num: n}
		if row, ok := table[n]; ok {
			irq.Name, irq.Count = row.Name, row.Count
		}
		if a, err := IRQAffinity(n); err == nil {
			irq.Affinity = a
		}
		out = append(out, irq)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Num < out[b].Num })
	return out, nil
}

// nameMentions reports whether an interrupt's action name carries iface as
// a whole word ("eth0-TxRx-3" mentions eth0; "eth01" does not).
func nameMentions(name, iface string) bool {
	for _, w := range strings.FieldsFunc(name, func(r rune) bool { return r == ' ' || r == ',' }) {
		if w == iface || strings.HasPrefix(w, iface+"-") || strings.HasPrefix(w, iface+"@") {
			return true
		}
	}
	return false
}

type interruptRow struct {
	Name  string
	Count uint64
}

// readInterrupts parses the numbered rows of /proc/interrupts.
func readInterrupts() (map[int]interruptRow, error) {
	f, err := os.Open("/proc/interrupts")
	if err != nil {
		return nil, fmt.Errorf("read /proc/interrupts: %w", err)
	}
	defer f.Close()
	return parseInterrupts(f)
}

func parseInterrupts(f interface{ Read([]byte) (int, error) }) (map[int]interruptRow, error) {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	ncpu := -1
	out := map[int]interruptRow{}
	for sc.Scan() {
		line := sc.Text()
		if ncpu < 0 {
			ncpu = len(strings.Fields(line))
			continue
		}
		label, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(label))
		if err != nil {
			continue // NMI, LOC and the other per-CPU counters
		}
		fields := strings.Fields(rest)
		var row interruptRow
		i := 0
		for ; i < len(fields) && i < ncpu; i++ {
			c, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				break
			}
			row.Count += c
		}
		// After the counts: chip name, hardware irq and trigger, then the
		// action names. The last field is the most specific name.
		if i < len(fields) {
			rest := fields[i:]
			if len(rest) >= 3 {
				row.Name = strings.Join(rest[2:], " ")
			} else {
				row.Name = rest[len(rest)-1]
			}
		}
		out[n] = row
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/interrupts: %w", err)
	}
	return out, nil
}

// IRQBalancePID returns the pid of a running irqbalance daemon, or 0. A
// running irqbalance rewrites smp_affinity_list every few seconds and so
// undoes manual IRQ placement, unless told to leave those IRQs alone
// (IRQBALANCE_BANNED_CPULIST, --banirq) or stopped.
func IRQBalancePID() int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(comm)) == "irqbalance" {
			return pid
		}
	}
	return 0
}

// InterfaceQueues counts the receive and transmit queues of iface
// (/sys/class/net/IF/queues/rx-N and tx-N).
func InterfaceQueues(iface string) (rx, tx int, err error) {
	ents, err := os.ReadDir(filepath.Join("/sys/class/net", iface, "queues"))
	if err != nil {
		return 0, 0, fmt.Errorf("interface %s queues: %w", iface, err)
	}
	for _, e := range ents {
		switch {
		case strings.HasPrefix(e.Name(), "rx-"):
			rx++
		case strings.HasPrefix(e.Name(), "tx-"):
			tx++
		}
	}
	return rx, tx, nil
}
