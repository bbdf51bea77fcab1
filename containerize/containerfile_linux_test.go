//go:build linux

package containerize

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildStage runs, on this host, what the build stage of
// ContainerfileFor(backend) runs in the image: its ENV and its go build,
// from the repository root (the build context), with /src standing for a
// directory laid out as the Containerfile's comments say. It returns the
// binary built.
func buildStage(t *testing.T, backend string, src string) string {
	t.Helper()
	st := parseStages(t, ContainerfileFor(backend))
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "latprobe")
	env := os.Environ()
	var run []string
	for _, l := range st[0].lines {
		switch {
		case strings.HasPrefix(l, "ENV "):
			for _, kv := range strings.Fields(strings.TrimPrefix(l, "ENV ")) {
				env = append(env, strings.ReplaceAll(kv, "/src/", src+"/"))
			}
		case strings.HasPrefix(l, "RUN "):
			run = strings.Fields(strings.TrimPrefix(l, "RUN "))
		}
	}
	if len(run) < 2 || run[0] != "go" {
		t.Fatalf("build stage runs %q, want go build", run)
	}
	for i, a := range run {
		if a == "/out/latprobe" {
			run[i] = out
		}
	}
	cmd := exec.Command("go", run[1:]...)
	cmd.Dir, cmd.Env = root, env
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build stage %q: %v\n%s", run, err, b)
	}
	return out
}

// TestContainerfileBuildEFVI runs the efvi build stage where Onload's
// ef_vi headers and libciul1 are on this host, copied as the
// Containerfile's comments say.
func TestContainerfileBuildEFVI(t *testing.T) {
	find := func(dirs []string, name string) string {
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, name)); err == nil {
				return filepath.Join(d, name)
			}
		}
		return ""
	}
	incs := []string{"/usr/include", "/usr/local/include"}
	libs := []string{"/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/local/lib64", "/usr/local/lib"}
	hdr, lib := find(incs, "etherfabric/vi.h"), find(libs, "libciul1.a")
	if hdr == "" || lib == "" {
		t.Skipf("Onload's ef_vi headers (etherfabric/vi.h in %v) or libciul1.a (in %v) are not on this host: the efvi build stage is checked where they are", incs, libs)
	}
	src := t.TempDir()
	for _, c := range [][]string{
		{"mkdir", "-p", src + "/onload/include", src + "/onload/lib"},
		{"cp", "-r", filepath.Dir(hdr), src + "/onload/include/"},
		{"cp", lib, src + "/onload/lib/"},
	} {
		if b, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(c, " "), err, b)
		}
	}
	bin := buildStage(t, "efvi", src)
	if interp, err := Interpreter(bin); err != nil || interp == "" {
		t.Errorf("efvi build: interpreter %q, %v: want a cgo binary linked against the C library", interp, err)
	}
}

// TestContainerfileBuildOnload runs the onload build stage (it needs only
// a C compiler) and runs the result in a container that carries what it
// links, as the image stage's base does.
func TestContainerfileBuildOnload(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc for the cgo build (CI's install script installs it)")
	}
	bin := buildStage(t, "onload", t.TempDir())
	interp, err := Interpreter(bin)
	if err != nil || interp == "" {
		t.Fatalf("onload build: interpreter %q, %v: want a cgo binary linked against the C library", interp, err)
	}
	requireRunc(t)
	parent := t.TempDir()
	leakCheck(t, parent)
	out, err := Run(context.Background(), "runc", parent, Options{Binary: bin, Args: []string{"help"}, Backend: "onload"}, 30*time.Second)
	if err != nil {
		t.Fatalf("onload build in a container: %v", err)
	}
	if !strings.Contains(out, "latprobe") {
		t.Errorf("latprobe help in the container printed %q", out)
	}
}
