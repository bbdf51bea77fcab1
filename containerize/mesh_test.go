package containerize

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// splitDocs splits a multi-document YAML stream.
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func TestMeshManifest(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Mesh
		caps []corev1.Capability
	}{
		{"dns", Mesh{Deploy: Deploy{Backend: "kernel"}}, nil},
		{"busypoll-peers", Mesh{Deploy: Deploy{Backend: "busypoll", CPUs: 2, Realtime: true}, Name: "lat", Port: 9000, MetricsPort: 9100, MPS: 50,
			Peers: []string{"10.0.0.1:9000", "10.0.0.2:9000"}}, []corev1.Capability{"NET_ADMIN", "SYS_NICE"}},
		{"afxdp", Mesh{Deploy: Deploy{Backend: "afxdp", Hugepages: "1Gi"}}, []corev1.Capability{"BPF", "IPC_LOCK", "NET_ADMIN", "NET_RAW"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := MeshManifest(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			m, _ := tc.m.withDefaults()
			docs := splitDocs(b)
			wantDocs := 2
			if len(tc.m.Peers) > 0 {
				wantDocs = 1 // no Service with a fixed peer list
			}
			if len(docs) != wantDocs {
				t.Fatalf("%d documents, want %d:\n%s", len(docs), wantDocs, b)
			}
			var ds appsv1.DaemonSet
			if err := yaml.UnmarshalStrict(docs[len(docs)-1], &ds); err != nil {
				t.Fatalf("manifest does not parse as an apps/v1 DaemonSet: %v\n%s", err, b)
			}
			if ds.Kind != "DaemonSet" || ds.APIVersion != "apps/v1" || ds.Name != m.Name {
				t.Fatalf("kind %q apiVersion %q name %q", ds.Kind, ds.APIVersion, ds.Name)
			}
			tpl := ds.Spec.Template
			if ds.Spec.Selector == nil || ds.Spec.Selector.MatchLabels["app"] != m.Name || tpl.Labels["app"] != m.Name {
				t.Errorf("selector %v does not match template labels %v", ds.Spec.Selector, tpl.Labels)
			}
			for k, v := range map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(m.MetricsPort), "prometheus.io/path": "/metrics"} {
				if tpl.Annotations[k] != v {
					t.Errorf("annotation %s = %q, want %q", k, tpl.Annotations[k], v)
				}
			}
			spec := tpl.Spec
			if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
				t.Errorf("hostNetwork %v dnsPolicy %q: want the host network and cluster DNS", spec.HostNetwork, spec.DNSPolicy)
			}
			if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists {
				t.Errorf("tolerations %+v: want every taint tolerated", spec.Tolerations)
			}
			pod := corev1.Pod{Spec: spec}
			if q := qosClass(&pod); q != corev1.PodQOSGuaranteed {
				t.Fatalf("QoS %s, want Guaranteed:\n%s", q, b)
			}
			if len(spec.Containers) != 2 || spec.Containers[0].Name != "server" || spec.Containers[1].Name != "monitor" {
				t.Fatalf("containers %d, want server and monitor", len(spec.Containers))
			}
			srv, mon := spec.Containers[0], spec.Containers[1]
			cpu := srv.Resources.Limits[corev1.ResourceCPU]
			if cpu.MilliValue() != int64(max(tc.m.CPUs, 1))*1000 {
				t.Errorf("server cpu %s, want %d whole CPUs", cpu.String(), max(tc.m.CPUs, 1))
			}
			if mc := mon.Resources.Limits[corev1.ResourceCPU]; mc.MilliValue()%1000 != 0 {
				t.Errorf("monitor cpu %s, want whole CPUs", mc.String())
			}
			// Ports: the server's UDP port and the monitor's metrics port,
			// each on the node (hostPort equal to containerPort, as the
			// host network requires).
			for _, p := range []struct {
				c     corev1.Container
				port  int
				proto corev1.Protocol
			}{{srv, m.Port, corev1.ProtocolUDP}, {mon, m.MetricsPort, corev1.ProtocolTCP}} {
				if len(p.c.Ports) != 1 || int(p.c.Ports[0].ContainerPort) != p.port || p.c.Ports[0].HostPort != p.c.Ports[0].ContainerPort || p.c.Ports[0].Protocol != p.proto {
					t.Errorf("%s ports %+v, want %s %d on the host", p.c.Name, p.c.Ports, p.proto, p.port)
				}
			}
			// Capabilities: the backend's on the server, none on the monitor.
			for _, c := range []struct {
				c    corev1.Container
				caps []corev1.Capability
			}{{srv, tc.caps}, {mon, nil}} {
				sc := c.c.SecurityContext
				if sc == nil || sc.Capabilities == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Fatalf("%s security context %+v: want capabilities and a read-only root", c.c.Name, sc)
				}
				if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, c.caps) {
					t.Errorf("%s capabilities drop %v add %v, want drop [ALL] add %v", c.c.Name, sc.Capabilities.Drop, sc.Capabilities.Add, c.caps)
				}
			}
			if _, ok := srv.Resources.Limits["hugepages-2Mi"]; ok != (tc.m.Hugepages != "") {
				t.Errorf("server hugepages limit %v, asked %q", ok, tc.m.Hugepages)
			}
			// The monitor: probes peers at the rate, serves metrics, and
			// skips its own node, known through the downward API.
			args := strings.Join(mon.Args, " ")
			for _, want := range []string{"monitor ", "--mps " + strconv.Itoa(m.MPS), "--listen :" + strconv.Itoa(m.MetricsPort), "--self $(NODE_IP)"} {
				if !strings.Contains(args, want) {
					t.Errorf("monitor args %q lack %q", args, want)
				}
			}
			env := map[string]string{}
			for _, e := range mon.Env {
				if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
					env[e.Name] = e.ValueFrom.FieldRef.FieldPath
				}
			}
			if env["NODE_IP"] != "status.hostIP" || env["POD_NAMESPACE"] != "metadata.namespace" {
				t.Errorf("monitor env %v: want NODE_IP from status.hostIP and POD_NAMESPACE", env)
			}
			if !slices.Equal(srv.Args, []string{"server", "--backend", tc.m.Backend, "--addr", "0.0.0.0:" + strconv.Itoa(m.Port)}) {
				t.Errorf("server args %q", srv.Args)
			}
			if len(tc.m.Peers) > 0 {
				for _, p := range tc.m.Peers {
					if !strings.Contains(args, "--peer "+p) {
						t.Errorf("monitor args %q lack --peer %s", args, p)
					}
				}
				return
			}
			if want := "--peers-dns " + m.Name + ".$(POD_NAMESPACE).svc:" + strconv.Itoa(m.Port); !strings.Contains(args, want) {
				t.Errorf("monitor args %q lack %q", args, want)
			}
			var svc corev1.Service
			if err := yaml.UnmarshalStrict(docs[0], &svc); err != nil {
				t.Fatalf("first document does not parse as a core/v1 Service: %v\n%s", err, docs[0])
			}
			if svc.Kind != "Service" || svc.Name != m.Name || svc.Spec.ClusterIP != corev1.ClusterIPNone || svc.Spec.Selector["app"] != m.Name {
				t.Errorf("service %s %s clusterIP %q selector %v: want a headless Service selecting the pods", svc.Kind, svc.Name, svc.Spec.ClusterIP, svc.Spec.Selector)
			}
			if len(svc.Spec.Ports) != 1 || int(svc.Spec.Ports[0].Port) != m.Port || svc.Spec.Ports[0].Protocol != corev1.ProtocolUDP {
				t.Errorf("service ports %+v, want UDP %d", svc.Spec.Ports, m.Port)
			}
		})
	}
}

func TestMeshManifestRejects(t *testing.T) {
	for _, m := range []Mesh{
		{Deploy: Deploy{Backend: "dpdk"}},
		{Deploy: Deploy{Backend: "kernel"}, Name: "Not_A_Label"},
		{Deploy: Deploy{Backend: "kernel"}, Port: 70000},
		{Deploy: Deploy{Backend: "kernel"}, MPS: -1},
		{Deploy: Deploy{Backend: "kernel"}, Peers: []string{"10.0.0.1"}},
	} {
		if _, err := MeshManifest(m); err == nil {
			t.Errorf("%+v: no error", m)
		}
	}
}
