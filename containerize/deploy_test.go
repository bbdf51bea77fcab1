package containerize

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// qosClass applies Kubernetes' rule: Guaranteed when every container sets
// cpu and memory limits and its requests equal its limits.
func qosClass(p *corev1.Pod) corev1.PodQOSClass {
	for _, c := range p.Spec.Containers {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			l, ok := c.Resources.Limits[r]
			if !ok {
				return corev1.PodQOSBurstable
			}
			if q, ok := c.Resources.Requests[r]; ok && q.Cmp(l) != 0 {
				return corev1.PodQOSBurstable
			}
		}
		for r, q := range c.Resources.Requests {
			if l := c.Resources.Limits[r]; l.Cmp(q) != 0 {
				return corev1.PodQOSBurstable
			}
		}
	}
	return corev1.PodQOSGuaranteed
}

func TestPodManifest(t *testing.T) {
	for _, tc := range []struct {
		d    Deploy
		caps []corev1.Capability
		devs []string
	}{
		{Deploy{Backend: "kernel"}, nil, nil},
		{Deploy{Backend: "busypoll", CPUs: 2}, []corev1.Capability{"NET_ADMIN"}, nil},
		{Deploy{Backend: "afxdp", CPUs: 2, Hugepages: "1Gi", Realtime: true, DMALatency: true},
			[]corev1.Capability{"BPF", "IPC_LOCK", "NET_ADMIN", "NET_RAW", "SYS_NICE"}, []string{DMALatencyPath}},
		{Deploy{Backend: "efvi", CPUs: 4}, []corev1.Capability{"NET_RAW"}, onloadDevices},
	} {
		t.Run(tc.d.Backend, func(t *testing.T) {
			b, err := PodManifest(tc.d)
			if err != nil {
				t.Fatal(err)
			}
			var p corev1.Pod
			if err := yaml.UnmarshalStrict(b, &p); err != nil {
				t.Fatalf("manifest does not parse as a core/v1 Pod: %v\n%s", err, b)
			}
			if p.Kind != "Pod" || p.APIVersion != "v1" || len(p.Spec.Containers) != 1 {
				t.Fatalf("kind %q apiVersion %q containers %d", p.Kind, p.APIVersion, len(p.Spec.Containers))
			}
			if q := qosClass(&p); q != corev1.PodQOSGuaranteed {
				t.Fatalf("QoS %s, want Guaranteed:\n%s", q, b)
			}
			c := p.Spec.Containers[0]
			cpu := c.Resources.Limits[corev1.ResourceCPU]
			want := max(tc.d.CPUs, 1)
			if cpu.MilliValue() != int64(want)*1000 {
				t.Errorf("cpu limit %s, want %d whole CPUs", cpu.String(), want)
			}
			sc := c.SecurityContext
			if sc == nil || sc.Capabilities == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Fatalf("security context %+v: want capabilities and a read-only root", sc)
			}
			if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, tc.caps) {
				t.Errorf("capabilities drop %v add %v, want drop [ALL] add %v", sc.Capabilities.Drop, sc.Capabilities.Add, tc.caps)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation is not false")
			}
			hp, ok := c.Resources.Limits["hugepages-2Mi"]
			if (tc.d.Hugepages != "") != ok {
				t.Errorf("hugepages-2Mi limit %v, asked %q", hp.String(), tc.d.Hugepages)
			} else if ok && hp.Cmp(resource.MustParse(tc.d.Hugepages)) != 0 {
				t.Errorf("hugepages-2Mi %s, want %s", hp.String(), tc.d.Hugepages)
			}
			var mounted []string
			for _, m := range c.VolumeMounts {
				if strings.HasPrefix(m.MountPath, "/dev/") && m.MountPath != "/dev/hugepages" {
					mounted = append(mounted, m.MountPath)
				}
			}
			if !slices.Equal(mounted, tc.devs) {
				t.Errorf("devices %v, want %v", mounted, tc.devs)
			}
		})
	}
}

