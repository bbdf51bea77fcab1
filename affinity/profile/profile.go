package profile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lowlat/lowlat/affinity"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/profiles"
)

// Profile is a parsed profile. The zero value changes nothing.
type Profile struct {
	// Name is the profile's name: the file name without ".profile". It is
	// not part of the file.
	Name        string
	Description string
	Host        Host
	Sysctls     []Sysctl // in file order, required ones first
	Program     Program
	Env         []EnvVar // for every program, in file order
	OnloadEnv   []EnvVar // for non-Go programs when Onload is installed
}

// Host holds the host-wide settings other than sysctls.
type Host struct {
	// HoldCPULatency asks for /dev/cpu_dma_latency to be held at
	// CPULatencyUS while the program runs.
	HoldCPULatency bool
	CPULatencyUS   int
	// THP is the transparent hugepage mode to set ("always", "madvise",
	// "never"), where the switch exists and is writable; "" leaves it.
	THP string
	// MoveIRQs moves the IRQs of the chosen interface onto the IRQ CPUs
	// (by default the online CPUs that the program does not use).
	MoveIRQs bool
	// DisableIdle disables the cpuidle states whose exit latency exceeds
	// IdleMaxLatencyUS on the program's CPUs, where the switches exist.
	DisableIdle      bool
	IdleMaxLatencyUS int
}

// Sysctl is one sysctl setting. An optional one is skipped, with a note,
// when the sysctl does not exist or refuses the write.
type Sysctl struct {
	Name     string
	Value    string
	Optional bool
}

// Program holds how the program itself runs.
type Program struct {
	Sched    affinity.Policy
	Priority int
	// Mlockall asks the program to lock its memory. A wrapper cannot do
	// that for another program (exec drops memory locks): it sets
	// LOWLAT_MLOCKALL=1 for programs that honour it.
	Mlockall bool
}

// EnvVar is one environment variable.
type EnvVar struct {
	Name, Value string
}

// Extension is the file name extension of profile files.
const Extension = ".profile"

// Names lists the built-in profiles.
func Names() []string {
	ents, _ := fs.ReadDir(profiles.FS, ".")
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), Extension); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// IsPath reports whether Load treats ref as a file path rather than a
// built-in name: it holds a slash or ends in ".profile".
func IsPath(ref string) bool {
	return strings.ContainsRune(ref, '/') || strings.HasSuffix(ref, Extension)
}

// ErrUnknown is wrapped by Load for a name that is no built-in profile.
var ErrUnknown = errors.New("unknown profile")

// Load returns the built-in profile named ref, or parses the file ref when
// IsPath(ref). A profile is applied as root, so, read by root, a file is
// trusted as a journal is: it must be owned by root and writable by no
// one else, and so must every directory above it (see
// affinity.TrustedPath); the error of one that is not wraps
// affinity.ErrNotTrusted and says why.
func Load(ref string) (Profile, error) {
	var (
		data []byte
		err  error
		name string
	)
	if IsPath(ref) {
		data, err = readFile(ref)
		if errors.Is(err, affinity.ErrNotTrusted) {
			return Profile{}, fmt.Errorf("profile %s: %w (a profile is applied as root: it must be owned by root and writable by no one else, as must each directory above it)", ref, err)
		}
		name = strings.TrimSuffix(filepath.Base(ref), Extension)
	} else {
		if !validName(ref) {
			return Profile{}, fmt.Errorf("profile %q: %w (built in: %s; or give a file path)", ref, ErrUnknown, strings.Join(Names(), ", "))
		}
		data, err = fs.ReadFile(profiles.FS, ref+Extension)
		name = ref
		if errors.Is(err, fs.ErrNotExist) {
			return Profile{}, fmt.Errorf("profile %q: %w (built in: %s; or give a file path)", ref, ErrUnknown, strings.Join(Names(), ", "))
		}
	}
	if err != nil {
		return Profile{}, fmt.Errorf("load profile: %w", err)
	}
	p, err := Parse(data)
	if err != nil {
		return Profile{}, fmt.Errorf("profile %s: %w", ref, err)
	}
	p.Name = name
	return p, nil
}

// readFile reads a profile file: a regular file (not a device such as
// /dev/zero, nor a pipe such as /dev/stdin, which could be read forever or
// block) of at most maxSize bytes, that root may trust (see Load).
func readFile(path string) ([]byte, error) {
	// Stat before opening: opening a FIFO with no writer blocks.
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%v)", path, st.Mode().Type())
	}
	if path, err = affinity.TrustedPath(path); err != nil {
		return nil, err
	}
	// O_NONBLOCK and a deadline: a "regular" file of procfs that waits for
	// data to read (/proc/kmsg) fails instead of blocking. (A file on a
	// disk cannot wait, and takes no deadline.)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	_ = f.SetReadDeadline(time.Now().Add(time.Second))
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%v)", path, st.Mode().Type())
	} else if err := affinity.CheckTrusted(path, st); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxSize)
	}
	return data, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Section names.
