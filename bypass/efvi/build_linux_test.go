//go:build linux

package efvi

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildWithEFVI builds the package with -tags efvi when Onload's
// headers and libciul are on this host, in the standard paths or in the
// -I and -L directories of CGO_CFLAGS and CGO_LDFLAGS.
func TestBuildWithEFVI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package: skipped with -short")
	}
	incs := append(flagDirs(os.Getenv("CGO_CFLAGS"), "-I"), "/usr/include", "/usr/local/include")
	libs := append(flagDirs(os.Getenv("CGO_LDFLAGS"), "-L"),
		"/usr/lib64", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib", "/usr/local/lib64")
	hdr := find(incs, "etherfabric/vi.h")
	lib := find(libs, "libciul1.a", "libciul1.so")
	if hdr == "" || lib == "" {
		t.Skipf("Onload's ef_vi headers (etherfabric/vi.h in %v) or libciul1 (in %v) are not on this host; set CGO_CFLAGS=-I... and CGO_LDFLAGS=-L... to point at them", incs, libs)
	}
	gobin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-tags", "efvi", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags efvi (headers %s, library %s): %v\n%s", hdr, lib, err, out)
	}
	// A package build does not link: linking the test binary proves that
	// libciul provides every symbol the binding uses.
	cmd = exec.Command(gobin, "test", "-c", "-tags", "efvi", "-o", filepath.Join(t.TempDir(), "efvi.test"), ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("link with -tags efvi (library %s): %v\n%s", lib, err, out)
	}
}

// flagDirs returns the directories of the flags with the given prefix.
func flagDirs(flags, prefix string) []string {
	var dirs []string
	fs := strings.Fields(flags)
	for i := 0; i < len(fs); i++ {
		switch {
		case fs[i] == prefix && i+1 < len(fs):
			dirs = append(dirs, fs[i+1])
			i++
		case strings.HasPrefix(fs[i], prefix) && len(fs[i]) > len(prefix):
			dirs = append(dirs, fs[i][len(prefix):])
		}
	}
	return dirs
}

// find returns the first dir/name that exists.
func find(dirs []string, names ...string) string {
	for _, d := range dirs {
		for _, n := range names {
			if p := filepath.Join(d, n); fileExists(p) {
				return p
			}
		}
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
