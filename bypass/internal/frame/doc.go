// Package frame builds and parses the Ethernet II + IPv4 + UDP frames that a
// userspace network path (AF_XDP, ef_vi) sends and receives in place of the
// kernel's UDP stack. A Template holds the headers of one flow with the
// constant parts of the IPv4 header checksum and of the UDP checksum
// (pseudo-header included) summed in advance, so building a frame is a
// 42-byte copy, a few additions and one pass over the payload; it can write
// the headers in front of a payload already placed at offset HeaderLen of a
// frame buffer. Filter.Parse does what the kernel's receive path would for
// one UDP endpoint: it accepts only unfragmented IPv4 without options, with
// valid header and UDP checksums, consistent lengths and a destination (MAC,
// address or joined multicast group, port, VLAN) that belongs to the
// endpoint, and otherwise returns a Reason that Counters tallies into the
// Drop fields of backend.Stats. The checksum helpers implement RFC 1071 with
// eight bytes per 64-bit add-with-carry, and RFC 1624 incremental updates.
// ParseTCP and AppendTCP are the TCP segment codec the user-space TCP
// builds on: the header, the options it negotiates (MSS, window scale,
// SACK-permitted, SACK blocks, timestamps; unknown ones skipped by length,
// malformed ones an error) and the checksum over the IPv4 pseudo-header.
//
// Nothing here makes a system call, allocates or formats on the per-packet
// path; errors are package-level values. Slices passed in are read or
// written only during the call, except Packet.Payload and TCPSegment.Payload,
// which alias the parsed frame or segment.
package frame
