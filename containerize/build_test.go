package containerize

import (
	"os"
	"os/exec"
	"testing"
)

// TestBuildsOffLinux cross-compiles the package for systems without
// containers: the pure side (specs, deploy emitters, the suite's report)
// must build there, the live side returning ErrNotSupported.
func TestBuildsOffLinux(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles; skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command")
	}
	for _, goos := range []string{"darwin", "freebsd"} {
		cmd := exec.Command("go", "build", "-o", os.DevNull, ".", "./internal/probe")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=%s go build: %v\n%s", goos, err, out)
		}
	}
}
