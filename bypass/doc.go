// Package bypass is lowlat's socket API: UDP and TCP endpoints for
// latency-critical Go services, over whichever transport is fastest on the
// host.
//
// A backend is chosen at run time by name, or by "auto", which tries them
// fastest first and records why it passed over each one it could not use:
//
//	efvi      Solarflare/AMD ef_vi: the NIC's queues mapped into the process
//	          (built only with -tags efvi, on a host with Onload).
//	afxdp     AF_XDP: an XDP program steers the application's flows into a
//	          shared-memory ring; Ethernet, IPv4 and UDP are handled in Go.
//	busypoll  kernel sockets read by spinning on recvfrom(MSG_DONTWAIT), with
//	          SO_BUSY_POLL and SO_PREFER_BUSY_POLL so the kernel polls the NIC.
//	kernel    plain blocking kernel sockets.
//
// Every backend honours the same contract (see package backend): buffers
// belong to the caller, a read and a write may proceed concurrently, the hot
// paths allocate nothing and take no locks, and a connection in spin mode
// never sleeps. Spin on a goroutine locked to its OS thread, on a CPU that
// nothing else needs (see package affinity).
//
// A program launched by onload-run is configured by LOWLAT_* environment
// variables; OptionsFromEnv reads them.
package bypass
