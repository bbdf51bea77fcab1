package containerize

import (
	"strconv"
	"strings"
)

// Names this package gives what it creates. Each ends in PID-SEQ: the
// creating process's full pid, a dash and a per-process sequence number
// below 10000, so that two processes never make the same name and a sweep
// can tell whether a name's owner is still alive.
const (
	// ContainerPrefix starts every container ID (latprobe-PID-SEQ).
	ContainerPrefix = "latprobe-"
	// NetnsPrefix starts the network namespaces the suite creates.
	NetnsPrefix = "lpc"
	// VethPrefixA and VethPrefixB start the two ends of a veth pair.
	VethPrefixA = "lpa"
	VethPrefixB = "lpb"
	// BundlePrefix starts a bundle directory (latprobe-bundle-PID-RANDOM).
	BundlePrefix = "latprobe-bundle-"
)

// maxIfaceName is the longest interface name Linux accepts (IFNAMSIZ-1).
const maxIfaceName = 15

// nameID is the PID-SEQ name part. With pid_max's ceiling (4194304, seven
// digits) and seq below 10000, "lpa"+nameID fits in an interface name.
func nameID(pid int, seq uint32) string {
	return strconv.Itoa(pid) + "-" + strconv.FormatUint(uint64(seq%10000), 10)
}

// namePID returns the pid encoded in name, which must be prefix followed by
// PID-SEQ (both decimal), and whether name has that form.
func namePID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	p, s, ok := strings.Cut(rest, "-")
	if !ok || !decimal(p) || !decimal(s) {
		return 0, false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func decimal(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
