package containerize

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// stage is one FROM section of a Containerfile: its FROM line and the
// instructions after it, comments dropped.
type stage struct {
	from  string
	lines []string
}

func parseStages(t *testing.T, cf string) []stage {
	t.Helper()
	var st []stage
	for _, l := range strings.Split(cf, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "FROM "):
			st = append(st, stage{from: strings.TrimPrefix(l, "FROM ")})
		case len(st) == 0:
			t.Fatalf("instruction before FROM: %q", l)
		default:
			kw, _, _ := strings.Cut(l, " ")
			if !slices.Contains([]string{"WORKDIR", "COPY", "ENV", "RUN", "ENTRYPOINT"}, kw) {
				t.Fatalf("unexpected instruction %q", l)
			}
			st[len(st)-1].lines = append(st[len(st)-1].lines, l)
		}
	}
	return st
}

func TestContainerfileFor(t *testing.T) {
	for _, b := range []string{"kernel", "busypoll", "afxdp"} {
		if ContainerfileFor(b) != Containerfile() {
			t.Errorf("%s: want the static FROM scratch Containerfile", b)
		}
	}
	for _, b := range []string{"efvi", "onload"} {
		cf := ContainerfileFor(b)
		st := parseStages(t, cf)
		if len(st) != 2 || st[0].from != GoBuildImage+" AS build" || st[1].from != CBaseImage {
			t.Fatalf("%s: stages %+v: want a build stage on %s and the image on %s\n%s", b, st, GoBuildImage, CBaseImage, cf)
		}
		build := strings.Join(st[0].lines, "\n")
		for _, want := range []string{"ENV CGO_ENABLED=1", "RUN go build -tags " + b + " -o /out/latprobe ./tools/latprobe"} {
			if !strings.Contains(build, want) {
				t.Errorf("%s: build stage lacks %q:\n%s", b, want, build)
			}
		}
		if b == "efvi" && !strings.Contains(build, "CGO_CFLAGS=-I/src/onload/include CGO_LDFLAGS=-L/src/onload/lib") {
			t.Errorf("efvi: build stage does not point cgo at the copied Onload files:\n%s", build)
		}
		if !slices.Equal(st[1].lines, []string{"COPY --from=build /out/latprobe " + BinaryPath, `ENTRYPOINT ["` + BinaryPath + `"]`}) {
			t.Errorf("%s: image stage %q", b, st[1].lines)
		}
	}
}

func TestOnloadDeploy(t *testing.T) {
	d := Deploy{Backend: "onload", OnloadLib: "/usr/lib/x86_64-linux-gnu/libonload.so"}
	for _, engine := range []string{"podman", "docker"} {
		args, err := RunCommand(engine, d)
		if err != nil {
			t.Fatal(err)
		}
		line := " " + strings.Join(args, " ") + " "
		for _, want := range []string{
			" --device /dev/onload ", " --device /dev/onload_epoll ", " --device /dev/sfc_char ",
			" --volume /usr/lib/x86_64-linux-gnu/libonload.so:" + ContainerOnloadLib + ":ro ",
			" --env LD_PRELOAD=" + ContainerOnloadLib + " ", " --env LOWLAT_BACKEND=onload ",
			" --read-only ", " --cap-drop all ",
		} {
			if !strings.Contains(line, want) {
				t.Errorf("%s run line lacks %q: %s", engine, want, line)
			}
		}
		if strings.Contains(line, "--cap-add") {
			t.Errorf("%s: onload adds a capability: %s", engine, line)
		}
	}
	b, err := PodManifest(d)
	if err != nil {
		t.Fatal(err)
	}
	var p corev1.Pod
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		t.Fatalf("manifest does not parse as a core/v1 Pod: %v\n%s", err, b)
	}
	c := p.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["LD_PRELOAD"] != ContainerOnloadLib || env["LOWLAT_BACKEND"] != "onload" {
		t.Errorf("env %v: want LD_PRELOAD=%s and LOWLAT_BACKEND=onload", env, ContainerOnloadLib)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	if m, ok := mounts[ContainerOnloadLib]; !ok || !m.ReadOnly {
		t.Errorf("library mount %+v: want %s read-only", m, ContainerOnloadLib)
	}
	for _, dev := range onloadDevices {
		if _, ok := mounts[dev]; !ok {
			t.Errorf("no mount of %s", dev)
		}
	}
	for _, v := range p.Spec.Volumes {
		if v.Name == "libonload" && (v.HostPath == nil || v.HostPath.Path != d.OnloadLib || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathFile) {
			t.Errorf("libonload volume %+v: want hostPath %s of type File", v, d.OnloadLib)
		}
	}
	if _, err := RunCommand("podman", Deploy{Backend: "onload", OnloadLib: "libonload.so"}); err == nil {
		t.Error("accepted a relative --onload-lib")
	}
}
