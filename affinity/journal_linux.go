//go:build linux

package affinity

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// oNoFollow makes an open fail on a symbolic link (O_NOFOLLOW).
const oNoFollow = syscall.O_NOFOLLOW

// checkTrusted refuses, when the caller is root, a journal file or
// directory that someone other than root owns or could have written: root
// would otherwise restore whatever another user put in it.
func checkTrusted(path string, fi fs.FileInfo) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s is owned by uid %d, not root: %w", path, st.Uid, ErrNotTrusted)
	}
	if fi.Mode().Perm()&0o022 != 0 && !(fi.IsDir() && fi.Mode()&fs.ModeSticky != 0) {
		return fmt.Errorf("%s is writable by group or others (mode %v): %w", path, fi.Mode().Perm(), ErrNotTrusted)
	}
	return nil
}
