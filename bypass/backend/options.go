package backend

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lowlat/lowlat/internal/cli"
)

// WaitMode says how a read waits for data.
type WaitMode int

const (
	// WaitDefault lets the backend choose: block for kernel, spin for the rest.
	WaitDefault WaitMode = iota
	// WaitBlock sleeps in the kernel until data arrives.
	WaitBlock
	// WaitSpin polls without sleeping. Spin on a goroutine locked to an OS
	// thread (runtime.LockOSThread) that has a CPU to itself: a spinning
	// reader holds its thread and CPU for as long as it waits.
	WaitSpin
)

func (w WaitMode) String() string {
	switch w {
	case WaitDefault:
		return "default"
	case WaitBlock:
		return "block"
	case WaitSpin:
		return "spin"
	}
	return "WaitMode(" + strconv.Itoa(int(w)) + ")"
}

// ParseWaitMode parses "block", "spin" or "default".
func ParseWaitMode(s string) (WaitMode, error) {
	switch s {
	case "", "default":
		return WaitDefault, nil
	case "block":
		return WaitBlock, nil
	case "spin":
		return WaitSpin, nil
	}
	return 0, fmt.Errorf("wait mode %q: want block or spin", s)
}

// Limits on Options fields.
const (
	MaxBatch       = 1024
	DefaultBatch   = 32
	DefaultBusyUS  = 50
	DefaultBudget  = 8
	MaxBusyPollUS  = 1_000_000
	MaxBusyBudget  = 1024
	MaxUDPPayload  = 65507
	DefaultBacklog = 128
)

// Options configure a connection. The zero value is valid and means: pick
// the fastest backend that works (auto), the backend's default wait mode,
// no read timeout, batches of 32, and the busy-poll defaults below.
type Options struct {
	// Backend names the backend: "auto" (or ""), "onload", "efvi",
	// "afxdp", "busypoll" or "kernel".
	Backend string
	// Wait is the wait mode; WaitDefault lets the backend choose.
	Wait WaitMode
	// ReadTimeout bounds each read; zero waits forever. A spinning read
	// checks its clock every 64 empty polls, so it returns within
	// microseconds of the timeout; a blocking kernel socket's rides on
	// SO_RCVTIMEO, which the kernel rounds up to its timer tick (4 ms at
	// HZ=250) and may overshoot by one more: a 1 µs timeout fires 4 to 10
	// ms late there.
	ReadTimeout time.Duration
	// WriteTimeout bounds how long a write waits for room to send (a TCP
	// peer that stopped reading); zero waits until Close. A TCP write that
	// times out may have sent part of its message: close the stream.
	WriteTimeout time.Duration
	// DialTimeout bounds DialTCP's connect; zero leaves it to the kernel
	// (about two minutes of SYN retries).
	DialTimeout time.Duration
	// BatchSize is the most messages one ReadBatch or WriteBatch moves.
	// Zero means DefaultBatch.
	BatchSize int
	// BusyPollUS is SO_BUSY_POLL in microseconds for busypoll sockets.
	// Zero means DefaultBusyUS; negative leaves the option unset.
	BusyPollUS int
	// BusyPollBudget is SO_BUSY_POLL_BUDGET. Zero means DefaultBudget;
	// negative leaves the option unset.
	BusyPollBudget int
	// RecvBuffer and SendBuffer set SO_RCVBUF and SO_SNDBUF when non-zero.
	RecvBuffer, SendBuffer int
	// Timestamps stamps every received datagram (Message.Stamp):
	// TimestampsSoftware asks kernel sockets for the kernel's software
	// stamp (SO_TIMESTAMPING) and user-space stacks for a clock read per
	// polled batch; TimestampsHardware also asks kernel sockets for the
	// NIC's stamp where the interface's hardware stamping is on (the
	// software stamp otherwise). Off by default: stamps cost a little per
	// message (docs/timestamps.md).
	Timestamps TimestampMode
	// TxTimestamps asks for transmit stamps too, read with the
	// connection's LastTxStamp (TxStamper). On kernel sockets they queue
	// on the socket's error queue, which counts against the receive
	// buffer: a program that asks for them must read them, each
	// LastTxStamp drains the queue. Needs Timestamps on.
	TxTimestamps bool
	// ReuseAddr lets several sockets bind the same address and port
	// (SO_REUSEADDR, kernel backends): each receiver of a multicast
	// group's port gets its own copy of every datagram. (SO_REUSEPORT is
	// not set: it spreads datagrams over the sockets instead, and on Linux
	// a reuseport group's multicast copies stop when one member leaves.)
	// A user-space stack's ports are its own and refuse it.
	ReuseAddr bool
	// Multicast tunes what the connection sends to multicast groups.
	Multicast MulticastOptions

	// Interface is the network interface for backends that bind one (afxdp,
	// efvi). Empty means the interface that owns the local address.
	Interface string
	// Queue is the NIC receive queue to bind (afxdp, efvi). -1 binds every
	// queue the interface has (afxdp opens one socket per queue).
	Queue int
	// XDP tunes the afxdp backend.
	XDP XDPOptions
	// TCP tunes the user-space TCP of the afxdp and efvi backends.
	TCP TCPOptions

	// Skipped is filled in by auto selection with the faster backends it
	// passed over; a backend copies it into Info.Skipped. Callers leave it
	// empty.
	Skipped []Skip
}

