//go:build !linux

package containerize

import (
	"context"
	"errors"
	"time"
)

// ErrNotSupported is returned by the live side of the package on systems
// other than Linux: containers, namespaces and veth links are Linux's.
var ErrNotSupported = errors.New("containerize: needs Linux")

// Run is Linux-only; see the Linux build.
func Run(ctx context.Context, engine, parent string, o Options, timeout time.Duration) (string, error) {
	return "", ErrNotSupported
}

// Sweep is Linux-only; see the Linux build.
func Sweep(engine string) ([]string, error) { return nil, ErrNotSupported }

// HostDevNum is Linux-only; see the Linux build.
func HostDevNum(path string) (DevNum, error) { return DevNum{}, ErrNotSupported }

// HostRealtime is Linux-only; see the Linux build.
func HostRealtime() (RealtimeBudget, error) { return RealtimeBudget{}, ErrNotSupported }

// Suite is Linux-only; see the Linux build.
func Suite(ctx context.Context, o SuiteOptions) (*SuiteReport, error) { return nil, ErrNotSupported }
