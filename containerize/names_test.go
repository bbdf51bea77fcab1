package containerize

import (
	"strconv"
	"strings"
	"testing"
)

func TestNameIDDistinctAcrossProcesses(t *testing.T) {
	// The old scheme printed pid%10000 and seq with no separator:
	// pid 1234 seq 5 and pid 123 seq 45 both gave "12345".
	if a, b := nameID(1234, 5), nameID(123, 45); a == b {
		t.Errorf("nameID(1234, 5) = nameID(123, 45) = %q", a)
	}
	if a, b := nameID(11234, 5), nameID(1234, 5); a == b {
		t.Errorf("pids 11234 and 1234 share name %q", a)
	}
	for _, p := range []string{VethPrefixA, VethPrefixB, NetnsPrefix} {
		if n := p + nameID(4194304, 9999); len(n) > maxIfaceName {
			t.Errorf("%q: %d bytes, over the interface name limit %d", n, len(n), maxIfaceName)
		}
	}
}

func TestNamePID(t *testing.T) {
	for _, tc := range []struct {
		name, prefix string
		pid          int
		ok           bool
	}{
		{"latprobe-1234-5", ContainerPrefix, 1234, true},
		{"lpa4194304-9999", VethPrefixA, 4194304, true},
		{"lpc77-0", NetnsPrefix, 77, true},
		{"latprobe-12345", ContainerPrefix, 0, false}, // old scheme
		{"latprobe-1234-5x", ContainerPrefix, 0, false},
		{"latprobe-x-5", ContainerPrefix, 0, false},
		{"latprobe-0-5", ContainerPrefix, 0, false},
		{"mine-1234-5", ContainerPrefix, 0, false},
		{"lpa1234-", VethPrefixA, 0, false},
	} {
		pid, ok := namePID(tc.name, tc.prefix)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("namePID(%q, %q) = %d, %v; want %d, %v", tc.name, tc.prefix, pid, ok, tc.pid, tc.ok)
		}
	}
}

func FuzzNamePID(f *testing.F) {
	f.Add("latprobe-1234-5")
	f.Fuzz(func(t *testing.T, name string) {
		pid, ok := namePID(name, ContainerPrefix)
		if ok && (pid <= 0 || !strings.HasPrefix(name, ContainerPrefix+strconv.Itoa(pid)+"-")) {
			t.Fatalf("namePID(%q) = %d", name, pid)
		}
	})
}
