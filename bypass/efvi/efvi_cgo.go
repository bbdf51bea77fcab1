//go:build linux && efvi && cgo

package efvi

/*
#cgo LDFLAGS: -lciul1
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <etherfabric/vi.h>
#include <etherfabric/pd.h>
#include <etherfabric/memreg.h>
#include <etherfabric/capabilities.h>
#include <etherfabric/efct_vi.h>

// Layout shared with the Go type event.
struct ll_ev { uint16_t kind, sub; uint32_t len, id, pad; uint64_t addr; int64_t ts; };
// Layout shared with the Go type txDesc.
struct ll_tx { uint32_t id, len; };

enum { LL_NONE, LL_RX, LL_RX_DISCARD, LL_RX_NODESC, LL_RX_REF, LL_RX_REF_DISCARD,
       LL_TX, LL_TX_ERROR, LL_OFLOW, LL_OTHER };

#define LL_EVS 64

// One driver handle, protection domain and memory region per connection.
struct ll_dev {
	ef_driver_handle dh;
	ef_pd pd;
	ef_memreg mr;
	char* mem;
	uint32_t buf_size;
};

// One VI with the events ef_eventq_poll returned that are not yet
// translated into records.
struct ll_q {
	ef_vi vi;
	struct ll_dev* dev;
	ef_event evs[LL_EVS];
	int i, n;
	int prefix;
	int ctpio;
	int rx_ts; // allocated with EF_VI_RX_TIMESTAMPS
	unsigned ct_threshold;
};

static int ll_driver_open(struct ll_dev* d) { return ef_driver_open(&d->dh); }
static int ll_driver_close(struct ll_dev* d) { return ef_driver_close(d->dh); }
static int ll_pd_alloc(struct ll_dev* d, int ifindex) { return ef_pd_alloc(&d->pd, d->dh, ifindex, EF_PD_DEFAULT); }
static int ll_pd_free(struct ll_dev* d) { return ef_pd_free(&d->pd, d->dh); }

static int ll_cap(struct ll_dev* d, int cap, unsigned long* val) {
	return ef_pd_capabilities_get(d->dh, &d->pd, d->dh, (enum ef_vi_capability)cap, val);
}

static int ll_memreg(struct ll_dev* d, void* mem, size_t len, uint32_t buf_size) {
	d->mem = mem;
	d->buf_size = buf_size;
	return ef_memreg_alloc(&d->mr, d->dh, &d->pd, d->dh, mem, len);
}
static int ll_memreg_free(struct ll_dev* d) { return ef_memreg_free(&d->mr, d->dh); }

// ll_vi_alloc allocates a VI with default event queue size; rxq and txq
// are ring capacities (-1 default, 0 none).
static int ll_vi_alloc(struct ll_q* q, struct ll_dev* d, int rxq, int txq, unsigned long long flags) {
	q->dev = d;
	int rc = ef_vi_alloc_from_pd(&q->vi, d->dh, &d->pd, d->dh, -1, rxq, txq, NULL, -1, (enum ef_vi_flags)flags);
	if (rc < 0)
		return rc;
	q->prefix = ef_vi_receive_prefix_len(&q->vi);
	q->ctpio = (flags & EF_VI_TX_CTPIO) != 0;
	q->rx_ts = (flags & EF_VI_RX_TIMESTAMPS) != 0;
	return rc;
}
static int ll_vi_free(struct ll_q* q) { return ef_vi_free(&q->vi, q->dev->dh); }
static int ll_rx_buffer_len(struct ll_q* q) { return ef_vi_receive_buffer_len(&q->vi); }
static int ll_rx_capacity(struct ll_q* q) { return ef_vi_receive_capacity(&q->vi); }
static int ll_tx_capacity(struct ll_q* q) { return ef_vi_transmit_capacity(&q->vi); }
static int ll_get_mac(struct ll_q* q, void* mac) { return ef_vi_get_mac(&q->vi, q->dev->dh, mac); }
static int ll_prefix(struct ll_q* q) { return q->prefix; }

// ll_filter_ip4 adds a filter for IPv4 packets of protocol proto
// (IPPROTO_UDP or IPPROTO_TCP) to a local address and port.
static int ll_filter_ip4(struct ll_q* q, int proto, uint32_t ip_be, uint16_t port_be, int exclusive, ef_filter_cookie* ck) {
	ef_filter_spec fs;
	ef_filter_spec_init(&fs, exclusive ? EF_FILTER_FLAG_EXCLUSIVE_RXQ : EF_FILTER_FLAG_NONE);
	int rc = ef_filter_spec_set_ip4_local(&fs, proto, ip_be, port_be);
	if (rc < 0)
		return rc;
	return ef_vi_filter_add(&q->vi, q->dev->dh, &fs, ck);
}
static int ll_filter_del(struct ll_q* q, ef_filter_cookie* ck) {
	return ef_vi_filter_del(&q->vi, q->dev->dh, ck);
}

static inline void ll_put(struct ll_ev* r, uint16_t kind, uint16_t sub, uint32_t len, uint32_t id, uint64_t addr) {
	r->kind = kind; r->sub = sub; r->len = len; r->id = id; r->pad = 0; r->addr = addr; r->ts = 0;
}

// ll_stamp reads the adapter's receive stamp of the packet at pkt (a
// buffer's start, prefix included, or an X3 packet) into r, in UTC
// nanoseconds; 0 when the VI stamps nothing or the packet has no stamp.
static inline void ll_stamp(struct ll_q* q, struct ll_ev* r, const void* pkt) {
	ef_precisetime t;
	if (!q->rx_ts || pkt == NULL)
		return;
	if (ef_vi_receive_get_precise_timestamp(&q->vi, pkt, &t) == 0)
		r->ts = (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

// ll_poll translates events into at most cap records. It polls the event
// queue at most once; events it had no room for wait for the next call.
static int ll_poll(struct ll_q* q, struct ll_ev* out, int cap) {
	ef_vi* vi = &q->vi;
	ef_request_id ids[EF_VI_TRANSMIT_BATCH > EF_VI_RECEIVE_BATCH ? EF_VI_TRANSMIT_BATCH : EF_VI_RECEIVE_BATCH];
	int k = 0, polled = 0;
	while (k < cap) {
		if (q->i == q->n) {
			if (polled)
				break;
			polled = 1;
			q->i = 0;
			q->n = ef_eventq_poll(vi, q->evs, LL_EVS);
			if (q->n <= 0) {
				q->n = 0;
				break;
			}
		}
		ef_event* ev = &q->evs[q->i];
		int n, j;
		switch (EF_EVENT_TYPE(*ev)) {
		case EF_EVENT_TYPE_RX: {
			int len = (int)EF_EVENT_RX_BYTES(*ev) - q->prefix;
			ll_put(&out[k], LL_RX, ev->rx.flags & (EF_EVENT_FLAG_SOP | EF_EVENT_FLAG_CONT),
			       len < 0 ? 0 : (uint32_t)len, EF_EVENT_RX_RQ_ID(*ev), 0);
			if (ev->rx.flags & EF_EVENT_FLAG_SOP)
				ll_stamp(q, &out[k], q->dev->mem + (size_t)EF_EVENT_RX_RQ_ID(*ev) * q->dev->buf_size);
			k++;
			break;
		}
		case EF_EVENT_TYPE_RX_DISCARD: {
			int len = (int)EF_EVENT_RX_DISCARD_BYTES(*ev) - q->prefix;
			ll_put(&out[k++], LL_RX_DISCARD, EF_EVENT_RX_DISCARD_TYPE(*ev),
			       len < 0 ? 0 : (uint32_t)len, EF_EVENT_RX_DISCARD_RQ_ID(*ev), 0);
			break;
		}
		case EF_EVENT_TYPE_RX_MULTI:
		case EF_EVENT_TYPE_RX_MULTI_DISCARD:
			if ((int)ev->rx_multi.n_descs > cap - k)
				return k; // no room: handle it on the next call
			n = ef_vi_receive_unbundle(vi, ev, ids);
			for (j = 0; j < n; j++) {
				if (EF_EVENT_TYPE(*ev) == EF_EVENT_TYPE_RX_MULTI) {
					uint16_t bytes = 0;
					char* buf = q->dev->mem + (size_t)ids[j] * q->dev->buf_size;
					ef_vi_receive_get_bytes(vi, buf, &bytes);
					ll_put(&out[k++], LL_RX, ev->rx_multi.flags & (EF_EVENT_FLAG_SOP | EF_EVENT_FLAG_CONT), bytes, ids[j], 0);
				} else {
					ll_put(&out[k++], LL_RX_DISCARD, EF_EVENT_RX_MULTI_DISCARD_TYPE(*ev), 0, ids[j], 0);
				}
			}
			break;
		case EF_EVENT_TYPE_RX_REF:
		{
			const void* pkt = efct_vi_rxpkt_get(vi, ev->rx_ref.pkt_id);
			ll_put(&out[k], LL_RX_REF, 0, ev->rx_ref.len, ev->rx_ref.pkt_id, (uint64_t)(uintptr_t)pkt);
			ll_stamp(q, &out[k], pkt);
			k++;
		}
			break;
		case EF_EVENT_TYPE_RX_REF_DISCARD:
			ll_put(&out[k++], LL_RX_REF_DISCARD, ev->rx_ref_discard.flags, ev->rx_ref_discard.len,
			       ev->rx_ref_discard.pkt_id, 0);
			break;
		case EF_EVENT_TYPE_RX_NO_DESC_TRUNC:
			ll_put(&out[k++], LL_RX_NODESC, 0, 0, 0, 0);
			break;
		case EF_EVENT_TYPE_TX:
			n = ef_vi_transmit_unbundle(vi, ev, ids);
			ll_put(&out[k++], LL_TX, 0, n < 0 ? 0 : n, 0, 0);
			break;
		case EF_EVENT_TYPE_TX_ERROR:
			n = ef_vi_transmit_unbundle(vi, ev, ids);
			ll_put(&out[k++], LL_TX_ERROR, EF_EVENT_TX_ERROR_TYPE(*ev), n < 0 ? 0 : n, 0, 0);
			break;
		case EF_EVENT_TYPE_OFLOW:
			ll_put(&out[k++], LL_OFLOW, 0, 0, 0, 0);
			break;
		default:
			ll_put(&out[k++], LL_OTHER, EF_EVENT_TYPE(*ev), 0, 0, 0);
			break;
		}
		q->i++;
	}
	return k;
}

// ll_post initialises one RX descriptor per buffer and pushes them all.
static int ll_post(struct ll_q* q, const uint32_t* ids, int n) {
	struct ll_dev* d = q->dev;
	int k;
	for (k = 0; k < n; k++) {
		ef_addr a = ef_memreg_dma_addr(&d->mr, (size_t)ids[k] * d->buf_size);
		if (ef_vi_receive_init(&q->vi, a, ids[k]) < 0)
			break;
	}
	if (k > 0)
		ef_vi_receive_push(&q->vi);
	return k;
}

static void ll_release(struct ll_q* q, const uint32_t* ids, int n) {
	for (int k = 0; k < n; k++)
		efct_vi_rxpkt_release(&q->vi, ids[k]);
}

// ll_send sends frames already built in their buffers: through CTPIO with
// the buffer as the fallback descriptor when the VI has CTPIO, else as DMA
// descriptors pushed once at the end. It returns how many of the n frames
// it sent; the rest were not sent at all.
//
// A CTPIO send is two calls: ef_vi_transmit_ctpio pushes the frame towards
// the wire at once, and ef_vi_transmit_ctpio_fallback, which must follow it
// before any other send on the VI, posts the same frame as a DMA
// descriptor that the adapter sends if the CTPIO send fails and that
// carries the completion. The fallback needs a slot in the TX ring and
// fails with -EAGAIN when there is none, by which time the CTPIO frame may
// already be on the wire. So the ring's space is checked first and the
// batch stops before the CTPIO write, never between the two calls. (On X3,
// ef_vi_transmit_ctpio writes nothing when the cut-through FIFO lacks room
// and the fallback then tries a plain send, so a fallback that fails there
// also means the frame was not sent.)
static int ll_send(struct ll_q* q, const struct ll_tx* d, int n) {
	struct ll_dev* dev = q->dev;
	int k;
	for (k = 0; k < n; k++) {
		size_t off = (size_t)d[k].id * dev->buf_size;
		ef_addr a = ef_memreg_dma_addr(&dev->mr, off);
		if (q->ctpio) {
			if (ef_vi_transmit_space(&q->vi) < 1)
				break;
			ef_vi_transmit_ctpio(&q->vi, dev->mem + off, d[k].len, q->ct_threshold);
			if (ef_vi_transmit_ctpio_fallback(&q->vi, a, d[k].len, d[k].id) < 0)
				break;
		} else if (ef_vi_transmit_init(&q->vi, a, d[k].len, d[k].id) < 0) {
			break;
		}
	}
	if (!q->ctpio && k > 0)
		ef_vi_transmit_push(&q->vi);
	return k;
}
*/
import "C"

