// Package afxdp is lowlat's AF_XDP backend: kernel bypass on any Linux NIC,
// in pure Go.
//
// An AF_XDP socket shares a region of the process's memory (the UMEM, cut
// into fixed-size frames) with the kernel through four single-producer,
// single-consumer rings: the application hands empty frames to the kernel
// on the fill ring, the kernel returns them full on the RX ring; the
// application queues frames to send on the TX ring and gets them back on the
// completion ring. Each ring is a power-of-two array of descriptors with a
// producer and a consumer index in shared memory; the side that owns an
// index publishes it with an atomic store after writing the descriptors,
// and keeps a cached copy of the other side's index so that it reads shared
// memory only when the cached view runs out.
//
// A small XDP program, assembled at run time with cilium/ebpf's asm package,
// runs on every frame the interface receives. It looks up the frame's IPv4
// destination address, UDP or TCP destination port and protocol in a hash
// map holding only the flows this process opened (its bound port, multicast
// groups it joined, and the TCP ports its stack steers) and redirects those
// to the socket of the receiving queue through an XSKMAP; every other frame
// (ARP, ICMP, TCP or UDP to other ports) goes on to the kernel's
// stack, so the host keeps working on the same interface. The program is
// attached through a bpf_link, which the kernel detaches when the last file
// descriptor closes, including when the process is killed.
//
// Received frames are parsed in Go (package bypass/internal/frame): a frame
// that is truncated, fragmented, carries IP options, fails a checksum or is
// addressed elsewhere is dropped and counted, never handed on. Frames to
// send are built in place in the UMEM with the IPv4 and UDP checksums
// computed in software; the destination MAC comes from the kernel's route
// and neighbour tables (package bypass/internal/nexthop), once per
// destination.
package afxdp