// TimestampMode selects receive timestamps.
type TimestampMode uint8

// Timestamp modes.
const (
	TimestampsOff TimestampMode = iota
	TimestampsSoftware
	TimestampsHardware
)

// MulticastOptions tune sending to multicast groups (kernel backends:
// IP_MULTICAST_IF, IP_MULTICAST_TTL, IP_MULTICAST_LOOP and their IPv6
// kin). Zero values keep the kernel's defaults.
type MulticastOptions struct {
	// Interface sends multicast out of this interface; empty: the route's.
	Interface string
	// TTL is the hop limit of multicast datagrams; 0 keeps the default (1).
	TTL int
	// NoLoopback stops this host's own receivers from getting a copy of
	// what the connection sends to a group.
	NoLoopback bool
}

// TCPOptions tune the user-space TCP (afxdp, efvi). Zero values select
// the defaults: Nagle off, every batch of segments acknowledged at once,
// a 200 ms floor on the retransmission timeout, no keepalive, a minute of
// TIME-WAIT. Kernel backends take their TCP settings from the kernel.
type TCPOptions struct {
	// Nagle holds back small segments while data is unacknowledged.
	Nagle bool
	// DelayedACK delays acknowledgments by up to this long.
	DelayedACK time.Duration
	// ImmediateACK acknowledges data at the end of the poll that received
	// it, always. By default, data that a reading connection's own poll
	// received is acknowledged on the connection's next call into the
	// stack: in the segment of the answer when the application writes one
	// first (a request and its reply then cost one segment each way, as
	// with a kernel in its interactive mode), else at its next poll, or
	// within a few milliseconds by the stack's keeper when it stops
	// calling. There is no delayed-ACK timer either way.
	ImmediateACK bool
	// MinRTO is the retransmission timeout's floor: lower it on a
	// network whose round trips are microseconds and whose losses must
	// be repaired in less than 200 ms.
	MinRTO time.Duration
	// Keepalive probes an idle connection after this long.
	Keepalive time.Duration
	// TimeWait is how long a connection that closed first lingers.
	TimeWait time.Duration
}

