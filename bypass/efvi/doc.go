// Package efvi is lowlat's ef_vi backend: kernel bypass on AMD (Solarflare)
// X2 and X3 adapters through Onload's user-level ef_vi library (libciul).
//
// ef_vi hands a process one or more virtual interfaces (VIs) of the adapter.
// A VI is a transmit ring, a receive ring and an event queue mapped into the
// process; the process registers its own packet memory with the adapter's
// IOMMU (a "memory region" inside a "protection domain"), posts empty buffers
// on the receive ring, and asks the driver to steer flows to the VI with
// filters (here: one IPv4 UDP filter for the bound address and port, one per
// joined multicast group, and one IPv4 TCP filter per TCP flow the stack
// steers). The adapter then writes frames into those buffers and reports
// each one as an RX event on the event queue; transmits are
// descriptors (or CTPIO writes straight into the adapter) whose completions
// come back as TX events. X3 adapters (EFCT) receive differently: they fill
// large shared buffers themselves and report RX_REF events that name a
// packet inside them, which the process reads and then releases.
//
// The backend opens two VIs in one protection domain: one that only
// receives and one that only transmits, each with its own event queue, so
// that a reader and a writer goroutine never share an ef_vi object. The
// ef_vi calls live in one cgo file built only with the tags efvi and cgo;
// it crosses into C once per batch (one poll returns many compact event
// records, one call posts many buffers or sends many frames). Everything
// else -- buffer bookkeeping, event handling, Ethernet/IPv4/UDP framing
// (package bypass/internal/frame), counters, timeouts and Close -- is plain
// Go written against two small interfaces, rxQueue and txQueue, and is
// tested against an in-memory fake in the default build.
//
// Without the tags the package still builds (pure Go) and its Backend
// reports ErrNoEFVI, which wraps backend.ErrNotSupported so that auto
// selection moves on to afxdp. See docs/efvi.md for building with ef_vi.
package efvi
