// Package priv turns permission errors from the kernel into errors that say
// which capability the operation needs, so a user knows what to grant.
package priv

import (
	"errors"
	"fmt"
	"strings"

	"syscall"
)

// Error is a permission failure annotated with the capability that lifts it.
// errors.Is(err, syscall.EPERM) still holds.
type Error struct {
	Op  string // the operation that was refused
	Cap string // the capabilities it needs, comma-separated: "CAP_BPF,CAP_NET_ADMIN"
	Err error  // the kernel's error (EPERM or EACCES)
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %v (needs %s: run as root or grant it, e.g. setcap %s+ep BINARY)",
		e.Op, e.Err, strings.ReplaceAll(e.Cap, ",", " and "), toSetcap(e.Cap))
}

func (e *Error) Unwrap() error { return e.Err }

func toSetcap(c string) string {
	b := []byte(c)
	for i, ch := range b {
		if ch >= 'A' && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}

// Wrap returns err annotated with capability when err is EPERM or EACCES,
// and otherwise err wrapped with op.
func Wrap(op, capability string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return &Error{Op: op, Cap: capability, Err: err}
	}
	return fmt.Errorf("%s: %w", op, err)
}