// XDPOptions tune the AF_XDP backend. Zero values select the defaults.
type XDPOptions struct {
	// Mode is "auto" (driver mode, else generic), "drv" or "skb".
	Mode string
	// Bind is "auto" (zero-copy, else copy), "zerocopy" or "copy".
	Bind string
	// FrameSize is the UMEM chunk size: 2048 or 4096. Default 4096.
	FrameSize int
	// NumFrames is the number of UMEM chunks, a power of two. Default 4096
	// (trimmed to fit RLIMIT_MEMLOCK when the process lacks CAP_IPC_LOCK).
	NumFrames int
	// RingSize is the size of each of the four rings, a power of two.
	// Default 2048.
	RingSize int
	// NeedWakeup asks for XDP_USE_NEED_WAKEUP ("auto", "on", "off").
	NeedWakeup string
	// BusyPoll sets SO_PREFER_BUSY_POLL, SO_BUSY_POLL and
	// SO_BUSY_POLL_BUDGET on the AF_XDP sockets (from BusyPollUS and
	// BusyPollBudget) and makes the spin loop call recvfrom on every empty
	// poll, so that the NIC queue's NAPI runs in the reading thread. Use it
	// with a driver that has NAPI (not veth) and, for interrupts to stay
	// off, the interface's napi_defer_hard_irqs and gro_flush_timeout set.
	BusyPoll bool
}

// Validate checks o without touching the system.
func (o *Options) Validate() error {
	if o.TCP.DelayedACK < 0 || o.TCP.MinRTO < 0 || o.TCP.Keepalive < 0 || o.TCP.TimeWait < 0 {
		return fmt.Errorf("tcp options %+v: durations must not be negative", o.TCP)
	}
	switch o.Backend {
	case "", "auto", "onload", "efvi", "afxdp", "busypoll", "kernel":
	default:
		return fmt.Errorf("backend %q: want auto, onload, efvi, afxdp, busypoll or kernel", o.Backend)
	}
	if o.Wait < WaitDefault || o.Wait > WaitSpin {
		return fmt.Errorf("wait mode %d: out of range", o.Wait)
	}
	if o.ReadTimeout < 0 || o.WriteTimeout < 0 || o.DialTimeout < 0 {
		return fmt.Errorf("timeouts must not be negative (read %v, write %v, dial %v)", o.ReadTimeout, o.WriteTimeout, o.DialTimeout)
	}
	if o.Timestamps > TimestampsHardware {
		return fmt.Errorf("timestamp mode %d: out of range", o.Timestamps)
	}
	if o.TxTimestamps && o.Timestamps == TimestampsOff {
		return fmt.Errorf("transmit timestamps need Timestamps on")
	}
	if o.Multicast.TTL < 0 || o.Multicast.TTL > 255 {
		return fmt.Errorf("multicast TTL %d: want 0 (default) to 255", o.Multicast.TTL)
	}
	if o.BatchSize < 0 || o.BatchSize > MaxBatch {
		return fmt.Errorf("batch size %d: want 1 to %d", o.BatchSize, MaxBatch)
	}
	if o.BusyPollUS > MaxBusyPollUS {
		return fmt.Errorf("busy poll %dus: want at most %d", o.BusyPollUS, MaxBusyPollUS)
	}
	if o.BusyPollBudget > MaxBusyBudget {
		return fmt.Errorf("busy poll budget %d: want at most %d", o.BusyPollBudget, MaxBusyBudget)
	}
	if o.RecvBuffer < 0 || o.SendBuffer < 0 {
		return errors.New("socket buffer sizes must not be negative")
	}
	if o.Queue < -1 {
		return fmt.Errorf("queue %d: want -1 (all) or a queue number", o.Queue)
	}
	if len(o.Interface) > 15 {
		return fmt.Errorf("interface %q: names are at most 15 bytes", o.Interface)
	}
	return o.XDP.Validate()
}

