// Package profiles holds the built-in host tuning profiles that
// tools/onload-run applies, as files a person can read and copy: one
// NAME.profile file per profile, in the format that package
// github.com/lowlat/lowlat/affinity/profile documents. They are compiled
// into the binaries that use them.
package profiles

import "embed"

// FS holds the *.profile files of this directory.
//
//go:embed *.profile
var FS embed.FS