// TestPodManifestDevices checks that hostPath devices come with a comment
// saying they need a privileged pod, and that a device plugin's resource
// replaces the Onload volumes.
func TestPodManifestDevices(t *testing.T) {
	b, err := PodManifest(Deploy{Backend: "efvi"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "# ") || !strings.Contains(string(b), "privileged") || !strings.Contains(string(b), "--onload-resource") {
		t.Errorf("efvi manifest without the privileged/device plugin comment:\n%s", b)
	}
	b, err = PodManifest(Deploy{Backend: "efvi", OnloadResource: "example.com/onload"})
	if err != nil {
		t.Fatal(err)
	}
	var p corev1.Pod
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		t.Fatalf("manifest does not parse as a core/v1 Pod: %v\n%s", err, b)
	}
	c := p.Spec.Containers[0]
	if len(c.VolumeMounts) != 0 || len(p.Spec.Volumes) != 0 {
		t.Errorf("device plugin manifest still mounts %v", c.VolumeMounts)
	}
	for _, rl := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		if q, ok := rl["example.com/onload"]; !ok || q.Value() != 1 {
			t.Errorf("resources %v: want example.com/onload: 1", rl)
		}
	}
	if strings.HasPrefix(string(b), "#") {
		t.Errorf("comment without hostPath devices:\n%s", b)
	}
	if _, err := PodManifest(Deploy{Backend: "efvi", OnloadResource: "onload"}); err == nil {
		t.Error("accepted a resource name without a domain")
	}
}

func TestPodManifestRejects(t *testing.T) {
	for _, d := range []Deploy{{Backend: "dpdk"}, {Backend: "kernel", CPUs: -1}} {
		if _, err := PodManifest(d); err == nil {
			t.Errorf("%+v: no error", d)
		}
	}
}

func TestRunCommand(t *testing.T) {
	for _, engine := range []string{"podman", "docker"} {
		args, err := RunCommand(engine, Deploy{Backend: "afxdp", CPUSet: "2-3", DMALatency: true})
		if err != nil {
			t.Fatal(err)
		}
		line := ShellQuote(args)
		for _, want := range []string{
			engine + " run --rm", "--network host", "--read-only", "--cap-drop all",
			"--cap-add BPF --cap-add IPC_LOCK --cap-add NET_ADMIN --cap-add NET_RAW",
			"--cpuset-cpus 2-3", "--device /dev/cpu_dma_latency", "latprobe:latest server --backend afxdp",
		} {
			if !strings.Contains(line, want) {
				t.Errorf("%s: %q lacks %q", engine, line, want)
			}
		}
		if strings.Contains(line, "SYS_NICE") {
			t.Errorf("%s: %q grants SYS_NICE without Realtime", engine, line)
		}
	}
	for _, engine := range []string{"podman", "docker"} {
		d := Deploy{Backend: "kernel", Realtime: true}
		args, err := RunCommand(engine, d)
		if err != nil {
			t.Fatal(err)
		}
		if line := ShellQuote(args); !strings.Contains(line, "--cpu-rt-runtime 950000") {
			t.Errorf("%s --realtime: %q lacks --cpu-rt-runtime", engine, line)
		}
		if n := strings.Join(RunNotes(engine, d), "\n"); !strings.Contains(n, "RT_GROUP_SCHED") || !strings.HasPrefix(n, "# ") {
			t.Errorf("%s --realtime notes %q: want a comment on RT_GROUP_SCHED", engine, n)
		}
	}
	if _, err := RunCommand("kubernetes", Deploy{Backend: "kernel"}); err == nil {
		t.Error("RunCommand accepted engine kubernetes")
	}
}

func TestContainerfile(t *testing.T) {
	cf := Containerfile()
	if !strings.Contains(cf, "\nFROM scratch\n") || !strings.Contains(cf, "COPY latprobe "+BinaryPath) {
		t.Errorf("Containerfile:\n%s", cf)
	}
}

func TestShellQuote(t *testing.T) {
	if got := ShellQuote([]string{"a", "b c", "it's", ""}); got != `a 'b c' 'it'\''s' ''` {
		t.Errorf("ShellQuote = %s", got)
	}
}

// TestRunCommandSeccomp: only afxdp, which loads an XDP program with
// CAP_BPF, leaves the engine's default seccomp profile.
func TestRunCommandSeccomp(t *testing.T) {
	for _, b := range []string{"kernel", "busypoll", "afxdp"} {
		args, err := RunCommand("podman", Deploy{Backend: b})
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Contains(strings.Join(args, " "), "seccomp=unconfined")
		if got != (b == "afxdp") {
			t.Errorf("%s: seccomp=unconfined present = %v", b, got)
		}
	}
}