// Validate checks the AF_XDP options without touching the system.
func (x *XDPOptions) Validate() error {
	switch x.Mode {
	case "", "auto", "drv", "skb":
	default:
		return fmt.Errorf("xdp mode %q: want auto, drv or skb", x.Mode)
	}
	switch x.Bind {
	case "", "auto", "zerocopy", "copy":
	default:
		return fmt.Errorf("xdp bind %q: want auto, zerocopy or copy", x.Bind)
	}
	switch x.NeedWakeup {
	case "", "auto", "on", "off":
	default:
		return fmt.Errorf("need wakeup %q: want auto, on or off", x.NeedWakeup)
	}
	switch x.FrameSize {
	case 0, 2048, 4096:
	default:
		return fmt.Errorf("frame size %d: want 2048 or 4096", x.FrameSize)
	}
	if x.NumFrames != 0 && (x.NumFrames < 64 || x.NumFrames > 1<<20 || x.NumFrames&(x.NumFrames-1) != 0) {
		return fmt.Errorf("frame count %d: want a power of two from 64 to %d", x.NumFrames, 1<<20)
	}
	if x.RingSize != 0 && (x.RingSize < 32 || x.RingSize > 1<<16 || x.RingSize&(x.RingSize-1) != 0) {
		return fmt.Errorf("ring size %d: want a power of two from 32 to %d", x.RingSize, 1<<16)
	}
	return nil
}

// Batch returns the effective batch size.
func (o *Options) Batch() int {
	if o.BatchSize == 0 {
		return DefaultBatch
	}
	return o.BatchSize
}

// Environment variables read by FromEnv. A wrapper such as onload-run sets
// them so that a program it launches picks up the wrapper's profile.
var EnvVars = []struct{ Name, Help string }{
	{"LOWLAT_BACKEND", "backend: auto, onload, efvi, afxdp, busypoll or kernel"},
	{"LOWLAT_WAIT", "wait mode: block or spin"},
	{"LOWLAT_READ_TIMEOUT", "read timeout, a Go duration such as 200ms"},
	{"LOWLAT_BATCH", "batch size for ReadBatch and WriteBatch"},
	{"LOWLAT_BUSY_POLL_US", "SO_BUSY_POLL microseconds (negative: leave unset)"},
	{"LOWLAT_BUSY_POLL_BUDGET", "SO_BUSY_POLL_BUDGET packets (negative: leave unset)"},
	{"LOWLAT_IFACE", "interface for afxdp and efvi"},
	{"LOWLAT_QUEUE", "NIC queue for afxdp and efvi (-1: all)"},
	{"LOWLAT_XDP_MODE", "XDP attach mode: auto, drv or skb"},
	{"LOWLAT_XDP_BIND", "AF_XDP bind mode: auto, zerocopy or copy"},
	{"LOWLAT_XDP_FRAMES", "UMEM frame count"},
	{"LOWLAT_XDP_RING", "AF_XDP ring size"},
	{"LOWLAT_XDP_BUSY_POLL", "1: AF_XDP busy polling driven from the spin loop"},
}

// FillFromEnv returns base with the LOWLAT_* variables filling in what
// base left at its zero value: options set in code win over the
// environment. Each variable is read as FromEnv reads it.
func FillFromEnv(base Options, lookup func(string) (string, bool)) (Options, error) {
	env, err := FromEnv(Options{}, lookup)
	if err != nil {
		return base, err
	}
	o := base
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	fillInt := func(dst *int, v int) {
		if *dst == 0 {
			*dst = v
		}
	}
	fill(&o.Backend, env.Backend)
	if o.Wait == WaitDefault {
		o.Wait = env.Wait
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = env.ReadTimeout
	}
	fillInt(&o.BatchSize, env.BatchSize)
	fillInt(&o.BusyPollUS, env.BusyPollUS)
	fillInt(&o.BusyPollBudget, env.BusyPollBudget)
	fill(&o.Interface, env.Interface)
	fillInt(&o.Queue, env.Queue)
	fill(&o.XDP.Mode, env.XDP.Mode)
	fill(&o.XDP.Bind, env.XDP.Bind)
	fillInt(&o.XDP.NumFrames, env.XDP.NumFrames)
	fillInt(&o.XDP.RingSize, env.XDP.RingSize)
	o.XDP.BusyPoll = o.XDP.BusyPoll || env.XDP.BusyPoll
	if err := o.Validate(); err != nil {
		return base, fmt.Errorf("LOWLAT_* environment: %w", err)
	}
	return o, nil
}

