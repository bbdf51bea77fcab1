package containerize

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// BinaryPath is where the binary sits inside the container's root.
const BinaryPath = "/latprobe"

// DMALatencyPath is the PM QoS device that keeps CPUs out of deep C-states
// while a process holds it open.
const DMALatencyPath = "/dev/cpu_dma_latency"

// DevNum is a device's major and minor numbers, as `ls -l` shows them.
type DevNum struct {
	Major, Minor int64
}

// Options shape one container. The zero value is not usable: set Binary
// and Backend.
type Options struct {
	// Binary is the host path of the executable copied into the root as
	// BinaryPath. When it is linked dynamically, its loader and libraries
	// (SharedObjects) and the loader's cache are copied in beside it, at
	// their host paths.
	Binary string
	// Args are the arguments after the binary, for example
	// {"server", "--backend", "kernel", "--addr", "10.199.100.2:7471"}.
	Args []string
	// Backend picks the capabilities (see Capabilities).
	Backend string
	// Realtime adds CAP_SYS_NICE for pinning and SCHED_FIFO. SCHED_FIFO
	// also needs real-time runtime in the container's cgroup (cgroup v1
	// with CONFIG_RT_GROUP_SCHED); without it sched_setscheduler fails
	// with EPERM even with the capability.
	Realtime bool
	// RealtimeRuntime is the container cgroup's cpu.rt_runtime_us per
	// cpu.rt_period_us of RealtimePeriod (0 means 1 s), set only with
	// Realtime. Zero gives no runtime; WriteBundle then sets it from the
	// host when the host's cgroup has real-time runtime (see
	// HostRealtime).
	RealtimeRuntime, RealtimePeriod int64
	// CPUs is the cpuset in list syntax ("2-3"); empty leaves the
	// container on every CPU.
	CPUs string
	// DMALatency passes /dev/cpu_dma_latency into the container.
	DMALatency bool
	// DMALatencyDev is the host's /dev/cpu_dma_latency numbers, needed
	// with DMALatency. It is a misc device whose minor is dynamic (10:259
	// on many hosts, not the 10:62 of old kernels), so WriteBundle reads it
	// from the host (stat -c %t:%T) when it is zero.
	DMALatencyDev DevNum
	// NetnsPath is the network namespace to join (/run/netns/NAME); empty
	// keeps the host's network namespace.
	NetnsPath string
	// Binds are extra read-write bind mounts, container path -> host path
	// (an output directory for .hlog files).
	Binds map[string]string
}

// Validate checks o without touching the host's containers.
func (o Options) Validate() error {
	if o.Binary == "" {
		return errors.New("containerize: no binary: set Options.Binary to a latprobe")
	}
	if _, err := Capabilities(o.Backend, o.Realtime); err != nil {
		return err
	}
	if err := checkCPUList("CPUs", o.CPUs); err != nil {
		return err
	}
	if o.DMALatency && o.DMALatencyDev == (DevNum{}) {
		return errors.New("containerize: DMALatency without DMALatencyDev: WriteBundle reads it from the host's " + DMALatencyPath)
	}
	for c := range o.Binds {
		if !strings.HasPrefix(c, "/") || c == "/" || c == BinaryPath {
			return fmt.Errorf("containerize: bind target %q: want an absolute path other than / and %s", c, BinaryPath)
		}
	}
	return nil
}

// NewSpec returns the OCI runtime config for o. It is pure: the same
// options give the same spec.
func NewSpec(o Options) (*specs.Spec, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	caps, _ := Capabilities(o.Backend, o.Realtime)
	capSet := func() []string { return append([]string{}, caps...) }
	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{
			User: specs.User{UID: 0, GID: 0},
			Args: append([]string{BinaryPath}, o.Args...),
			Env:  []string{"PATH=/"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  capSet(),
				Effective: capSet(),
				Permitted: capSet(),
			},
			NoNewPrivileges: true,
		},
		Hostname: "latprobe",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=16m"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
			},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	for _, c := range sortedKeys(o.Binds) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: c, Type: "bind", Source: o.Binds[c], Options: []string{"rbind", "rw"}})
	}
	if o.NetnsPath != "" {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: o.NetnsPath})
	}
	if o.CPUs != "" || (o.Realtime && o.RealtimeRuntime > 0) {
		s.Linux.Resources.CPU = &specs.LinuxCPU{Cpus: o.CPUs}
	}
	if o.Realtime && o.RealtimeRuntime > 0 {
		period := uint64(o.RealtimePeriod)
		if period == 0 {
			period = 1_000_000
		}
		runtime := o.RealtimeRuntime
		s.Linux.Resources.CPU.RealtimeRuntime, s.Linux.Resources.CPU.RealtimePeriod = &runtime, &period
	}
	if o.DMALatency {
		major, minor := o.DMALatencyDev.Major, o.DMALatencyDev.Minor
		mode := os.FileMode(0o600)
		s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: DMALatencyPath, Type: "c", Major: major, Minor: minor, FileMode: &mode})
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rw"})
	}
	return s, nil
}

// Bundle is an OCI bundle directory on disk: Dir/config.json and
// Dir/rootfs/latprobe (with, for a dynamically linked binary, its loader
// and libraries under Dir/rootfs at their host paths).
type Bundle struct {
	Dir  string
	Spec *specs.Spec
	// SharedObjects are the host files copied into the root for a
	// dynamically linked binary (its loader first); nil for a static one.
	SharedObjects []string
}

// WriteBundle creates a new bundle directory under parent (os.TempDir when
// empty) for o and registers its removal (rm -r DIR) with u. With
// DMALatency and no DMALatencyDev, it takes the numbers of the host's
// /dev/cpu_dma_latency.
func WriteBundle(u *Undo, parent string, o Options) (*Bundle, error) {
	if o.DMALatency && o.DMALatencyDev == (DevNum{}) {
		d, err := HostDevNum(DMALatencyPath)
		if err != nil {
			return nil, err
		}
		o.DMALatencyDev = d
	}
	if o.Realtime && o.RealtimeRuntime == 0 {
		if rt, err := HostRealtime(); err == nil {
			o.RealtimeRuntime, o.RealtimePeriod = rt.Share()
		}
	}
	s, err := NewSpec(o)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(parent, BundlePrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, fmt.Errorf("containerize: bundle dir: %w", err)
	}
	u.Push("rm -r "+dir, func() error { return os.RemoveAll(dir) })
	for _, d := range []string{"proc", "dev", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, "rootfs", d), 0o755); err != nil {
			return nil, fmt.Errorf("containerize: bundle rootfs: %w", err)
		}
	}
	for _, c := range sortedKeys(o.Binds) {
		if err := os.MkdirAll(filepath.Join(dir, "rootfs", c), 0o755); err != nil {
			return nil, fmt.Errorf("containerize: bind target %s: %w", c, err)
		}
	}
	if err := copyFile(filepath.Join(dir, "rootfs", BinaryPath), o.Binary, 0o755); err != nil {
		return nil, err
	}
	objs, err := SharedObjects(o.Binary)
	if err != nil {
		return nil, err
	}
	if err := copySharedObjects(filepath.Join(dir, "rootfs"), objs); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("containerize: config.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		return nil, fmt.Errorf("containerize: config.json: %w", err)
	}
	return &Bundle{Dir: dir, Spec: s, SharedObjects: objs}, nil
}

// Rootfs is the bundle's root filesystem directory.
func (b *Bundle) Rootfs() string { return filepath.Join(b.Dir, "rootfs") }

func copyFile(dst, src string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("containerize: binary: %w", err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		return fmt.Errorf("containerize: binary into rootfs: %w", err)
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
