//go:build linux

package affinity

import (
	"os"
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
