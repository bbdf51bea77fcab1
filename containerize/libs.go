package containerize

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// LdCachePath is the dynamic loader's cache of library locations. A bundle
// for a dynamically linked binary carries a copy, so that the loader inside
// the container finds the libraries where they were found on the host.
const LdCachePath = "/etc/ld.so.cache"

// Interpreter returns the program interpreter (the dynamic loader, the ELF
// PT_INTERP segment) of the executable at path, or "" when it is linked
// statically or is not ELF at all (a stub or a script, copied alone).
func Interpreter(path string) (string, error) {
	f, err := elf.Open(path)
	var fe *elf.FormatError
	if errors.As(err, &fe) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("containerize: binary %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", fmt.Errorf("containerize: binary %s: program interpreter: %w", path, err)
		}
		return string(bytes.TrimRight(b, "\x00")), nil
	}
	return "", nil
}

// SharedObjects returns the host paths of what the dynamic loader maps to
// run the executable at path: its interpreter first, then every shared
// library it needs, directly or not. A static executable gives nil. It asks
// the interpreter itself (`LOADER --list PATH`, which is what `ldd PATH`
// runs) and fails, naming them, when a library is not found.
func SharedObjects(path string) ([]string, error) {
	interp, err := Interpreter(path)
	if err != nil || interp == "" {
		return nil, err
	}
	out, err := exec.Command(interp, "--list", path).Output()
	if err != nil {
		msg := ""
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			msg = ": " + strings.TrimSpace(string(ee.Stderr))
		}
		return nil, fmt.Errorf("containerize: %s --list %s (as ldd): %w%s", interp, path, err, msg)
	}
	return parseLdList(interp, out)
}

// parseLdList reads the loader's --list output: "NAME => PATH (ADDR)" for a
// library found, "NAME => not found" for one missing, "PATH (ADDR)" for the
// loader and "NAME (ADDR)" for the vDSO, which the kernel maps and no file
// holds.
func parseLdList(interp string, out []byte) ([]string, error) {
	objs := []string{interp}
	seen := map[string]bool{interp: true}
	var missing []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var p string
		if name, rest, ok := strings.Cut(line, " => "); ok {
			if strings.HasPrefix(rest, "not found") {
				missing = append(missing, name)
				continue
			}
			p, _, _ = strings.Cut(rest, " ")
		} else {
			p, _, _ = strings.Cut(line, " ")
		}
		if !filepath.IsAbs(p) || seen[p] {
			continue
		}
		seen[p] = true
		objs = append(objs, p)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("containerize: the loader finds no %s on this host", strings.Join(missing, ", "))
	}
	return objs, nil
}

// copySharedObjects copies each of objs into rootfs at the same path, with
// the host's loader cache when there is one: the root is mounted read-only,
// so the container can read them and change none.
func copySharedObjects(rootfs string, objs []string) error {
	files := objs
	if _, err := os.Stat(LdCachePath); err == nil {
		files = append(files[:len(files):len(files)], LdCachePath)
	}
	for _, p := range files {
		dst := filepath.Join(rootfs, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("containerize: rootfs for %s: %w", p, err)
		}
		if err := copyFile(dst, p, 0o755); err != nil {
			return err
		}
	}
	return nil
}
