//go:build linux

package afxdp

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// holderOf names the process that holds the XDP program attached to an
// interface, as ", by process PID (COMM)", or "" when it cannot be told:
// the program's id comes from the link's netlink attributes, and the
// process is the one with a descriptor whose fdinfo names that program (a
// bpf_link, or the program itself). It runs only on the error path.
func holderOf(ifindex int) string {
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil || link.Attrs().Xdp == nil || link.Attrs().Xdp.ProgId == 0 {
		return ""
	}
	want := []byte(fmt.Sprintf("prog_id:\t%d\n", link.Attrs().Xdp.ProgId))
	self := os.Getpid()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == self {
			continue
		}
		infos, _ := filepath.Glob(p + "/fdinfo/*")
		for _, f := range infos {
			b, err := os.ReadFile(f)
			if err != nil || !bytes.Contains(b, want) {
				continue
			}
			comm, _ := os.ReadFile(p + "/comm")
			return fmt.Sprintf(", by process %d (%s)", pid, strings.TrimSpace(string(comm)))
		}
	}
	return ""
}