import (
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"
)

// Compile-time checks that the Go records match the C ones.
var (
	_ [unsafe.Sizeof(event{}) - C.sizeof_struct_ll_ev]struct{}
	_ [C.sizeof_struct_ll_ev - unsafe.Sizeof(event{})]struct{}
	_ [unsafe.Sizeof(txDesc{}) - C.sizeof_struct_ll_tx]struct{}
	_ [C.sizeof_struct_ll_tx - unsafe.Sizeof(txDesc{})]struct{}
)

// The Go event kinds are the C ones.
var _ = [1]struct{}{}[evOther-C.LL_OTHER]

// Capabilities queried (enum ef_vi_capability).
const (
	capCTPIO     = C.EF_VI_CAP_CTPIO
	capCTPIOOnly = C.EF_VI_CAP_CTPIO_ONLY
	capRXRef     = C.EF_VI_CAP_RX_REF
	capMinBuffer = C.EF_VI_CAP_MIN_BUFFER_MODE_SIZE
)

// errno turns ef_vi's negative error codes into a syscall.Errno.
func errno(rc C.int) error {
	if rc >= 0 {
		return nil
	}
	return syscall.Errno(-rc)
}

// dev is the driver handle, protection domain and memory region, in C
// memory (ef_vi keeps pointers into them).
type dev struct{ d *C.struct_ll_dev }

