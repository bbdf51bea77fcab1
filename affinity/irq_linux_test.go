//go:build linux

package affinity

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseInterrupts(t *testing.T) {
	const text = `           CPU0       CPU1       
 26:          0          9  IO-APIC   4-edge      ttyS0
 38:          0       3820 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 40:          5          2 PCI-MSIX-0000:00:04.0   0-edge      eth1-TxRx-0
NMI:          0          0   Non-maskable interrupts
ERR:          0
`
	rows, err := parseInterrupts(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[38].Name != "virtio2-input.0" || rows[38].Count != 3820 || rows[40].Count != 7 {
		t.Fatalf("rows %+v", rows)
	}
	if !nameMentions(rows[40].Name, "eth1") || nameMentions(rows[40].Name, "eth") || nameMentions("eth10-rx", "eth1") {
		t.Fatal("nameMentions")
	}
}

// TestInterfaceIRQs reads the IRQs of every interface on the host; it
// changes nothing.
func TestInterfaceIRQs(t *testing.T) {
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Skipf("no /sys/class/net: %v", err)
	}
	for _, e := range ents {
		irqs, err := InterfaceIRQs(e.Name())
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		rx, tx, _ := InterfaceQueues(e.Name())
		t.Logf("%s (driver %q, %d rx / %d tx queues): %d irqs %+v", e.Name(), InterfaceDriver(e.Name()), rx, tx, len(irqs), irqs)
		for _, q := range irqs {
			if q.Affinity.IsEmpty() {
				t.Errorf("%s irq %d: empty affinity", e.Name(), q.Num)
			}
		}
	}
	if irqs, err := InterfaceIRQs("lo"); err == nil && len(irqs) != 0 {
		t.Errorf("loopback has irqs %v", irqs)
	}
	if _, err := InterfaceIRQs("../x"); err == nil {
		t.Error("bad name accepted")
	}
	if _, err := InterfaceIRQs("nosuchif0"); err == nil {
		t.Error("missing interface accepted")
	}
}

// TestDeviceIRQs reads a fake sysfs tree: only a virtio device's
// interrupts are looked for in its parent.
func TestDeviceIRQs(t *testing.T) {
	root := t.TempDir()
	mk := func(dir string, msi []string, irq string) string {
		t.Helper()
		p := filepath.Join(root, dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if msi != nil {
			os.Mkdir(filepath.Join(p, "msi_irqs"), 0o755)
		}
		for _, n := range msi {
			os.WriteFile(filepath.Join(p, "msi_irqs", n), nil, 0o644)
		}
		if irq != "" {
			os.WriteFile(filepath.Join(p, "irq"), []byte(irq+"\n"), 0o644)
		}
		return p
	}
	// A virtio NIC: the PCI function above it holds the vectors, or the
	// INTx line.
	mk("pci/0000:00:03.0", []string{"38", "37"}, "11")
	virtio := mk("pci/0000:00:03.0/virtio2", nil, "")
	mk("pci/0000:00:05.0", nil, "10")
	virtioINTx := mk("pci/0000:00:05.0/virtio4", nil, "")
	// A NIC behind a bridge: the bridge's vector and line are not its own.
	mk("pci/0000:00:1c.0", []string{"24"}, "16")
	intx := mk("pci/0000:00:1c.0/0000:02:00.0", nil, "17")
	none := mk("pci/0000:00:1c.0/0000:03:00.0", nil, "0")
	msi := mk("pci/0000:00:1c.0/0000:04:00.0", []string{"50", "51"}, "18")
	for dev, want := range map[string][]int{
		virtio: {37, 38}, virtioINTx: {10}, intx: {17}, none: nil, msi: {50, 51},
	} {
		if got := deviceIRQs(dev); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", dev, got, want)
		}
	}
}
