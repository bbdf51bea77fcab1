// Package containerize runs latprobe inside real containers and writes the
// specs that deploy it, so that the cost of a container on the latency path
// can be measured rather than guessed.
//
// A container here is an OCI bundle: a directory holding a root filesystem
// (the latprobe binary and, when it is linked dynamically, the loader, the
// libraries and the loader cache it needs, copied from the host: nothing
// else) and a config.json built
// from the OCI runtime-spec types. The config grants the capabilities the
// chosen backend needs and no others, pins the container to a cpuset,
// mounts the root read-only, passes /dev/cpu_dma_latency through when asked,
// and puts the process either in the host's network namespace or in one
// that this package creates and joins to the host (or to a second
// container's namespace) with a veth pair. The bundle runs under runc (the
// default) or podman; both are driven through their command lines, and each
// step that changes the host says which shell command it is equivalent to.
//
// Everything created is registered with an Undo at the moment it exists:
// containers (runc delete -f), namespaces (ip netns del), veth links
// (ip link del) and bundle directories. Undo.Run removes them in reverse
// order; callers defer it, so a failed or interrupted run leaves nothing.
//
// Spec (NewSpec) is pure and deterministic; the live side (Netns, Start,
// Suite) needs Linux and root. The deploy emitters (ContainerfileFor,
// RunCommand, PodManifest, MeshManifest) are pure too: they print what a
// user feeds to podman, docker or Kubernetes on a real host. MeshManifest is
// a DaemonSet of latprobe servers and monitors, one pair per node, so that a
// cluster's node-to-node latency lands in Prometheus.
package containerize