func newDev() dev { return dev{(*C.struct_ll_dev)(C.calloc(1, C.sizeof_struct_ll_dev))} }

func (d dev) free()                     { C.free(unsafe.Pointer(d.d)) }
func (d dev) open() error               { return errno(C.ll_driver_open(d.d)) }
func (d dev) closeDriver() error        { return errno(C.ll_driver_close(d.d)) }
func (d dev) allocPD(ifindex int) error { return errno(C.ll_pd_alloc(d.d, C.int(ifindex))) }
func (d dev) freePD() error             { return errno(C.ll_pd_free(d.d)) }
func (d dev) freeMemreg() error         { return errno(C.ll_memreg_free(d.d)) }
func (d dev) capability(c int) (uint64, error) {
	var v C.ulong
	if err := errno(C.ll_cap(d.d, C.int(c), &v)); err != nil {
		return 0, err
	}
	return uint64(v), nil
}

// register registers mem (mapped outside the Go heap) with the protection
// domain.
func (d dev) register(mem []byte, bufSize int) error {
	return errno(C.ll_memreg(d.d, unsafe.Pointer(&mem[0]), C.size_t(len(mem)), C.uint32_t(bufSize)))
}

// ciQueue is a VI: it implements rxQueue or txQueue.
type ciQueue struct {
	q       *C.struct_ll_q
	mem     []byte
	bufSize int
	prefix  int
	rxRef   bool
	filters map[filterKey]C.ef_filter_cookie
}

