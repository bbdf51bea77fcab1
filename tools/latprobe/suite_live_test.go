//go:build linux

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/lowlat/lowlat/containerize"
)

// TestSuiteDefaultBuild runs suite cells with latprobe built the default
// way (TestMain's plain `go build`, linked dynamically where cgo is on): a
// container cell must run with it, and have its baseline ratios against
// the netns cell of the same backend, which runs afxdp too.
func TestSuiteDefaultBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for containers, namespaces and veth links; CI runs it as root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc (apt-get install runc; CI's install script does it)")
	}
	interp, err := containerize.Interpreter(binary)
	if err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, "suite", "--placements", "netns,container-both", "--backends", "kernel,afxdp", "--count", "300", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if interp != "" && !strings.Contains(r.stderr, "is dynamically linked: copied read-only into each container") {
		t.Errorf("a dynamically linked latprobe (loader %s): stderr does not say what the suite carried:\n%s", interp, r.stderr)
	}
	var doc struct {
		Cells []struct {
			Placement, Backend, Skipped, Baseline string
			Samples                               int64
			RatioP50                              *float64 `json:"baseline_ratio_p50"`
			RatioP99                              *float64 `json:"baseline_ratio_p99"`
		} `json:"cells"`
		SharedObjects []string `json:"shared_objects"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if (interp != "") != (len(doc.SharedObjects) > 0) {
		t.Errorf("loader %q, shared_objects %q: want them listed exactly for a dynamic binary", interp, doc.SharedObjects)
	}
	if len(doc.Cells) != 4 {
		t.Fatalf("%d cells, want netns and container-both for kernel and afxdp: %s", len(doc.Cells), r.stdout)
	}
	for _, c := range doc.Cells {
		if c.Skipped != "" || c.Samples != 300 {
			t.Errorf("%s/%s: skipped %q, samples %d: want 300 measured", c.Placement, c.Backend, c.Skipped, c.Samples)
			continue
		}
		isContainer := c.Placement == "container-both"
		if got := c.RatioP50 != nil && c.RatioP99 != nil && c.Baseline == "netns"; got != isContainer {
			t.Errorf("%s/%s: baseline %q, ratios %v %v: want them exactly on the container cell, against netns", c.Placement, c.Backend, c.Baseline, c.RatioP50, c.RatioP99)
		}
	}
}
