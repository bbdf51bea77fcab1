// Package cli holds what lowlat's commands (latprobe, onload-run) share
// for reading their command lines and reporting mistakes in them: flag
// parsing whose errors name the flag as users type it (--name), quote at
// most a bounded prefix of a value, and refuse negative durations; and a
// last guard that keeps any one-line message printable and bounded
// whatever a user passed in.
package cli
