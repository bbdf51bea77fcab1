//go:build linux

package containerize

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// HostDevNum returns the numbers of the device file at path (stat(2)'s
// st_rdev), failing unless it is a character device.
func HostDevNum(path string) (DevNum, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return DevNum{}, fmt.Errorf("containerize: %s: %w", path, os.NewSyscallError("stat", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return DevNum{}, fmt.Errorf("containerize: %s: not a character device", path)
	}
	return DevNum{Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev))}, nil
}
