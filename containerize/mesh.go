package containerize

import (
	"fmt"
	"net"
	"regexp"
	"strconv"

	"sigs.k8s.io/yaml"
)

// Mesh describes latprobe deployed across a Kubernetes cluster to measure
// node-to-node latency: on every node, a latprobe server and a latprobe
// monitor that probes the servers on the other nodes and exports what it
// measures for Prometheus. The zero value, with Backend set, is a kernel
// (or Backend) server on UDP port 7471 and a monitor sending 100 probes a
// second to every peer, found through a headless Service, with metrics on
// port 9464.
type Mesh struct {
	// Deploy sets up each node's server container: Backend (and its
	// capabilities), CPUs, Memory, Hugepages, Realtime, DMALatency and
	// Image. Args is ignored.
	Deploy
	// Name names the DaemonSet, the headless Service and the pods' app
	// label ("" means "latprobe-mesh").
	Name string
	// Port is the UDP port each server listens on, on its node's address
	// (0 means 7471).
	Port int
	// MetricsPort is the port each monitor serves /metrics on, on its
	// node's address (0 means 9464).
	MetricsPort int
	// MPS is the probes per second each monitor sends to each peer (0
	// means 100).
	MPS int
	// Peers, when set, is the fixed list of servers (HOST:PORT, usually
	// every node's address and Port) that every monitor probes, and no
	// Service is written. Empty means the monitors find their peers in the
	// DNS records of the headless Service.
	Peers []string
}

// dnsLabel is what Kubernetes accepts as a Service name (RFC 1035 label).
var dnsLabel = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)

func (m Mesh) withDefaults() (Mesh, error) {
	d, err := m.Deploy.withDefaults()
	if err != nil {
		return m, err
	}
	m.Deploy = d
	if m.Name == "" {
		m.Name = "latprobe-mesh"
	}
	if !dnsLabel.MatchString(m.Name) {
		return m, fmt.Errorf("containerize: mesh name %q: want a DNS label (lower case letters, digits, '-')", m.Name)
	}
	if m.Port == 0 {
		m.Port = 7471
	}
	if m.MetricsPort == 0 {
		m.MetricsPort = 9464
	}
	for _, p := range []int{m.Port, m.MetricsPort} {
		if p < 1 || p > 65535 {
			return m, fmt.Errorf("containerize: port %d: want 1 to 65535", p)
		}
	}
	if m.MPS == 0 {
		m.MPS = 100
	}
	if m.MPS < 1 || m.MPS > 100_000 {
		return m, fmt.Errorf("containerize: %d probes per second: want 1 to 100000", m.MPS)
	}
	for _, p := range m.Peers {
		if _, port, err := net.SplitHostPort(p); err != nil || port == "" {
			return m, fmt.Errorf("containerize: peer %q: want HOST:PORT", p)
		}
	}
	m.Deploy.Args = []string{"server", "--backend", m.Backend, "--addr", "0.0.0.0:" + strconv.Itoa(m.Port)}
	return m, nil
}

// The DaemonSet and the Service, in the field names of apps/v1 and core/v1
// (see pod above for why not k8s.io/api).
type (
	daemonSet struct {
		APIVersion string        `json:"apiVersion"`
		Kind       string        `json:"kind"`
		Metadata   podMeta       `json:"metadata"`
		Spec       daemonSetSpec `json:"spec"`
	}
	daemonSetSpec struct {
		Selector labelSelector `json:"selector"`
		Template podTemplate   `json:"template"`
	}
	labelSelector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	}
	podTemplate struct {
		Metadata podMeta `json:"metadata"`
		Spec     podSpec `json:"spec"`
	}
	toleration struct {
		Operator string `json:"operator"`
	}
	envVar struct {
		Name      string        `json:"name"`
		Value     string        `json:"value,omitempty"`
		ValueFrom *envVarSource `json:"valueFrom,omitempty"`
	}
	envVarSource struct {
		FieldRef fieldRef `json:"fieldRef"`
	}
	fieldRef struct {
		FieldPath string `json:"fieldPath"`
	}
	containerPort struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
		HostPort      int    `json:"hostPort"`
		Protocol      string `json:"protocol"`
	}
	service struct {
		APIVersion string      `json:"apiVersion"`
		Kind       string      `json:"kind"`
		Metadata   podMeta     `json:"metadata"`
		Spec       serviceSpec `json:"spec"`
	}
	serviceSpec struct {
		ClusterIP                string            `json:"clusterIP"`
		PublishNotReadyAddresses bool              `json:"publishNotReadyAddresses"`
		Selector                 map[string]string `json:"selector"`
		Ports                    []servicePort     `json:"ports"`
	}
	servicePort struct {
		Name     string `json:"name"`
		Port     int    `json:"port"`
		Protocol string `json:"protocol"`
	}
)

// monitorResources are the monitor container's requests and limits: one
// whole CPU, so that under the static CPU manager policy its probes are
// timed on an exclusive core and the cluster's other work does not show up
// as network latency.
var monitorResources = map[string]string{"cpu": "1", "memory": "64Mi"}

