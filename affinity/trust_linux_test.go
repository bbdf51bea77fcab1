//go:build linux

package affinity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrustedPath: as root, a file is trusted only when root owns it and
// no one else may write it or any directory above it (a sticky directory
// aside); a symbolic link is judged by where it leads; a file of a kernel
// pseudo-filesystem is refused.
func TestTrustedPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: TrustedPath checks nothing for other users, and the test chowns files to nobody")
	}
	root := t.TempDir()
	mk := func(p string, mode os.FileMode, uid int) string {
		t.Helper()
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x\n"), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		os.Chown(p, uid, uid)
		return p
	}
	sticky := filepath.Join(root, "sticky")
	os.Mkdir(sticky, 0o755)
	os.Chmod(sticky, 0o777|os.ModeSticky)
	open := filepath.Join(root, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o777)
	theirs := filepath.Join(root, "theirs")
	os.Mkdir(theirs, 0o755)
	os.Chown(theirs, 65534, 65534)
	good := mk(filepath.Join(root, "good"), 0o644, 0)
	link := filepath.Join(root, "link")
	os.Symlink(mk(filepath.Join(theirs, "f"), 0o644, 0), link)
	for _, p := range []string{good, mk(filepath.Join(sticky, "f"), 0o644, 0)} {
		if got, err := TrustedPath(p); err != nil || got != p {
			t.Errorf("TrustedPath(%s) = %s, %v", p, got, err)
		}
	}
	for p, why := range map[string]string{
		mk(filepath.Join(root, "nobody"), 0o644, 65534): "owned by uid 65534",
		mk(filepath.Join(root, "world"), 0o646, 0):      "writable by group or others",
		mk(filepath.Join(open, "f"), 0o644, 0):          open + " is writable",
		mk(filepath.Join(sticky, "g"), 0o644, 65534):    "owned by uid 65534",
		link:                theirs + " is owned by uid 65534",
		"/proc/self/status": "pseudo-filesystem",
	} {
		if _, err := TrustedPath(p); err == nil || !strings.Contains(err.Error(), why) ||
			(!strings.Contains(why, "pseudo") && !errors.Is(err, ErrNotTrusted)) {
			t.Errorf("TrustedPath(%s): %v, want %q", p, err, why)
		}
	}
}