// FromEnv returns base with the LOWLAT_* variables applied over it, using
// lookup (os.LookupEnv when nil). Every variable is read the same way: one
// that is unset, empty or blank leaves base as it is; any other value must
// be valid on its own, or the error names the variable and quotes (a
// bounded prefix of) the value. A count that Options reads as 0 for "the
// default" (LOWLAT_BATCH, LOWLAT_BUSY_POLL_US, LOWLAT_BUSY_POLL_BUDGET,
// LOWLAT_XDP_FRAMES, LOWLAT_XDP_RING) refuses 0: leave the variable unset
// for the default.
func FromEnv(base Options, lookup func(string) (string, bool)) (Options, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	num := func(dst func(*Options) *int, zeroOK bool) func(string, *Options) error {
		return func(v string, o *Options) error {
			n, err := strconv.Atoi(v)
			if errors.Is(err, strconv.ErrRange) {
				return errors.New("out of range")
			}
			if err != nil {
				return errors.New("want a whole number")
			}
			if n == 0 && !zeroOK {
				return errors.New("0 is not a setting (leave the variable unset for the default)")
			}
			*dst(o) = n
			return nil
		}
	}
	str := func(dst func(*Options) *string) func(string, *Options) error {
		return func(v string, o *Options) error { *dst(o) = v; return nil }
	}
	vars := []struct {
		name string
		set  func(v string, o *Options) error
	}{
		{"LOWLAT_BACKEND", str(func(o *Options) *string { return &o.Backend })},
		{"LOWLAT_WAIT", func(v string, o *Options) error {
			w, err := ParseWaitMode(v)
			if err != nil {
				return errors.New("want block or spin")
			}
			o.Wait = w
			return nil
		}},
		{"LOWLAT_READ_TIMEOUT", func(v string, o *Options) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return errors.New("want a duration such as 200ms")
			}
			if d < 0 {
				return errors.New("negative duration")
			}
			o.ReadTimeout = d
			return nil
		}},
		{"LOWLAT_BATCH", num(func(o *Options) *int { return &o.BatchSize }, false)},
		{"LOWLAT_BUSY_POLL_US", num(func(o *Options) *int { return &o.BusyPollUS }, false)},
		{"LOWLAT_BUSY_POLL_BUDGET", num(func(o *Options) *int { return &o.BusyPollBudget }, false)},
		{"LOWLAT_IFACE", str(func(o *Options) *string { return &o.Interface })},
		{"LOWLAT_QUEUE", num(func(o *Options) *int { return &o.Queue }, true)},
		{"LOWLAT_XDP_MODE", str(func(o *Options) *string { return &o.XDP.Mode })},
		{"LOWLAT_XDP_BIND", str(func(o *Options) *string { return &o.XDP.Bind })},
		{"LOWLAT_XDP_FRAMES", num(func(o *Options) *int { return &o.XDP.NumFrames }, false)},
		{"LOWLAT_XDP_RING", num(func(o *Options) *int { return &o.XDP.RingSize }, false)},
		{"LOWLAT_XDP_BUSY_POLL", func(v string, o *Options) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("want 1 or 0")
			}
			o.XDP.BusyPoll = b
			return nil
		}},
	}
	o := base
	for _, e := range vars {
		raw, ok := lookup(e.name)
		v := strings.TrimSpace(raw)
		if !ok || v == "" {
			continue
		}
		// Checked alone first, so that a value out of range is reported
		// under its own name.
		var alone Options
		err := e.set(v, &alone)
		if err == nil {
			err = alone.Validate()
		}
		if err != nil {
			return base, fmt.Errorf("%s=%s: %w", e.name, cli.Quote(raw), err)
		}
		e.set(v, &o)
	}
	if err := o.Validate(); err != nil {
		return base, fmt.Errorf("LOWLAT_* environment: %w", err)
	}
	return o, nil
}
