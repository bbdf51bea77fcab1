//go:build !linux

package affinity

import "io/fs"

// oNoFollow is 0 off Linux, where nothing is restored.
const oNoFollow = 0

// checkTrusted accepts everything off Linux, where nothing is restored.
func checkTrusted(path string, fi fs.FileInfo) error { return nil }
