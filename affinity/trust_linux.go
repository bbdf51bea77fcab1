//go:build linux

package affinity

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// pseudoFS are the kernel's pseudo-filesystems, by statfs(2) type.
var pseudoFS = map[int64]bool{
	unix.PROC_SUPER_MAGIC: true, unix.SYSFS_MAGIC: true, unix.DEBUGFS_MAGIC: true, unix.TRACEFS_MAGIC: true,
	unix.SECURITYFS_MAGIC: true, unix.CGROUP_SUPER_MAGIC: true, unix.CGROUP2_SUPER_MAGIC: true, unix.BPF_FS_MAGIC: true,
	unix.DEVPTS_SUPER_MAGIC: true, unix.EFIVARFS_MAGIC: true, unix.PSTOREFS_MAGIC: true,
}

// TrustedPath checks, when the caller is root, that path names a file only
// root could have written, and returns it with symbolic links resolved:
// the caller opens that, and checks what it opened with CheckTrusted. The
// file must be owned by root and writable by no one else, and so must
// every directory above it up to /, since whoever may write a directory
// may replace what is in it; a sticky directory (/tmp) may be writable by
// all, since there only a file's owner may replace it. For any other
// caller it checks nothing and returns path: a file such a caller may
// write lets it do no more than it could do itself.
func TrustedPath(path string) (string, error) {
	if os.Geteuid() != 0 {
		return path, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return "", err
	}
	if err := checkTrusted(resolved, fi); err != nil {
		return "", err
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(resolved, &sfs); err != nil {
		return "", os.NewSyscallError("statfs", err)
	}
	if pseudoFS[int64(sfs.Type)] {
		// Reading a file of procfs or sysfs can block (/proc/kmsg) or
		// take something away from others: nothing to load settings from.
		return "", fmt.Errorf("%s is on a kernel pseudo-filesystem (procfs, sysfs and kin), not a file to read settings from", resolved)
	}
	for dir := filepath.Dir(resolved); ; dir = filepath.Dir(dir) {
		di, err := os.Stat(dir)
		if err != nil {
			return "", err
		}
		if err := checkTrusted(dir, di); err != nil {
			return "", fmt.Errorf("in %s: %w", resolved, err)
		}
		if dir == "/" {
			return resolved, nil
		}
	}
}

// CheckTrusted checks, when the caller is root, that fi (of path, an open
// file's Stat) is owned by root and not writable by group or others (a
// sticky directory may be). Its error wraps ErrNotTrusted.
func CheckTrusted(path string, fi fs.FileInfo) error { return checkTrusted(path, fi) }