const (
	secTop      = ""
	secHost     = "host"
	secSysctl   = "sysctl"
	secOptional = "sysctl.optional"
	secProgram  = "program"
	secEnv      = "env"
	secOnload   = "onload"
)

var sections = []string{secHost, secSysctl, secOptional, secProgram, secEnv, secOnload}

// SyntaxError is a parse error at a line.
type SyntaxError struct {
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string { return "line " + strconv.Itoa(e.Line) + ": " + e.Msg }

// maxSize bounds a profile file.
const maxSize = 1 << 20

// Parse parses a profile. The Name field is left empty.
func Parse(data []byte) (Profile, error) {
	var p Profile
	if len(data) > maxSize {
		return p, fmt.Errorf("parse profile: %d bytes, want at most %d", len(data), maxSize)
	}
	section := secTop
	seen := map[string]bool{}
	var optional []Sysctl
	lines := strings.Split(string(data), "\n")
	for i, raw := range lines {
		n := i + 1
		line := strings.TrimSpace(strings.TrimSuffix(raw, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			name, rest, ok := strings.Cut(line[1:], "]")
			rest = strings.TrimSpace(rest)
			if !ok || (rest != "" && rest[0] != '#') {
				return p, &SyntaxError{n, "want [section]"}
			}
			name = strings.TrimSpace(name)
			if !slices.Contains(sections, name) {
				return p, &SyntaxError{n, fmt.Sprintf("unknown section [%s] (want %s)", name, strings.Join(sections, ", "))}
			}
			if seen["["+name] {
				return p, &SyntaxError{n, fmt.Sprintf("section [%s] appears twice", name)}
			}
			seen["["+name] = true
			section = name
			continue
		}
		key, val, err := splitKeyValue(line)
		if err != nil {
			return p, &SyntaxError{n, err.Error()}
		}
		if seen[section+"\x00"+key] {
			return p, &SyntaxError{n, fmt.Sprintf("%s appears twice", key)}
		}
		seen[section+"\x00"+key] = true
		if err := p.set(section, key, val, &optional); err != nil {
			return p, &SyntaxError{n, err.Error()}
		}
	}
	p.Sysctls = append(p.Sysctls, optional...)
	if err := p.Validate(); err != nil {
		return p, err
	}
	return p, nil
}

func (p *Profile) set(section, key, val string, optional *[]Sysctl) error {
	switch section {
	case secTop:
		if key != "description" {
			return fmt.Errorf("unknown key %q before the first section (only description)", key)
		}
		p.Description = val
	case secHost:
		switch key {
		case "cpu_dma_latency":
			n, err := atoi(key, val, 0, 2_000_000_000)
			if err != nil {
				return err
			}
			p.Host.HoldCPULatency, p.Host.CPULatencyUS = true, n
		case "transparent_hugepage":
			switch val {
			case "always", "madvise", "never":
			default:
				return fmt.Errorf("transparent_hugepage %q: want always, madvise or never", val)
			}
			p.Host.THP = val
		case "move_irqs":
			b, err := parseBool(key, val)
			if err != nil {
				return err
			}
			p.Host.MoveIRQs = b
		case "idle_max_latency":
			n, err := atoi(key, val, 0, 1_000_000)
			if err != nil {
				return err
			}
			p.Host.DisableIdle, p.Host.IdleMaxLatencyUS = true, n
		default:
			return fmt.Errorf("unknown [host] key %q (want cpu_dma_latency, transparent_hugepage, move_irqs, idle_max_latency)", key)
		}
	case secSysctl, secOptional:
		s := Sysctl{Name: key, Value: val, Optional: section == secOptional}
		if section == secOptional {
			*optional = append(*optional, s)
		} else {
			p.Sysctls = append(p.Sysctls, s)
		}
	case secProgram:
		switch key {
		case "sched":
			pol, err := affinity.ParsePolicy(val)
			if err != nil {
				return err
			}
			p.Program.Sched = pol
		case "priority":
			n, err := atoi(key, val, 0, 99)
			if err != nil {
				return err
			}
			p.Program.Priority = n
		case "mlockall":
			b, err := parseBool(key, val)
			if err != nil {
				return err
			}
			p.Program.Mlockall = b
		default:
			return fmt.Errorf("unknown [program] key %q (want sched, priority, mlockall)", key)
		}
	case secEnv:
		p.Env = append(p.Env, EnvVar{key, val})
	case secOnload:
		p.OnloadEnv = append(p.OnloadEnv, EnvVar{key, val})
	}
	return nil
}

// Validate checks what Parse cannot check line by line, and a Profile
// built in code: sysctl names, environment names and values (LOWLAT_*
// values through the bypass package's own parser), and the scheduling
// priority.
func (p *Profile) Validate() error {
	seen := map[string]bool{}
	for _, s := range p.Sysctls {
		if _, err := affinity.SysctlPath(s.Name); err != nil || strings.HasPrefix(s.Name, "/") {
			return fmt.Errorf("sysctl %q: want a dotted name such as net.core.busy_read", s.Name)
		}
		if seen[s.Name] {
			return fmt.Errorf("sysctl %s is set twice", s.Name)
		}
		seen[s.Name] = true
		if strings.ContainsAny(s.Value, "\n\x00") || strings.TrimSpace(s.Value) == "" {
			return fmt.Errorf("sysctl %s: value %q must be one non-empty line", s.Name, s.Value)
		}
	}
	for _, list := range [][]EnvVar{p.Env, p.OnloadEnv} {
		names := map[string]bool{}
		for _, e := range list {
			if !envName(e.Name) {
				return fmt.Errorf("environment variable %q: not a valid name", e.Name)
			}
			if names[e.Name] {
				return fmt.Errorf("environment variable %s is set twice", e.Name)
			}
			names[e.Name] = true
			if strings.ContainsRune(e.Value, 0) {
				return fmt.Errorf("environment variable %s: value holds a NUL byte", e.Name)
			}
		}
	}
	if err := checkLowlatEnv(p.Env); err != nil {
		return err
	}
	switch p.Program.Sched {
	case affinity.SchedOther:
		if p.Program.Priority != 0 {
			return fmt.Errorf("[program] priority %d needs sched = fifo or rr", p.Program.Priority)
		}
	case affinity.SchedFIFO, affinity.SchedRR:
		if p.Program.Priority < 1 || p.Program.Priority > 99 {
			return fmt.Errorf("[program] sched = %s needs priority 1 to 99", p.Program.Sched)
		}
	default:
		return fmt.Errorf("[program] sched %v: unknown", p.Program.Sched)
	}
	switch p.Host.THP {
	case "", "always", "madvise", "never":
	default:
		return fmt.Errorf("transparent_hugepage %q: want always, madvise or never", p.Host.THP)
	}
	if p.Host.CPULatencyUS < 0 || p.Host.IdleMaxLatencyUS < 0 {
		return errors.New("[host] latencies must not be negative")
	}
	return nil
}

// checkLowlatEnv rejects LOWLAT_* names that no lowlat package reads, and
// values the bypass package would refuse at startup.
func checkLowlatEnv(env []EnvVar) error {
	known := map[string]bool{affinity.EnvCPUs: true, affinity.EnvMlockall: true}
	for _, v := range backend.EnvVars {
		known[v.Name] = true
	}
	vals := map[string]string{}
	for _, e := range env {
		if !strings.HasPrefix(e.Name, "LOWLAT_") {
			continue
		}
		if !known[e.Name] {
			return fmt.Errorf("environment variable %s: no lowlat package reads it", e.Name)
		}
		vals[e.Name] = e.Value
	}
	_, err := backend.FromEnv(backend.Options{}, func(k string) (string, bool) {
		v, ok := vals[k]
		return v, ok
	})
	if err != nil {
		return fmt.Errorf("[env]: %w", err)
	}
	return nil
}

func envName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func atoi(key, val string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(val)
	if err != nil || n < lo || n > hi || (val[0] == '+') || (len(val) > 1 && val[0] == '0') {
		return 0, fmt.Errorf("%s = %q: want a whole number from %d to %d", key, val, lo, hi)
	}
	return n, nil
}

func parseBool(key, val string) (bool, error) {
	switch val {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%s = %q: want true or false", key, val)
}

// splitKeyValue splits `key = value  # comment`.
func splitKeyValue(line string) (key, val string, err error) {
	k, v, ok := strings.Cut(line, "=")
	if !ok {
		return "", "", errors.New("want key = value")
	}
	key = strings.TrimSpace(k)
	if key == "" {
		return "", "", errors.New("empty key")
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return "", "", fmt.Errorf("key %q: use letters, digits, _ . and -", key)
		}
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return "", "", fmt.Errorf("%s: empty value (write \"\" for an empty string)", key)
	}
	if v[0] == '"' {
		val, rest, err := unquote(v)
		if err != nil {
			return "", "", fmt.Errorf("%s: %w", key, err)
		}
		rest = strings.TrimSpace(rest)
		if rest != "" && rest[0] != '#' {
			return "", "", fmt.Errorf("%s: text after the closing quote", key)
		}
		return key, val, nil
	}
	// A bare value ends at a comment: a '#' after blank space.
	for i := 1; i < len(v); i++ {
		if v[i] == '#' && (v[i-1] == ' ' || v[i-1] == '\t') {
			v = strings.TrimSpace(v[:i])
			break
		}
	}
	if v[0] == '#' {
		return "", "", fmt.Errorf("%s: empty value (write \"\" for an empty string)", key)
	}
	if strings.ContainsAny(v, "\"") {
		return "", "", fmt.Errorf("%s: a bare value must not hold '\"' (quote the whole value)", key)
	}
	return key, v, nil
}

// unquote reads a double-quoted string at the start of s and returns it
// and the text after the closing quote.
func unquote(s string) (string, string, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			i++
			if i >= len(s) {
				return "", "", errors.New("unterminated escape")
			}
			switch s[i] {
			case '"', '\\':
				b.WriteByte(s[i])
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				return "", "", fmt.Errorf("unknown escape \\%c", s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", errors.New("missing closing quote")
}

// quote writes v so that splitKeyValue reads it back unchanged: bare when
// that is safe, else double-quoted.
func quote(v string) string {
	bare := v != "" && v == strings.TrimSpace(v) && !strings.ContainsAny(v, "\"#\\\n\r\t") && v[0] != '"'
	if bare {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Format prints p in the profile file format; Parse(Format(p)) gives p
// back (without its Name).
func (p *Profile) Format() string {
	var b strings.Builder
	kv := func(k, v string) { b.WriteString(k + " = " + quote(v) + "\n") }
	if p.Description != "" {
		kv("description", p.Description)
	}
	section := func(name string) {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("[" + name + "]\n")
	}
	h := p.Host
	if h.HoldCPULatency || h.THP != "" || h.MoveIRQs || h.DisableIdle {
		section(secHost)
		if h.HoldCPULatency {
			kv("cpu_dma_latency", strconv.Itoa(h.CPULatencyUS))
		}
		if h.THP != "" {
			kv("transparent_hugepage", h.THP)
		}
		if h.MoveIRQs {
			kv("move_irqs", "true")
		}
		if h.DisableIdle {
			kv("idle_max_latency", strconv.Itoa(h.IdleMaxLatencyUS))
		}
	}
	for _, opt := range []bool{false, true} {
		first := true
		for _, s := range p.Sysctls {
			if s.Optional != opt {
				continue
			}
			if first {
				section(map[bool]string{false: secSysctl, true: secOptional}[opt])
				first = false
			}
			kv(s.Name, s.Value)
		}
	}
	if p.Program != (Program{}) {
		section(secProgram)
		if p.Program.Sched != affinity.SchedOther {
			kv("sched", p.Program.Sched.String())
			kv("priority", strconv.Itoa(p.Program.Priority))
		}
		if p.Program.Mlockall {
			kv("mlockall", "true")
		}
	}
	for _, l := range []struct {
		name string
		env  []EnvVar
	}{{secEnv, p.Env}, {secOnload, p.OnloadEnv}} {
		if len(l.env) == 0 {
			continue
		}
		section(l.name)
		for _, e := range l.env {
			kv(e.Name, e.Value)
		}
	}
	return b.String()
}

// codeEnv are the environment variables, beyond every LD_* one, that make
// a program (or the dynamic loader, libc, a shell or an interpreter it
// runs) load or run code from where they point.
var codeEnv = []string{
	"GCONV_PATH", "BASH_ENV", "ENV", "SHELLOPTS", "PS4",
	"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PERL5LIB", "PERLLIB", "PERL5OPT",
	"RUBYLIB", "RUBYOPT", "NODE_OPTIONS", "NODE_PATH", "LUA_PATH", "LUA_CPATH",
	"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
}

// LoadsCode reports whether the environment variable name makes a program
// load or run code named by its value: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT
// and every other LD_* variable of the dynamic loader, and the kin in
// codeEnv.
func LoadsCode(name string) bool {
	return strings.HasPrefix(name, "LD_") || slices.Contains(codeEnv, name)
}

// CodeEnv returns the names of the [env] and [onload] variables that make
// the program load code (see LoadsCode), in file order.
func (p *Profile) CodeEnv() []string {
	var out []string
	for _, list := range [][]EnvVar{p.Env, p.OnloadEnv} {
		for _, e := range list {
			if LoadsCode(e.Name) {
				out = append(out, e.Name)
			}
		}
	}
	return out
}

// ChangesHost reports whether applying p changes anything on the host (as
// opposed to the program's own scheduling and environment).
func (p *Profile) ChangesHost() bool {
	h := p.Host
	return h.HoldCPULatency || h.THP != "" || h.MoveIRQs || h.DisableIdle || len(p.Sysctls) > 0
}
