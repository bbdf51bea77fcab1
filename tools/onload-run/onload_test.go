//go:build linux

package main

import (
	"debug/buildinfo"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/lowlat/lowlat/bypass/onload/onloadtest"
)

// TestOnloadFlag: --onload with the test interposer named as the Onload
// library preloads it into PROGRAM with the profile's EF_* variables and
// LOWLAT_BACKEND=onload, and PROGRAM sees them; a Go program built
// without the onload tag is refused with how to rebuild it.
func TestOnloadFlag(t *testing.T) {
	lib := onloadtest.Build(t)
	dir := t.TempDir()
	prof := filepath.Join(dir, "mine.profile")
	os.WriteFile(prof, []byte("description = test\n[onload]\nEF_POLL_USEC = 100000\nEF_TCP_FASTSTART_INIT = 0\n"), 0o644)
	counts := filepath.Join(dir, "counts")

	r := onloadRun(t, []string{onloadtest.EnvCounts + "=" + counts, "LOWLAT_BACKEND=busypoll"},
		"--profile", prof, "--onload", "--onload-lib", lib, "--",
		"sh", "-c", `echo "$LD_PRELOAD|$EF_POLL_USEC|$EF_TCP_FASTSTART_INIT|$LOWLAT_BACKEND"`)
	if r.status != 0 || strings.TrimSpace(r.stdout) != lib+"|100000|0|onload" {
		t.Fatalf("status %d stdout %q", r.status, r.stdout)
	}
	// The interposer's constructor ran in PROGRAM: it was preloaded.
	if _, err := onloadtest.ReadCounts(counts); err != nil {
		t.Fatalf("the library was not loaded into PROGRAM: %v", err)
	}

	// onload-run itself is a Go program built without the tag.
	r = onloadRun(t, nil, "--profile", prof, "--onload", "--onload-lib", lib, "--", bin, "--help")
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.status != exitBadInput || len(lines) != 1 || !strings.Contains(lines[0], "built without the onload tag") ||
		!strings.Contains(lines[0], "go build -tags onload") {
		t.Fatalf("untagged Go program: status %d stderr %q", r.status, r.stderr)
	}
}

// TestOnloadMissing: --onload where Onload is not installed is one line,
// exit status 1.
func TestOnloadMissing(t *testing.T) {
	if lib := findOnload(); lib != "" {
		t.Skipf("Onload is installed here (%s)", lib)
	}
	r := onloadRun(t, nil, "--profile", "safe", "--onload", "--", "true")
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.status != exitFailed || len(lines) != 1 || !strings.Contains(lines[0], "Onload is not installed") ||
		!strings.Contains(lines[0], "libonload.so") || !strings.Contains(lines[0], "--onload-lib") {
		t.Fatalf("status %d stderr %q", r.status, r.stderr)
	}
}

func TestOnloadBuild(t *testing.T) {
	for _, tc := range []struct {
		settings []debug.BuildSetting
		want     bool
	}{
		{[]debug.BuildSetting{{Key: "-tags", Value: "onload"}, {Key: "CGO_ENABLED", Value: "1"}}, true},
		{[]debug.BuildSetting{{Key: "-tags", Value: "efvi,onload"}, {Key: "CGO_ENABLED", Value: "1"}}, true},
		{[]debug.BuildSetting{{Key: "-tags", Value: "onload"}, {Key: "CGO_ENABLED", Value: "0"}}, false},
		{[]debug.BuildSetting{{Key: "-tags", Value: "onloadx"}, {Key: "CGO_ENABLED", Value: "1"}}, false},
		{[]debug.BuildSetting{{Key: "CGO_ENABLED", Value: "1"}}, false},
	} {
		if got := onloadBuild(&buildinfo.BuildInfo{Settings: tc.settings}); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.settings, got, tc.want)
		}
	}
}
