//go:build linux

package main

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/lowlat/lowlat/affinity"
)

// lowlatModule is this repository's module path.
const lowlatModule = "github.com/lowlat/lowlat"

// inspectProgram reports whether path is a Go binary, and whether it links
// a lowlat package (which reads the LOWLAT_* variables).
func inspectProgram(path string) (isGo, linksLowlat bool) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return false, false
	}
	if bi.Main.Path == lowlatModule || strings.HasPrefix(bi.Path, lowlatModule+"/") {
		return true, true
	}
	for _, d := range bi.Deps {
		if d.Path == lowlatModule {
			return true, true
		}
	}
	return true, false
}

// onloadTagged reports whether the Go binary at path was built with the
// onload build tag and cgo, which the onload backend needs.
func onloadTagged(path string) bool {
	bi, err := buildinfo.ReadFile(path)
	return err == nil && onloadBuild(bi)
}

func onloadBuild(bi *buildinfo.BuildInfo) bool {
	tagged, cgo := false, false
	for _, s := range bi.Settings {
		switch s.Key {
		case "-tags":
			tagged = slices.Contains(strings.Split(s.Value, ","), "onload")
		case "CGO_ENABLED":
			cgo = s.Value == "1"
		}
	}
	return tagged && cgo
}

// onloadDirs are where a packaged Onload installs libonload.so.
var onloadDirs = []string{
	"/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
	"/usr/lib", "/lib64", "/usr/local/lib64", "/usr/local/lib",
}

// findOnload returns the path of libonload.so, or "" when Onload is not
// installed.
func findOnload() string {
	for _, d := range onloadDirs {
		p := d + "/libonload.so"
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// buildEnv works out PROGRAM's environment: onload-run's own, plus the
// profile's variables that are not already set (a variable set by the
// caller wins over the profile), plus LOWLAT_CPUS, LOWLAT_IFACE and
// LOWLAT_MLOCKALL, which follow the flags whatever the environment says,
// plus for a non-Go program under Onload the profile's EF_*
// variables and LD_PRELOAD.
func (p *plan) buildEnv() error {
	p.env = os.Environ()
	have := func(name string) (string, bool) {
		for _, kv := range p.env {
			if k, v, ok := strings.Cut(kv, "="); ok && k == name {
				return v, true
			}
		}
		return "", false
	}
	set := func(name, value string) {
		if old, ok := have(name); ok {
			if old != value {
				p.info("keeping %s=%s from the environment (the profile says %s)", name, old, value)
			}
			return
		}
		p.env = append(p.env, name+"="+value)
		p.envAdded = append(p.envAdded, name+"="+value)
	}
	// force sets a variable derived from a flag: the flag is the caller's
	// word for this run, and beats a value inherited from the environment.
	force := func(name, value string) {
		if old, ok := have(name); ok && old != value {
			p.info("replacing %s=%s from the environment with %s", name, old, value)
		}
		p.env = slices.DeleteFunc(p.env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
		p.env = append(p.env, name+"="+value)
		p.envAdded = append(p.envAdded, name+"="+value)
	}
	for _, e := range p.prof.Env {
		set(e.Name, e.Value)
	}
	if !p.cpus.IsEmpty() {
		force(affinity.EnvCPUs, p.cpus.String())
	}
	if p.o.iface != "" {
		force("LOWLAT_IFACE", p.o.iface)
	}
	if p.prof.Program.Mlockall {
		force(affinity.EnvMlockall, "1")
		if !p.linksLowlat {
			p.info("mlockall cannot be imposed across exec: PROGRAM must lock its own memory (LOWLAT_MLOCKALL=1 asks it to)")
		}
	}

	lib := p.o.onloadLib
	if lib != "" {
		if st, err := os.Stat(lib); err != nil || !st.Mode().IsRegular() {
			return badInput("--onload-lib %s: no such file", lib)
		}
	} else {
		lib = findOnload()
	}
	if p.o.onload {
		return p.onloadEnv(lib, have, set, force)
	}
	switch {
	case p.isGo && p.linksLowlat && onloadTagged(p.path):
		p.info("%s is built with the onload backend: add --onload to run it on Onload", p.o.argv[0])
	case p.isGo && !p.linksLowlat:
		p.note("%s is a Go program: LD_PRELOAD (Onload) cannot accelerate it, since the Go runtime makes its own system calls; "+
			"it must link %s/bypass, which reads the LOWLAT_* variables set here. The host settings still apply.", p.o.argv[0], lowlatModule)
	case p.isGo:
		p.info("%s links lowlat: it reads the LOWLAT_* variables; no LD_PRELOAD", p.o.argv[0])
	case lib == "":
		if len(p.prof.OnloadEnv) > 0 {
			p.info("Onload (libonload.so) is not installed: %s uses kernel sockets; the host settings still apply", p.o.argv[0])
		}
	default:
		for _, e := range p.prof.OnloadEnv {
			set(e.Name, e.Value)
		}
		p.preload(lib, have)
	}
	return nil
}

// preload puts lib first in LD_PRELOAD, unless it is there already.
func (p *plan) preload(lib string, have func(string) (string, bool)) {
	pre, _ := have("LD_PRELOAD")
	if slices.Contains(strings.FieldsFunc(pre, func(r rune) bool { return r == ' ' || r == ':' }), lib) {
		return
	}
	v := lib
	if pre != "" {
		v = lib + " " + pre
	}
	p.env = slices.DeleteFunc(p.env, func(kv string) bool { return strings.HasPrefix(kv, "LD_PRELOAD=") })
	p.env = append(p.env, "LD_PRELOAD="+v)
	p.envAdded = append(p.envAdded, "LD_PRELOAD="+v)
}

// onloadEnv is --onload: Onload must be there, and PROGRAM must be able
// to use it.
func (p *plan) onloadEnv(lib string, have func(string) (string, bool), set, force func(name, value string)) error {
	if lib == "" {
		return fmt.Errorf("--onload: Onload is not installed: no libonload.so in %s (install Onload, or name the library with --onload-lib)",
			strings.Join(onloadDirs, ", "))
	}
	if p.isGo && !onloadTagged(p.path) {
		return badInput("--onload: %s is a Go program built without the onload tag, so Onload cannot accelerate it (the Go runtime makes its own system calls): "+
			"rebuild it with CGO_ENABLED=1 go build -tags onload, using %s/bypass (backend onload)", p.o.argv[0], lowlatModule)
	}
	for _, e := range p.prof.OnloadEnv {
		set(e.Name, e.Value)
	}
	force("LOWLAT_BACKEND", "onload")
	p.preload(lib, have)
	p.info("Onload: %s preloaded, %d EF_* variable(s) from profile %s", lib, len(p.prof.OnloadEnv), p.prof.Name)
	return nil
}