// MeshManifest returns the Kubernetes manifests (YAML, documents separated
// by "---") of a node-to-node latency mesh: a DaemonSet whose pod, on every
// node, runs a latprobe server and a latprobe monitor, and, unless m.Peers
// is set, the headless Service the monitors find their peers through.
//
// How the monitors find each other: the pod runs on the host network
// (hostNetwork: true), so each server listens on its node's own address and
// the pod's IP is the node's IP. The headless Service (clusterIP: None)
// selects the DaemonSet's pods, so its DNS name, NAME.NAMESPACE.svc,
// resolves to one A (or AAAA) record per node. Each monitor runs
// `latprobe monitor --peers-dns NAME.$(POD_NAMESPACE).svc:PORT --self
// $(NODE_IP)`: it resolves the name every 30 s, probes every address but
// its own node's (the downward API gives it status.hostIP), and starts or
// stops probing as nodes join and leave. dnsPolicy ClusterFirstWithHostNet
// lets a host-network pod resolve cluster names. Every series carries a
// peer label, and Prometheus adds the scraping node's instance label, so
// each (instance, peer) pair is one node-to-node path.
//
// Both containers have requests equal to limits with whole CPUs (Guaranteed
// QoS: exclusive cores under the static CPU manager), drop every capability
// but what the server's backend needs (Capabilities; the monitor uses
// kernel sockets and needs none) and have a read-only root. The pod
// template carries the prometheus.io/scrape, port and path annotations
// that the usual Prometheus kubernetes-pods scrape configuration reads, and
// tolerates every taint so that tainted nodes are measured too.
func MeshManifest(m Mesh) ([]byte, error) {
	m, err := m.withDefaults()
	if err != nil {
		return nil, err
	}
	labels := map[string]string{"app": m.Name}
	server, vols := latencyContainer("server", m.Deploy)
	server.Ports = []containerPort{{Name: "probe", ContainerPort: m.Port, HostPort: m.Port, Protocol: "UDP"}}

	margs := []string{"monitor"}
	if len(m.Peers) == 0 {
		margs = append(margs, "--peers-dns", m.Name+".$(POD_NAMESPACE).svc:"+strconv.Itoa(m.Port))
	}
	for _, p := range m.Peers {
		margs = append(margs, "--peer", p)
	}
	margs = append(margs, "--self", "$(NODE_IP)", "--mps", strconv.Itoa(m.MPS), "--listen", ":"+strconv.Itoa(m.MetricsPort))
	monitor := container{
		Name:  "monitor",
		Image: m.Image,
		Args:  margs,
		Env: []envVar{
			{Name: "NODE_IP", ValueFrom: &envVarSource{FieldRef: fieldRef{FieldPath: "status.hostIP"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &envVarSource{FieldRef: fieldRef{FieldPath: "metadata.namespace"}}},
		},
		Ports:     []containerPort{{Name: "metrics", ContainerPort: m.MetricsPort, HostPort: m.MetricsPort, Protocol: "TCP"}},
		Resources: resources{Requests: copyMap(monitorResources), Limits: copyMap(monitorResources)},
		SecurityContext: securityContext{
			Capabilities:           capabilities{Drop: []string{"ALL"}},
			ReadOnlyRootFilesystem: true,
		},
	}

	ds := daemonSet{
		APIVersion: "apps/v1",
		Kind:       "DaemonSet",
		Metadata:   podMeta{Name: m.Name, Labels: labels},
		Spec: daemonSetSpec{
			Selector: labelSelector{MatchLabels: labels},
			Template: podTemplate{
				Metadata: podMeta{
					Labels: copyMap(labels),
					Annotations: map[string]string{
						"prometheus.io/scrape": "true",
						"prometheus.io/port":   strconv.Itoa(m.MetricsPort),
						"prometheus.io/path":   "/metrics",
					},
				},
				Spec: podSpec{
					HostNetwork:   true,
					DNSPolicy:     "ClusterFirstWithHostNet",
					RestartPolicy: "Always",
					Tolerations:   []toleration{{Operator: "Exists"}},
					Containers:    []container{server, monitor},
					Volumes:       vols,
				},
			},
		},
	}
	var out []byte
	if len(m.Peers) == 0 {
		svc := service{
			APIVersion: "v1",
			Kind:       "Service",
			Metadata:   podMeta{Name: m.Name, Labels: copyMap(labels)},
			Spec: serviceSpec{
				ClusterIP: "None",
				// Every node's server is a peer from the moment its pod
				// runs; there is no readiness to wait for.
				PublishNotReadyAddresses: true,
				Selector:                 copyMap(labels),
				Ports:                    []servicePort{{Name: "probe", Port: m.Port, Protocol: "UDP"}},
			},
		}
		b, err := yaml.Marshal(svc)
		if err != nil {
			return nil, fmt.Errorf("containerize: mesh service: %w", err)
		}
		out = append(b, "---\n"...)
	}
	b, err := yaml.Marshal(ds)
	if err != nil {
		return nil, fmt.Errorf("containerize: mesh daemonset: %w", err)
	}
	return withNotes(RunNotes("kubernetes", m.Deploy), append(out, b...)), nil
}
