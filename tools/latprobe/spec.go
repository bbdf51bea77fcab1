package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/lowlat/lowlat/containerize"
	"github.com/lowlat/lowlat/internal/cli"
)

// cmdSpec prints what a user needs to deploy latprobe with their own
// tools: a Containerfile and a run command line, or a Kubernetes Pod, or
// (--mesh) a Kubernetes DaemonSet that measures node-to-node latency.
func cmdSpec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("spec", flag.ContinueOnError)
	engine := fs.String("engine", "podman", "podman, docker or kubernetes")
	var d containerize.Deploy
	fs.StringVar(&d.Backend, "backend", "kernel", "backend the container is set up for: kernel, busypoll, afxdp, efvi, onload")
	fs.IntVar(&d.CPUs, "cpus", 1, "whole CPUs for the container")
	fs.StringVar(&d.CPUSet, "cpuset", "", "pin to these CPUs, such as 2-3 (podman, docker)")
	fs.StringVar(&d.Hugepages, "hugepages", "", "2 MiB huge page memory to ask for, such as 1Gi")
	fs.BoolVar(&d.Realtime, "realtime", false, "add CAP_SYS_NICE for pinning and SCHED_FIFO")
	fs.BoolVar(&d.DMALatency, "dma-latency", false, "pass /dev/cpu_dma_latency through")
	fs.StringVar(&d.Image, "image", "latprobe:latest", "image name")
	fs.StringVar(&d.OnloadResource, "onload-resource", "", "kubernetes, efvi and onload: the Onload device plugin's resource name (as in the nodes' capacity) to ask for instead of hostPath device volumes, which need a privileged pod")
	fs.StringVar(&d.OnloadLib, "onload-lib", "", "onload: the host's libonload.so, mounted read-only and preloaded (default "+containerize.DefaultOnloadLib+")")
	mesh := fs.Bool("mesh", false, "kubernetes: a DaemonSet of a server and a monitor on every node, node-to-node latency for Prometheus")
	var m containerize.Mesh
	fs.IntVar(&m.MPS, "mps", 100, "--mesh: probes per second from each node to each other node")
	fs.IntVar(&m.Port, "port", 7471, "--mesh: the servers' UDP port on every node")
	fs.IntVar(&m.MetricsPort, "metrics-port", 9464, "--mesh: the monitors' /metrics port on every node")
	peers := fs.String("peers", "", "--mesh: comma-separated HOST:PORT list every monitor probes (default: found through a headless Service)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if parsedOnly(ctx) {
		stdout = io.Discard // checks as usual, prints nothing
	}
	if !imageRef.MatchString(d.Image) || len(d.Image) > 255 {
		return usagef("--image %s: want an image reference such as registry.example.com/latprobe:1.0", cli.Quote(d.Image))
	}
	if d.CPUs <= 0 {
		return usagef("--cpus %d: want a whole number of CPUs, 1 or more", d.CPUs)
	}
	if err := d.Validate(); err != nil {
		return deployUsage(err)
	}
	if *mesh {
		if *engine != "kubernetes" {
			return usagef("--mesh: only with --engine kubernetes")
		}
		m.Deploy = d
		if *peers != "" {
			m.Peers = strings.Split(*peers, ",")
		}
		b, err := containerize.MeshManifest(m)
		if err != nil {
			return usagef("%v", err)
		}
		_, err = stdout.Write(b)
		return err
	}
	switch *engine {
	case "podman", "docker":
		line, err := containerize.RunCommand(*engine, d)
		if err != nil {
			return usagef("%v", err)
		}
		_, err = fmt.Fprintf(stdout, "# Containerfile\n%s\n# build and run\n%s build -t %s -f Containerfile .\n%s%s\n",
			containerize.ContainerfileFor(d.Backend), *engine, containerize.ShellQuote([]string{d.Image}), notes(containerize.RunNotes(*engine, d), d.Realtime), containerize.ShellQuote(line))
		return err
	case "kubernetes":
		b, err := containerize.PodManifest(d)
		if err != nil {
			return usagef("%v", err)
		}
		_, err = stdout.Write(b)
		return err
	}
	return usagef("--engine %q: want podman, docker or kubernetes", *engine)
}

// imageRef is what --image may be: an image reference (a registry host
// and port, a path, a tag, a digest), nothing a shell line could read
// otherwise.
var imageRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$`)

// notes are the comment lines to print before a run command line, and,
// with --realtime, whether this host could give a container real-time
// runtime.
func notes(lines []string, realtime bool) string {
	if realtime {
		if _, err := containerize.HostRealtime(); err != nil {
			lines = append(lines, "# on this host: "+oneLine(err.Error()))
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

// deployFlags are spec's flags for the containerize.Deploy fields.
var deployFlags = map[string]string{"CPUs": "--cpus", "CPUSet": "--cpuset", "Hugepages": "--hugepages", "Backend": "--backend", "OnloadResource": "--onload-resource", "OnloadLib": "--onload-lib"}

// deployUsage turns an invalid Deploy field into a usage error naming the
// flag that set it.
func deployUsage(err error) error {
	var fe *containerize.FieldError
	if errors.As(err, &fe) {
		if flag, ok := deployFlags[fe.Field]; ok {
			return usagef("%s %s: %v", flag, fe.Value, fe.Err)
		}
	}
	return usagef("%v", err)
}
