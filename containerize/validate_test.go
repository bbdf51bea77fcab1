package containerize

import (
	"errors"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"256Mi", 256 << 20, true},
		{"1Gi", 1 << 30, true},
		{"4096", 4096, true},
		{"2Ki", 2048, true},
		{"256m", 0, false}, // 0.256 bytes to Kubernetes, MiB to docker
		{"256M", 0, false},
		{"1.5Gi", 0, false},
		{"0", 0, false},
		{"", 0, false},
		{"Mi", 0, false},
		{"-1Gi", 0, false},
		{"01Gi", 0, false},
		{"99999999999999Ti", 0, false},
	} {
		got, err := ParseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"256Mi", "1Gi", "4096", "1e3", "1.5G"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		if err == nil && n <= 0 {
			t.Fatalf("ParseBytes(%q) = %d", s, n)
		}
	})
}

func TestDeployValidate(t *testing.T) {
	for _, tc := range []struct {
		d     Deploy
		field string
	}{
		{Deploy{Backend: "kernel", CPUSet: "2-"}, "CPUSet"},
		{Deploy{Backend: "kernel", CPUSet: "a"}, "CPUSet"},
		{Deploy{Backend: "kernel", Memory: "256m"}, "Memory"},
		{Deploy{Backend: "kernel", Memory: "lots"}, "Memory"},
		{Deploy{Backend: "kernel", Hugepages: "1G"}, "Hugepages"},
		{Deploy{Backend: "kernel", Hugepages: "3Mi"}, "Hugepages"},
		{Deploy{Backend: "kernel", CPUs: -1}, "CPUs"},
	} {
		err := tc.d.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v, want a FieldError for %s", tc.d, err, tc.field)
		}
		if _, err := PodManifest(tc.d); err == nil {
			t.Errorf("%+v: PodManifest accepted it", tc.d)
		}
	}
	ok := Deploy{Backend: "afxdp", CPUSet: "2-3,6", Memory: "512Mi", Hugepages: "1Gi"}
	if err := ok.Validate(); err != nil {
		t.Errorf("%+v: %v", ok, err)
	}
}
