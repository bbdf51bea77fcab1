package affinity

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCPUList(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		n       int
	}{
		{"", "", 0},
		{"\n", "", 0},
		{"0", "0", 1},
		{"0-3,8,10-11\n", "0-3,8,10-11", 7},
		{"3,2,1,0", "0-3", 4},
		{"0-1,1-2", "0-2", 3},
		{"1023", "1023", 1},
		{"0-15:2/4", "0-1,4-5,8-9,12-13", 8},
		{"0-7:1/1", "0-7", 8},
		{" 5-5 ", "5", 1},
	} {
		s, err := ParseCPUList(tc.in)
		if err != nil {
			t.Errorf("ParseCPUList(%q): %v", tc.in, err)
			continue
		}
		if s.String() != tc.out || s.Len() != tc.n {
			t.Errorf("ParseCPUList(%q) = %q (len %d), want %q (len %d)", tc.in, s, s.Len(), tc.out, tc.n)
		}
	}
	for _, bad := range []string{",", "0,", "-1", "1-", "3-1", "a", "1024", "0-1024", "1:1/2", "0-3:0/2",
		"0-3:3/2", "0-3:1", "+1", "0x1", "1 ,2", "99999999999999999999"} {
		if s, err := ParseCPUList(bad); err == nil {
			t.Errorf("ParseCPUList(%q) = %q, want error", bad, s)
		}
	}
	if _, err := ParseCPUList("4096"); !errors.Is(err, ErrCPURange) {
		t.Errorf("out-of-range error does not match ErrCPURange: %v", err)
	}
}

func TestCPUSetOps(t *testing.T) {
	a := MustParseCPUList("0-3")
	b := NewCPUSet(2, 3, 4)
	if got := a.Union(b).String(); got != "0-4" {
		t.Errorf("union %q", got)
	}
	if got := a.Intersect(b).String(); got != "2-3" {
		t.Errorf("intersect %q", got)
	}
	if got := a.Difference(b).String(); got != "0-1" {
		t.Errorf("difference %q", got)
	}
	if !NewCPUSet(1, 2).IsSubsetOf(a) || b.IsSubsetOf(a) {
		t.Error("IsSubsetOf")
	}
	if !a.Contains(0) || a.Contains(4) || a.Contains(-1) || a.Contains(MaxCPU) {
		t.Error("Contains")
	}
	if a.First() != 0 || (CPUSet{}).First() != -1 || !(CPUSet{}).IsEmpty() {
		t.Error("First/IsEmpty")
	}
	a.Remove(0)
	a.Remove(-5)
	if a.String() != "1-3" {
		t.Errorf("remove: %q", a)
	}
	var c CPUSet
	if err := c.Add(MaxCPU); !errors.Is(err, ErrCPURange) {
		t.Errorf("Add(MaxCPU): %v", err)
	}
	txt, _ := b.MarshalText()
	var d CPUSet
	if err := d.UnmarshalText(txt); err != nil || !d.Equal(b) {
		t.Errorf("text round trip: %q -> %v, %v", txt, d, err)
	}
}

// FuzzParseCPUList checks that the parser never panics and that what it
// accepts prints to a canonical list that parses back to the same set.
func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"0-3,8,10-11", "0", "", "1023", "0-15:2/4", "3,1", "1-", ",,", "0-1023"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseCPUList(in)
		if err != nil {
			if !strings.Contains(err.Error(), "parse cpu list") {
				t.Fatalf("error does not name the operation: %v", err)
			}
			return
		}
		out := s.String()
		s2, err := ParseCPUList(out)
		if err != nil {
			t.Fatalf("printed form %q of %q does not parse: %v", out, in, err)
		}
		if !s2.Equal(s) || s2.String() != out {
			t.Fatalf("round trip %q -> %q -> %q", in, out, s2)
		}
		if s.Len() != len(s.CPUs()) {
			t.Fatalf("Len %d != len(CPUs) %d", s.Len(), len(s.CPUs()))
		}
	})
}

func TestReadProgramEnv(t *testing.T) {
	env := map[string]string{EnvCPUs: "1-2", EnvMlockall: "1"}
	look := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	e, err := ReadProgramEnv(look)
	if err != nil || e.CPUs.String() != "1-2" || !e.Mlockall {
		t.Fatalf("%+v %v", e, err)
	}
	env[EnvMlockall] = "yes"
	if _, err := ReadProgramEnv(look); err == nil {
		t.Fatal("bad LOWLAT_MLOCKALL accepted")
	}
	env[EnvMlockall], env[EnvCPUs] = "0", "x"
	if _, err := ReadProgramEnv(look); err == nil {
		t.Fatal("bad LOWLAT_CPUS accepted")
	}
}
