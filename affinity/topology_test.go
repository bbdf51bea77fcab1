package affinity

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestTopology(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sysfs topology is Linux only")
	}
	online, err := OnlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	for _, cpu := range online.CPUs() {
		info, err := Topology(cpu)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Siblings.Contains(cpu) {
			t.Errorf("cpu %d not among its siblings %q", cpu, info.Siblings)
		}
	}
	if _, err := IsolatedCPUs(); err != nil {
		t.Error(err)
	}
	if _, err := NohzFullCPUs(); err != nil {
		t.Error(err)
	}
	f := CPUFeatures()
	t.Logf("features %+v", f)
}

// fakeCPUTree builds a sysfs cpu directory with cpuidle states for cpu 0.
func fakeCPUTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for i, st := range []struct {
		name, lat, disable string
	}{{"POLL", "0", "0"}, {"C1", "2", "0"}, {"C6", "133", "0"}, {"C10", "890", "1"}} {
		d := filepath.Join(root, "cpu0", "cpuidle", "state"+[]string{"0", "1", "2", "10"}[i])
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range map[string]string{"name": st.name, "latency": st.lat, "disable": st.disable} {
			if err := os.WriteFile(filepath.Join(d, name), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := sysCPUDir
	sysCPUDir = root
	t.Cleanup(func() { sysCPUDir = old })
	return root
}

func TestDisableIdleStates(t *testing.T) {
	root := fakeCPUTree(t)
	states, err := IdleStates(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 4 || states[3].Index != 10 || states[3].Name != "C10" || !states[3].Disabled {
		t.Fatalf("states %+v", states)
	}
	j, err := CreateJournal(t.TempDir(), []string{"test"})
	if err != nil {
		t.Fatal(err)
	}
	steps, err := j.DisableIdleStates(NewCPUSet(0), 2, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || steps[0].Path != filepath.Join(root, "cpu0", "cpuidle", "state2", "disable") {
		t.Fatalf("steps %+v", steps)
	}
	if v, _ := os.ReadFile(steps[0].Path); string(v) != "1\n" {
		t.Fatalf("state2 disable reads %q", v)
	}
	if err := j.Undo(); err != nil {
		t.Fatal(err)
	}
	if v, _ := os.ReadFile(steps[0].Path); string(v) != "0\n" {
		t.Fatalf("state2 disable reads %q after undo", v)
	}
	if _, err := IdleStates(1); err == nil {
		t.Fatal("cpu without cpuidle gave no error")
	}
}