// filterKey names a filter: a UDP and a TCP filter on one address and port
// are two.
type filterKey struct {
	dst   netip.AddrPort
	proto uint8
}

// Flags for allocVI (enum ef_vi_flags).
const (
	viFlagCTPIO        = C.EF_VI_TX_CTPIO
	viFlagEventMerge   = C.EF_VI_RX_EVENT_MERGE
	viFlagRxTimestamps = C.EF_VI_RX_TIMESTAMPS
)

// allocVI allocates a VI in d's protection domain with rxq and txq ring
// capacities (-1: the default, 0: none).
func allocVI(d dev, rxq, txq int, flags uint64, mem []byte, bufSize int, ctThreshold int) (*ciQueue, error) {
	q := (*C.struct_ll_q)(C.calloc(1, C.sizeof_struct_ll_q))
	if err := errno(C.ll_vi_alloc(q, d.d, C.int(rxq), C.int(txq), C.ulonglong(flags))); err != nil {
		C.free(unsafe.Pointer(q))
		return nil, err
	}
	q.ct_threshold = C.uint(ctThreshold)
	return &ciQueue{q: q, mem: mem, bufSize: bufSize, prefix: int(C.ll_prefix(q))}, nil
}

func (q *ciQueue) rxBufferLen() int { return int(C.ll_rx_buffer_len(q.q)) }
func (q *ciQueue) rxCapacity() int  { return int(C.ll_rx_capacity(q.q)) }
func (q *ciQueue) txCapacity() int  { return int(C.ll_tx_capacity(q.q)) }

