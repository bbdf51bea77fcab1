package main

// commands is latprobe's command table. A new command lives in its own file
// and adds one line here.
var commands = []command{
	{"run", "echo server and client in one process on 127.0.0.1 (the default)", cmdRun},
	{"server", "an echo server for latprobe client (--addr repeatable: several UDP addresses, one thread)", cmdServer},
	{"client", "measure round trips against a latprobe server (--peer HOST:PORT, repeatable)", cmdClient},
	{"doctor", "check this host for what spoils latency, and how to fix it", cmdDoctor},
	{"spec", "print a Containerfile and run line, or a Kubernetes Pod, for latprobe", cmdSpec},
	{"suite", "the same ping-pong on the host and in containers, side by side", cmdSuite},
	{"compare", "latprobe and sockperf on the same loopback path, interleaved, side by side", cmdCompare},
	{"monitor", "probe a server continuously and export Prometheus metrics", cmdMonitor},
	{"jitter", "spin a pinned thread per CPU and say what took the CPU from it, and for how long", cmdJitter},
	{"rate", "flood a latprobe server one way and report what it received: the rate a receiver keeps up with", cmdRate},
}
