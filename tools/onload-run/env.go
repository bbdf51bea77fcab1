//go:build linux

package main

import (
	"fmt"
	"strings"

	"github.com/lowlat/lowlat/affinity"
	"github.com/lowlat/lowlat/bypass/backend"
)

// checkProgramEnv checks the LOWLAT_* values of env, the environment
// PROGRAM would get (the caller's, the profile's, the flags'), as the
// lowlat packages in PROGRAM would read them, so that a malformed one is
// bad input named by its variable before anything changes, not a failure
// of PROGRAM after the host has been changed.
func checkProgramEnv(env []string) error {
	vals := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "LOWLAT_") {
			vals[k] = v
		}
	}
	lookup := func(k string) (string, bool) {
		v, ok := vals[k]
		return v, ok
	}
	if _, err := backend.FromEnv(backend.Options{}, lookup); err != nil {
		return fmt.Errorf("%w (in PROGRAM's environment)", err)
	}
	if _, err := affinity.ReadProgramEnv(lookup); err != nil {
		return fmt.Errorf("%w (in PROGRAM's environment)", err)
	}
	return nil
}
