package containerize

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCapabilities(t *testing.T) {
	for _, tc := range []struct {
		backend  string
		realtime bool
		want     []string
	}{
		{"kernel", false, nil},
		{"kernel", true, []string{"CAP_SYS_NICE"}},
		{"busypoll", false, []string{"CAP_NET_ADMIN"}},
		{"afxdp", false, []string{"CAP_BPF", "CAP_IPC_LOCK", "CAP_NET_ADMIN", "CAP_NET_RAW"}},
		{"afxdp", true, []string{"CAP_BPF", "CAP_IPC_LOCK", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_NICE"}},
	} {
		got, err := Capabilities(tc.backend, tc.realtime)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Capabilities(%s, %v) = %v, %v; want %v", tc.backend, tc.realtime, got, err, tc.want)
		}
	}
	if _, err := Capabilities("dpdk", false); err == nil {
		t.Error("unknown backend accepted")
	}
	if m, err := CapMask([]string{"CAP_NET_ADMIN", "CAP_BPF"}); err != nil || m != 1<<12|1<<39 {
		t.Errorf("CapMask = %#x, %v", m, err)
	}
}

// TestBundleConfig writes a bundle and checks that its config.json decodes
// strictly into the runtime-spec types with the fields asked for, and that
// the undo removes the directory.
func TestBundleConfig(t *testing.T) {
	parent := t.TempDir()
	bin := filepath.Join(parent, "fake-latprobe")
	if err := os.WriteFile(bin, []byte("not really a binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The device's numbers come from the host: a misc device, its minor
	// is dynamic.
	hostDMA, dmaErr := HostDevNum(DMALatencyPath)
	o := Options{
		Binary: bin, Args: []string{"server", "--backend", "afxdp"}, Backend: "afxdp", Realtime: true,
		CPUs: "0-1", DMALatency: dmaErr == nil, NetnsPath: "/run/netns/example", Binds: map[string]string{"/out": parent},
	}
	if dmaErr != nil {
		t.Logf("no %s checks: %v", DMALatencyPath, dmaErr)
	}
	var u Undo
	b, err := WriteBundle(&u, parent, o)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(b.Dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var s specs.Spec
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("config.json does not decode as specs.Spec: %v", err)
	}
	if s.Version != specs.Version || s.Root == nil || s.Root.Path != "rootfs" || !s.Root.Readonly {
		t.Errorf("version %q root %+v: want %s and a read-only rootfs", s.Version, s.Root, specs.Version)
	}
	if s.Process == nil || !slices.Equal(s.Process.Args, []string{BinaryPath, "server", "--backend", "afxdp"}) || !s.Process.NoNewPrivileges {
		t.Fatalf("process %+v", s.Process)
	}
	want := []string{"CAP_BPF", "CAP_IPC_LOCK", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_NICE"}
	c := s.Process.Capabilities
	if c == nil || !slices.Equal(c.Bounding, want) || !slices.Equal(c.Effective, want) || !slices.Equal(c.Permitted, want) ||
		len(c.Inheritable) != 0 || len(c.Ambient) != 0 {
		t.Errorf("capabilities %+v, want exactly %v", c, want)
	}
	l := s.Linux
	if l == nil || l.Resources == nil || l.Resources.CPU == nil || l.Resources.CPU.Cpus != "0-1" {
		t.Fatalf("linux %+v: want cpuset 0-1", l)
	}
	if !slices.ContainsFunc(l.Namespaces, func(n specs.LinuxNamespace) bool {
		return n.Type == specs.NetworkNamespace && n.Path == o.NetnsPath
	}) {
		t.Errorf("namespaces %+v: no network namespace %s", l.Namespaces, o.NetnsPath)
	}
	if dmaErr == nil {
		if len(l.Devices) != 1 || l.Devices[0].Path != DMALatencyPath || l.Devices[0].Major != hostDMA.Major || l.Devices[0].Minor != hostDMA.Minor {
			t.Errorf("devices %+v: want %s (%d:%d, the host's)", l.Devices, DMALatencyPath, hostDMA.Major, hostDMA.Minor)
		}
		r := l.Resources.Devices
		if len(r) != 2 || !r[1].Allow || *r[1].Major != hostDMA.Major || *r[1].Minor != hostDMA.Minor {
			t.Errorf("device cgroup %+v: want deny all, then allow %d:%d", r, hostDMA.Major, hostDMA.Minor)
		}
	}
	if !slices.ContainsFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/out" && m.Source == parent }) {
		t.Errorf("mounts %+v: no /out bind", s.Mounts)
	}
	if _, err := os.Stat(filepath.Join(b.Rootfs(), "latprobe")); err != nil {
		t.Errorf("binary not in rootfs: %v", err)
	}
	if err := u.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.Dir); !os.IsNotExist(err) {
		t.Errorf("bundle %s left after undo: %v", b.Dir, err)
	}

	// Host network and no extras: no network namespace, no devices.
	o = Options{Binary: bin, Backend: "kernel"}
	s2, err := NewSpec(o)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(s2.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace }) ||
		len(s2.Linux.Devices) != 0 || len(s2.Process.Capabilities.Effective) != 0 {
		t.Errorf("kernel spec on the host network: %+v", s2.Linux)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{
		{Backend: "kernel"},
		{Binary: "x", Backend: "nope"},
		{Binary: "x", Backend: "kernel", Binds: map[string]string{"rel": "/tmp"}},
		{Binary: "x", Backend: "kernel", Binds: map[string]string{BinaryPath: "/tmp"}},
		{Binary: "x", Backend: "kernel", DMALatency: true},
		{Binary: "x", Backend: "kernel", CPUs: "0-"},
		{Binary: "x", Backend: "kernel", CPUs: "two"},
		{Binary: "x", Backend: "kernel", CPUs: "3-1"},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: valid", o)
		}
	}
}

func TestUndoOrder(t *testing.T) {
	var u Undo
	var got []int
	for i := range 3 {
		u.Push("step", func() error { got = append(got, i); return nil })
	}
	if err := u.Run(); err != nil || !slices.Equal(got, []int{2, 1, 0}) || u.Len() != 0 {
		t.Errorf("undo ran %v, %v", got, err)
	}
}

func TestSpecRealtimeRuntime(t *testing.T) {
	o := Options{Binary: "x", Backend: "kernel", Realtime: true, RealtimeRuntime: 200000}
	s, err := NewSpec(o)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Linux.Resources.CPU
	if c == nil || c.RealtimeRuntime == nil || *c.RealtimeRuntime != 200000 || c.RealtimePeriod == nil || *c.RealtimePeriod != 1_000_000 {
		t.Errorf("cpu %+v: want rt runtime 200000 per 1000000 µs", c)
	}
	o.Realtime = false
	if s, _ := NewSpec(o); s.Linux.Resources.CPU != nil {
		t.Errorf("runtime without Realtime: %+v", s.Linux.Resources.CPU)
	}
}
