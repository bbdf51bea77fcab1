//go:build !linux

package main

import "errors"

func setFIFO() error { return errors.New("SCHED_FIFO: Linux only") }
