//go:build linux && onload && cgo

package onload

/*
#include "ll_onload.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Template is an Onload send template on a TCP stream
// (onload_msg_template_*): the bulk of a message handed to Onload ahead of
// time, patched where it changes and then sent. Onload prepares the
// packet (in the adapter's PIO buffer, where it has one) so that the send
// costs less. The bytes go on the stream as they are: a message read with
// ReadMsg needs its 4-byte length prefix in the template.
//
// Send (or Abort) uses the template up; a template is for one writer.
type Template struct {
	s    *Stream
	h    unsafe.Pointer // Onload's handle: C memory
	size int
	done bool
}

// ErrTemplateUsed is returned by a Template that was sent or aborted.
var ErrTemplateUsed = errors.New("onload: template already sent or aborted")

// NewTemplate hands msg to Onload as the template of a message on s, a
// stream of this backend (onload_msg_template_alloc).
func NewTemplate(s backend.Stream, msg []byte) (*Template, error) {
	st, ok := s.(*Stream)
	if !ok {
		return nil, fmt.Errorf("onload: template on %T: %w", s, backend.Unsupported("not a stream of the onload backend"))
	}
	if len(msg) == 0 {
		return nil, errors.New("onload: template: empty message")
	}
	if !st.gate.W.Enter() {
		return nil, backend.ErrClosed
	}
	defer st.gate.W.Exit()
	t := &Template{s: st, size: len(msg)}
	if rc := C.ll_tmpl_alloc(st.fd, unsafe.Pointer(&msg[0]), C.size_t(len(msg)), &t.h); rc < 0 {
		return nil, tmplErr("onload_msg_template_alloc", rc)
	}
	return t, nil
}

func tmplErr(fn string, rc C.int) error {
	if e := errnoOf(rc); e == syscall.ENOSYS {
		return fmt.Errorf("onload: send template: %w", missing(fn))
	} else if e == syscall.ESOCKTNOSUPPORT {
		return fmt.Errorf("onload: send template: %w", backend.UnsupportedErr("the socket is not accelerated by Onload", os.NewSyscallError(fn, e)))
	}
	return fmt.Errorf("onload: send template: %w", os.NewSyscallError(fn, errnoOf(rc)))
}

// Update overwrites the template at offset off with b, without sending.
func (t *Template) Update(off int, b []byte) error { return t.update(off, b, 0) }

// Send overwrites the template at off with b (none when b is empty) and
// sends it (ONLOAD_TEMPLATE_FLAGS_SEND_NOW); the template is then used up.
func (t *Template) Send(off int, b []byte) error { return t.update(off, b, 1) }

func (t *Template) update(off int, b []byte, flags C.unsigned) error {
	if t.done {
		return ErrTemplateUsed
	}
	if off < 0 || off+len(b) > t.size {
		return fmt.Errorf("onload: template update at %d of %d bytes: outside its %d bytes", off, len(b), t.size)
	}
	if !t.s.gate.W.Enter() {
		return backend.ErrClosed
	}
	defer t.s.gate.W.Exit()
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	rc := C.ll_tmpl_update(t.s.fd, t.h, p, C.size_t(len(b)), C.int64_t(off), flags)
	if flags != 0 {
		t.done = true
	}
	if rc < 0 {
		return tmplErr("onload_msg_template_update", rc)
	}
	return nil
}

// Abort gives the template back without sending it.
func (t *Template) Abort() error {
	if t.done {
		return ErrTemplateUsed
	}
	if !t.s.gate.W.Enter() {
		return backend.ErrClosed
	}
	defer t.s.gate.W.Exit()
	t.done = true
	if rc := C.ll_tmpl_abort(t.s.fd, t.h); rc < 0 {
		return tmplErr("onload_msg_template_abort", rc)
	}
	return nil
}
