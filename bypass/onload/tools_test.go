//go:build linux && onload && cgo

package onload_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/bypass/onload"
	"github.com/lowlat/lowlat/bypass/onload/onloadtest"
)

// The tests in this file run lowlat's commands with the backend: built
// here, into temporary directories.

// goBuild builds the command in dir (relative to this package) into a
// temporary directory, with the onload tag when tagged.
func goBuild(t *testing.T, dir string, tagged bool) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a command: skipped with -short")
	}
	out := filepath.Join(t.TempDir(), filepath.Base(dir))
	args := []string{"build", "-o", out}
	if tagged {
		args = append(args, "-tags", "onload")
	}
	cmd := exec.Command("go", append(args, dir)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, b)
	}
	return out
}

func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestOnloadRun: onload-run --onload, with the interposer named as the
// Onload library, runs a Go program built with the tag (this test binary)
// on it: the program sees the environment, finds Onload, keeps its signal
// handler, and opens its sockets on the onload backend from LOWLAT_*.
func TestOnloadRun(t *testing.T) {
	lib := onloadtest.Build(t)
	bin := goBuild(t, "../../tools/onload-run", false)
	dir := t.TempDir()
	prof := filepath.Join(dir, "test.profile")
	if err := os.WriteFile(prof, []byte("description = test\n[onload]\nEF_POLL_USEC = 100000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	counts := filepath.Join(dir, "counts")
	const name = "TestChildOnloadRun"
	out, err := run(t, []string{childEnv + "=" + name, onloadtest.EnvCounts + "=" + counts, "LOWLAT_ONLOAD_TEST_LIB=" + lib},
		bin, "--profile", prof, "--onload", "--onload-lib", lib, "--",
		os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	if err != nil || !strings.Contains(out, "--- PASS: "+name) {
		t.Fatalf("onload-run --onload -- %s: %v\n%s", name, err, out)
	}
}

func TestChildOnloadRun(t *testing.T) {
	inChild(t)
	lib := os.Getenv("LOWLAT_ONLOAD_TEST_LIB")
	for k, want := range map[string]string{"LD_PRELOAD": lib, "EF_POLL_USEC": "100000", "LOWLAT_BACKEND": "onload"} {
		if got := os.Getenv(k); !strings.Contains(got, want) {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	if !onload.Find().Present {
		t.Fatal("Onload (the interposer) is not present")
	}
	if st := onload.Signal(); !st.Installed || !st.TakenAtStart {
		t.Errorf("signal state %+v", st)
	}
	o, err := bypass.OptionsFromEnv(bypass.Options{ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a, err := bypass.ListenUDP(loopback, o)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := bypass.ListenUDP(loopback, o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if st, _ := onload.StatOf(a); a.Info().Backend != "onload" || !st.Accelerated {
		t.Fatalf("backend %s, %v", a.Info().Backend, st)
	}
	pingPong(t, a, b, 50)
}

// TestLatprobe: latprobe built with the tag runs on the onload backend
// without Onload, saying Onload is absent; with the interposer preloaded,
// auto selection takes onload first and the report names the stack.
func TestLatprobe(t *testing.T) {
	bin := goBuild(t, "../../tools/latprobe", true)
	args := []string{"run", "--count", "300", "--warmup", "20", "--timeout", "5s"}
	out, err := run(t, nil, bin, append(args, "--backend", "onload")...)
	if err != nil {
		t.Fatalf("latprobe run --backend onload: %v\n%s", err, out)
	}
	for _, want := range []string{"backend onload", "Onload is absent"} {
		if !strings.Contains(out, want) {
			t.Errorf("latprobe run --backend onload: output lacks %q:\n%s", want, out)
		}
	}
	if !tableRow(out, "udp", "onload") {
		t.Errorf("latprobe run --backend onload: no udp onload row in the table:\n%s", out)
	}
	out, err = run(t, nil, bin, append(args, "--proto", "tcp", "--backend", "onload")...)
	if err != nil || !tableRow(out, "tcp", "onload") {
		t.Errorf("latprobe run --proto tcp --backend onload: %v\n%s", err, out)
	}

	lib := onloadtest.Build(t)
	out, err = run(t, []string{"LD_PRELOAD=" + lib}, bin, args...)
	if err != nil {
		t.Fatalf("latprobe run under the interposer: %v\n%s", err, out)
	}
	for _, want := range []string{"backend onload", "accelerated by Onload stack 7"} {
		if !strings.Contains(out, want) {
			t.Errorf("latprobe run (auto) under the interposer: output lacks %q:\n%s", want, out)
		}
	}
	if !tableRow(out, "udp", "onload") {
		t.Errorf("latprobe run (auto) under the interposer: no udp onload row:\n%s", out)
	}
}

// tableRow reports whether latprobe's table has a row for proto over
// backend with samples in it.
func tableRow(out, proto, backend string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && f[0] == proto && f[1] == backend && f[3] != "0" {
			return true
		}
	}
	return false
}
