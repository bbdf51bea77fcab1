//go:build linux && onload && cgo && race

package onload_test

const raceEnabled = true
