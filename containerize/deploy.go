package containerize

import (
	"fmt"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Deploy describes latprobe deployed with the user's own tools. The zero
// value, with Backend set, is a one-CPU kernel-socket server on port 7471.
type Deploy struct {
	// Backend is the latprobe backend; it picks the capabilities.
	Backend string
	// CPUs is the number of whole CPUs (0 means 1). Kubernetes gives a
	// Guaranteed pod with integer CPUs exclusive cores under the static
	// CPU manager policy.
	CPUs int
	// CPUSet pins the container to these CPUs in podman and docker
	// (--cpuset-cpus); empty leaves the choice to the engine.
	CPUSet string
	// Memory is the memory request and limit (0 means "256Mi").
	Memory string
	// Hugepages, when set ("1Gi"), asks for that much 2 MiB huge page
	// memory, mounted at /dev/hugepages.
	Hugepages string
	// Realtime adds CAP_SYS_NICE for pinning and SCHED_FIFO.
	Realtime bool
	// DMALatency passes /dev/cpu_dma_latency through.
	DMALatency bool
	// Image is the image name ("" means "latprobe:latest").
	Image string
	// OnloadResource is, for Kubernetes with backend efvi, the extended
	// resource name under which a device plugin hands out the Onload
	// devices (the one Onload's Kubernetes operator registers, such as
	// "amd.com/onload": check your cluster's node capacity). When set, the
	// container asks for one of it instead of mounting /dev/onload,
	// /dev/onload_epoll and /dev/sfc_char as hostPath CharDevice volumes,
	// which the device cgroup of a non-privileged container refuses to
	// open.
	OnloadResource string
	// OnloadLib is, for backend onload, the host's libonload.so (""
	// means DefaultOnloadLib). It is mounted read-only into the container
	// at ContainerOnloadLib and preloaded (LD_PRELOAD): the user-space
	// library must match the host's Onload driver, so it comes from the
	// host, not the image.
	OnloadLib string
	// Args are latprobe's arguments (nil means a server on 0.0.0.0:7471).
	Args []string
}

func (d Deploy) withDefaults() (Deploy, error) {
	if err := d.Validate(); err != nil {
		return d, err
	}
	if d.CPUs == 0 {
		d.CPUs = 1
	}
	if d.Memory == "" {
		d.Memory = "256Mi"
	}
	if d.Image == "" {
		d.Image = "latprobe:latest"
	}
	if d.Backend == "onload" && d.OnloadLib == "" {
		d.OnloadLib = DefaultOnloadLib
	}
	if d.Args == nil {
		d.Args = []string{"server", "--backend", d.Backend, "--addr", "0.0.0.0:7471"}
	}
	return d, nil
}

// onloadDevices are the character devices the Onload/ef_vi library opens.
var onloadDevices = []string{"/dev/onload", "/dev/onload_epoll", "/dev/sfc_char"}

// usesOnloadDevices says whether backend opens the Onload devices: efvi
// (ef_vi through /dev/sfc_char and /dev/onload) and onload (the preloaded
// library's stacks).
func usesOnloadDevices(backend string) bool { return backend == "efvi" || backend == "onload" }

// DefaultOnloadLib is where Onload's installer puts libonload.so on
// RPM-style hosts; Debian-style ones have /usr/lib/x86_64-linux-gnu.
const DefaultOnloadLib = "/usr/lib64/libonload.so"

// ContainerOnloadLib is where the host's libonload.so is mounted, read-only,
// in an onload container, and what LD_PRELOAD names.
const ContainerOnloadLib = "/opt/onload/libonload.so"

// Containerfile returns a Containerfile that builds the image from the
// static binary alone: FROM scratch, nothing else in the image.
func Containerfile() string {
	return `# latprobe: build the binary first with
#   CGO_ENABLED=0 go build -o latprobe ./tools/latprobe
FROM scratch
COPY latprobe ` + BinaryPath + `
ENTRYPOINT ["` + BinaryPath + `"]
`
}

// Build images of the cgo variants: the Go toolchain (with gcc and the C
// library's headers) for the build stage, and a slim image of the same
// Debian release, which carries the C library the binary links, to run it.
const (
	GoBuildImage = "golang:1.26-trixie"
	CBaseImage   = "debian:trixie-slim"
)

// ContainerfileFor returns the Containerfile for a latprobe set up for
// backend. kernel, busypoll and afxdp get Containerfile's static binary
// FROM scratch. efvi and onload need a cgo build (-tags efvi, -tags onload)
// that links the C library dynamically: a build stage compiles it from the
// repository (the build context), and the image is CBaseImage, which
// carries the C library. For efvi the build stage also needs Onload's ef_vi
// headers and libciul1.a, copied into the context's onload/ directory; for
// onload nothing of Onload is built in: the host's libonload.so is mounted
// and preloaded at run time (RunCommand, PodManifest).
func ContainerfileFor(backend string) string {
	var b strings.Builder
	switch backend {
	case "efvi":
		b.WriteString(`# latprobe for the efvi backend: a cgo build (-tags efvi) in a build stage,
# run on an image that carries the C library it links; ef_vi (libciul1.a)
# is linked in statically.
# Build context: a checkout of lowlat (the repository root), with Onload's
# ef_vi headers and static library copied into it first:
#   mkdir -p onload/include onload/lib
#   cp -r /usr/include/etherfabric onload/include/   # or $ONLOAD/src/include/etherfabric
#   cp /usr/lib64/libciul1.a onload/lib/             # or $ONLOAD/build/gnu_x86_64/lib/ciul/libciul1.a
`)
	case "onload":
		b.WriteString(`# latprobe for the onload backend: a cgo build (-tags onload) in a build
# stage, run on an image that carries the C library it links. Onload itself
# is not in the image: the host's libonload.so, which must match the host's
# Onload driver, is mounted read-only and preloaded at run time.
# Build context: a checkout of lowlat (the repository root).
`)
	default:
		return Containerfile()
	}
	b.WriteString("FROM " + GoBuildImage + " AS build\nWORKDIR /src\nCOPY . .\nENV CGO_ENABLED=1\n")
	if backend == "efvi" {
		b.WriteString("ENV CGO_CFLAGS=-I/src/onload/include CGO_LDFLAGS=-L/src/onload/lib\n")
	}
	b.WriteString("RUN go build -tags " + backend + " -o /out/latprobe ./tools/latprobe\n\n")
	b.WriteString("FROM " + CBaseImage + "\nCOPY --from=build /out/latprobe " + BinaryPath + "\nENTRYPOINT [\"" + BinaryPath + "\"]\n")
	return b.String()
}

// runFlags are the podman/docker run options that give a container o's
// setup; withNetns adds --network for o.NetnsPath (or host).
func runFlags(o Options, withNetns bool) ([]string, error) {
	caps, err := Capabilities(o.Backend, o.Realtime)
	if err != nil {
		return nil, err
	}
	f := []string{"--read-only", "--security-opt", "no-new-privileges", "--cap-drop", "all"}
	if o.Backend == "afxdp" {
		// The engines' default seccomp profiles let bpf(2) through only
		// with CAP_SYS_ADMIN in older releases (podman 4.3 on Debian 12
		// refuses the XDP program's maps with EPERM); afxdp holds CAP_BPF
		// instead. A site profile that allows bpf(2) for CAP_BPF can
		// replace this.
		f = append(f, "--security-opt", "seccomp=unconfined")
	}
	for _, c := range caps {
		f = append(f, "--cap-add", strings.TrimPrefix(c, "CAP_"))
	}
	if o.CPUs != "" {
		f = append(f, "--cpuset-cpus", o.CPUs)
	}
	if o.DMALatency {
		f = append(f, "--device", DMALatencyPath)
	}
	if usesOnloadDevices(o.Backend) {
		for _, d := range onloadDevices {
			f = append(f, "--device", d)
		}
	}
	for _, c := range sortedKeys(o.Binds) {
		f = append(f, "--volume", o.Binds[c]+":"+c)
	}
	if withNetns {
		if o.NetnsPath != "" {
			f = append(f, "--network", "ns:"+o.NetnsPath)
		} else {
			f = append(f, "--network", "host")
		}
	}
	return f, nil
}

// RunCommand returns the `podman run` or `docker run` command line
// (engine "podman" or "docker") for d, on the host network, as arguments.
func RunCommand(engine string, d Deploy) ([]string, error) {
	if engine != "podman" && engine != "docker" {
		return nil, fmt.Errorf("containerize: engine %q: want podman or docker", engine)
	}
	d, err := d.withDefaults()
	if err != nil {
		return nil, err
	}
	f, err := runFlags(Options{Backend: d.Backend, Realtime: d.Realtime, CPUs: d.CPUSet, DMALatency: d.DMALatency}, false)
	if err != nil {
		return nil, err
	}
	args := []string{engine, "run", "--rm", "--name", "latprobe", "--network", "host"}
	args = append(args, f...)
	if d.Backend == "onload" {
		args = append(args, "--volume", d.OnloadLib+":"+ContainerOnloadLib+":ro",
			"--env", "LD_PRELOAD="+ContainerOnloadLib, "--env", "LOWLAT_BACKEND=onload")
	}
	if d.CPUSet == "" {
		args = append(args, "--cpus", strconv.Itoa(d.CPUs))
	}
	args = append(args, "--memory", d.Memory)
	if d.Hugepages != "" {
		args = append(args, "--mount", "type=bind,source=/dev/hugepages,target=/dev/hugepages")
	}
	if d.Realtime {
		// SCHED_FIFO in a container needs real-time runtime in its
		// cgroup. --cpu-rt-runtime exists only with cgroup v1 on a kernel
		// with CONFIG_RT_GROUP_SCHED, and docker needs the daemon's own
		// budget (dockerd --cpu-rt-runtime=950000); elsewhere the engine
		// refuses the flag. RunNotes says so next to the command line.
		args = append(args, "--cpu-rt-runtime", "950000", "--ulimit", "rtprio=99")
	}
	args = append(args, d.Image)
	return append(args, d.Args...), nil
}

// RunNotes are comment lines (starting "# ") to print with RunCommand's
// or PodManifest's output for d: what the host or cluster must provide
// for the options asked.
func RunNotes(engine string, d Deploy) []string {
	var n []string
	if d.Realtime {
		switch engine {
		case "kubernetes":
			n = append(n, "# --realtime: SCHED_FIFO fails with EPERM in the container unless its cgroup gets real-time",
				"#   runtime, which Kubernetes does not give; CAP_SYS_NICE still allows pinning.")
		default:
			need := "cgroup v1 and CONFIG_RT_GROUP_SCHED"
			if engine == "docker" {
				need += ", with dockerd started with --cpu-rt-runtime=950000"
			}
			n = append(n, "# --realtime: --cpu-rt-runtime works only with "+need+";",
				"#   without real-time runtime SCHED_FIFO fails with EPERM in the container (drop the flag there).")
		}
	}
	if d.Backend == "onload" {
		lib := d.OnloadLib
		if lib == "" {
			lib = DefaultOnloadLib
		}
		n = append(n, "# onload: "+lib+" is the host's Onload library, mounted read-only and preloaded; it must",
			"#   match the host's driver (onload --version), and the image's C library must be at least as",
			"#   new as the one it was built against. Pass --onload-lib where the host keeps it elsewhere.")
	}
	if engine == "kubernetes" {
		if devs := hostDevices(d); len(devs) > 0 {
			n = append(n, "# "+strings.Join(devs, ", ")+": hostPath CharDevice volumes, which the device cgroup",
				"#   of a non-privileged container refuses to open: set securityContext.privileged: true,")
			if usesOnloadDevices(d.Backend) && d.OnloadResource == "" {
				n = append(n, "#   or pass --onload-resource NAME, the Onload device plugin's resource.")
			} else {
				n = append(n, "#   or use a device plugin that exposes them.")
			}
		}
	}
	return n
}

// hostDevices are the devices d's pod mounts as hostPath CharDevice
// volumes.
func hostDevices(d Deploy) []string {
	var devs []string
	if d.DMALatency {
		devs = append(devs, DMALatencyPath)
	}
	if usesOnloadDevices(d.Backend) && d.OnloadResource == "" {
		devs = append(devs, onloadDevices...)
	}
	return devs
}

// ShellQuote joins args into one shell command line.
func ShellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == ':' || r == '=' || r == ',' ||
				(r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// The Pod manifest is written through these few types (with the field
// names of the Kubernetes core/v1 API) rather than k8s.io/api, whose
// dependency tree would triple latprobe's size; the tests parse the output
// with the real API types.
type (
	pod struct {
		APIVersion string  `json:"apiVersion"`
		Kind       string  `json:"kind"`
		Metadata   podMeta `json:"metadata"`
		Spec       podSpec `json:"spec"`
	}
	podMeta struct {
		Name        string            `json:"name,omitempty"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	podSpec struct {
		HostNetwork   bool         `json:"hostNetwork,omitempty"`
		DNSPolicy     string       `json:"dnsPolicy,omitempty"`
		RestartPolicy string       `json:"restartPolicy"`
		Tolerations   []toleration `json:"tolerations,omitempty"`
		Containers    []container  `json:"containers"`
		Volumes       []volume     `json:"volumes,omitempty"`
	}
	container struct {
		Name            string          `json:"name"`
		Image           string          `json:"image"`
		Args            []string        `json:"args,omitempty"`
		Env             []envVar        `json:"env,omitempty"`
		Ports           []containerPort `json:"ports,omitempty"`
		Resources       resources       `json:"resources"`
		SecurityContext securityContext `json:"securityContext"`
		VolumeMounts    []volumeMount   `json:"volumeMounts,omitempty"`
	}
	resources struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits"`
	}
	securityContext struct {
		Capabilities             capabilities `json:"capabilities"`
		ReadOnlyRootFilesystem   bool         `json:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation bool         `json:"allowPrivilegeEscalation"`
	}
	capabilities struct {
		Add  []string `json:"add,omitempty"`
		Drop []string `json:"drop"`
	}
	volumeMount struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		ReadOnly  bool   `json:"readOnly,omitempty"`
	}
	volume struct {
		Name     string    `json:"name"`
		HostPath *hostPath `json:"hostPath,omitempty"`
		EmptyDir *emptyDir `json:"emptyDir,omitempty"`
	}
	hostPath struct {
		Path string `json:"path"`
		Type string `json:"type"`
	}
	emptyDir struct {
		Medium string `json:"medium"`
	}
)

// PodManifest returns a Kubernetes Pod manifest (YAML) for a pinned,
// latency-critical latprobe: requests equal to limits with whole CPUs
// (Guaranteed QoS, so the static CPU manager gives it exclusive cores),
// all capabilities dropped but the backend's, a read-only root, the host
// network, huge pages when asked and the Onload devices for efvi.
func PodManifest(d Deploy) ([]byte, error) {
	d, err := d.withDefaults()
	if err != nil {
		return nil, err
	}
	c, vols := latencyContainer("latprobe", d)
	p := pod{
		APIVersion: "v1",
		Kind:       "Pod",
		Metadata:   podMeta{Name: "latprobe-" + d.Backend, Labels: map[string]string{"app": "latprobe"}},
		Spec:       podSpec{HostNetwork: true, RestartPolicy: "Never", Containers: []container{c}, Volumes: vols},
	}
	b, err := yaml.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("containerize: pod manifest: %w", err)
	}
	return withNotes(RunNotes("kubernetes", d), b), nil
}

// withNotes puts comment lines in front of a YAML document.
func withNotes(notes []string, b []byte) []byte {
	if len(notes) == 0 {
		return b
	}
	return append([]byte(strings.Join(notes, "\n")+"\n"), b...)
}

// latencyContainer is the container named name that runs latprobe with d
// (already through withDefaults), and the volumes it mounts: requests equal
// to limits with whole CPUs, all capabilities dropped but the backend's, a
// read-only root, huge pages when asked and the Onload devices for efvi.
func latencyContainer(name string, d Deploy) (container, []volume) {
	caps, _ := Capabilities(d.Backend, d.Realtime)
	res := map[string]string{"cpu": strconv.Itoa(d.CPUs), "memory": d.Memory}
	c := container{
		Name:  name,
		Image: d.Image,
		Args:  d.Args,
		SecurityContext: securityContext{
			Capabilities:           capabilities{Drop: []string{"ALL"}},
			ReadOnlyRootFilesystem: true,
		},
	}
	for _, cp := range caps {
		c.SecurityContext.Capabilities.Add = append(c.SecurityContext.Capabilities.Add, strings.TrimPrefix(cp, "CAP_"))
	}
	var vols []volume
	if d.Hugepages != "" {
		res["hugepages-2Mi"] = d.Hugepages
		vols = append(vols, volume{Name: "hugepages", EmptyDir: &emptyDir{Medium: "HugePages-2Mi"}})
		c.VolumeMounts = append(c.VolumeMounts, volumeMount{Name: "hugepages", MountPath: "/dev/hugepages"})
	}
	if usesOnloadDevices(d.Backend) && d.OnloadResource != "" {
		res[d.OnloadResource] = "1"
	}
	if d.Backend == "onload" {
		vols = append(vols, volume{Name: "libonload", HostPath: &hostPath{Path: d.OnloadLib, Type: "File"}})
		c.VolumeMounts = append(c.VolumeMounts, volumeMount{Name: "libonload", MountPath: ContainerOnloadLib, ReadOnly: true})
		c.Env = append(c.Env, envVar{Name: "LD_PRELOAD", Value: ContainerOnloadLib}, envVar{Name: "LOWLAT_BACKEND", Value: "onload"})
	}
	for _, dev := range hostDevices(d) {
		vn := strings.ReplaceAll(strings.TrimPrefix(dev, "/dev/"), "_", "-")
		vols = append(vols, volume{Name: vn, HostPath: &hostPath{Path: dev, Type: "CharDevice"}})
		c.VolumeMounts = append(c.VolumeMounts, volumeMount{Name: vn, MountPath: dev})
	}
	c.Resources = resources{Requests: res, Limits: copyMap(res)}
	return c, vols
}

func copyMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