func (q *ciQueue) mac() ([6]byte, error) {
	var m [6]byte
	err := errno(C.ll_get_mac(q.q, unsafe.Pointer(&m[0])))
	return m, err
}

func (q *ciQueue) poll(evs []event) int {
	if len(evs) == 0 {
		return 0
	}
	return int(C.ll_poll(q.q, (*C.struct_ll_ev)(unsafe.Pointer(&evs[0])), C.int(len(evs))))
}

func (q *ciQueue) post(ids []uint32) int {
	if len(ids) == 0 {
		return 0
	}
	return int(C.ll_post(q.q, (*C.uint32_t)(unsafe.Pointer(&ids[0])), C.int(len(ids))))
}

func (q *ciQueue) release(ids []uint32) {
	if len(ids) > 0 {
		C.ll_release(q.q, (*C.uint32_t)(unsafe.Pointer(&ids[0])), C.int(len(ids)))
	}
}

func (q *ciQueue) send(d []txDesc) int {
	if len(d) == 0 {
		return 0
	}
	return int(C.ll_send(q.q, (*C.struct_ll_tx)(unsafe.Pointer(&d[0])), C.int(len(d))))
}

// frame returns the frame of an RX record (in a posted buffer, after the
// adapter's prefix) or of an RX_REF record (in the adapter's own buffers).
func (q *ciQueue) frame(ev *event) []byte {
	if ev.kind == evRXRef {
		// ev.addr is C memory the adapter owns until release: not Go's.
		return unsafe.Slice((*byte)(unsafe.Add(nil, uintptr(ev.addr))), ev.len)
	}
	off := int(ev.id)*q.bufSize + q.prefix
	end := min(off+int(ev.len), (int(ev.id)+1)*q.bufSize)
	return q.mem[off:end]
}

func (q *ciQueue) refs() bool { return q.rxRef }

// addFilter asks for an exclusive receive queue (EF_FILTER_FLAG_EXCLUSIVE_RXQ),
// so that on X3, where VIs otherwise share the adapter's queues, the VI
// sees only its own flows. X2 gives every VI a queue of its own; a driver
// that refuses the flag there gets the filter without it.
func (q *ciQueue) addFilter(dst netip.AddrPort, proto uint8) error {
	ip := dst.Addr().As4()
	p := dst.Port()
	ipBE := *(*uint32)(unsafe.Pointer(&ip[0])) // network order in memory
	portBE := uint16(p>>8) | uint16(p&0xff)<<8 // htons
	var ck C.ef_filter_cookie
	err := errno(C.ll_filter_ip4(q.q, C.int(proto), C.uint32_t(ipBE), C.uint16_t(portBE), 1, &ck))
	if err != nil && !q.rxRef {
		err = errno(C.ll_filter_ip4(q.q, C.int(proto), C.uint32_t(ipBE), C.uint16_t(portBE), 0, &ck))
	}
	if err != nil {
		return filterError(dst, proto, err)
	}
	if q.filters == nil {
		q.filters = make(map[filterKey]C.ef_filter_cookie)
	}
	q.filters[filterKey{dst, proto}] = ck
	return nil
}

func (q *ciQueue) removeFilter(dst netip.AddrPort, proto uint8) error {
	k := filterKey{dst, proto}
	ck, ok := q.filters[k]
	if !ok {
		return nil
	}
	delete(q.filters, k)
	if err := errno(C.ll_filter_del(q.q, &ck)); err != nil {
		return fmt.Errorf("ef_vi_filter_del %s %v: %w", protoName(proto), dst, err)
	}
	return nil
}

func (q *ciQueue) close() error {
	err := errno(C.ll_vi_free(q.q))
	C.free(unsafe.Pointer(q.q))
	q.q = nil
	return err
}
