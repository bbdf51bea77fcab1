package affinity

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// MaxCPU is one more than the highest CPU number a CPUSet can hold. It
// matches the kernel's CONFIG_NR_CPUS ceiling for the sched_setaffinity mask
// that golang.org/x/sys/unix uses (1024 bits).
const MaxCPU = 1024

// ErrCPURange is returned (wrapped) for a CPU number outside 0..MaxCPU-1.
var ErrCPURange = errors.New("cpu number out of range")

// CPUSet is a set of CPU numbers. The zero value is the empty set. A CPUSet
// is a value: copies are independent.
type CPUSet struct {
	bits [MaxCPU / 64]uint64
}

// NewCPUSet returns the set holding cpus. It panics on a CPU outside
// 0..MaxCPU-1, like a slice index would; use Add to get an error instead.
func NewCPUSet(cpus ...int) CPUSet {
	var s CPUSet
	for _, c := range cpus {
		if err := s.Add(c); err != nil {
			panic(err)
		}
	}
	return s
}

// Add puts cpu in the set.
func (s *CPUSet) Add(cpu int) error {
	if cpu < 0 || cpu >= MaxCPU {
		return fmt.Errorf("cpu %d: %w (want 0 to %d)", cpu, ErrCPURange, MaxCPU-1)
	}
	s.bits[cpu/64] |= 1 << (uint(cpu) % 64)
	return nil
}

// Remove takes cpu out of the set; CPUs outside the range are ignored.
func (s *CPUSet) Remove(cpu int) {
	if cpu < 0 || cpu >= MaxCPU {
		return
	}
	s.bits[cpu/64] &^= 1 << (uint(cpu) % 64)
}

// Contains reports whether cpu is in the set.
func (s CPUSet) Contains(cpu int) bool {
	if cpu < 0 || cpu >= MaxCPU {
		return false
	}
	return s.bits[cpu/64]&(1<<(uint(cpu)%64)) != 0
}

// Len is the number of CPUs in the set.
func (s CPUSet) Len() int {
	n := 0
	for _, w := range s.bits {
		n += bits.OnesCount64(w)
	}
	return n
}

// IsEmpty reports whether the set holds no CPU.
func (s CPUSet) IsEmpty() bool { return s.Len() == 0 }

// CPUs returns the members in ascending order.
func (s CPUSet) CPUs() []int {
	out := make([]int, 0, s.Len())
	for i, w := range s.bits {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			out = append(out, i*64+b)
			w &^= 1 << uint(b)
		}
	}
	return out
}

// First returns the lowest CPU in the set, or -1 when it is empty.
func (s CPUSet) First() int {
	for i, w := range s.bits {
		if w != 0 {
			return i*64 + bits.TrailingZeros64(w)
		}
	}
	return -1
}

// Union returns the CPUs in s or o.
func (s CPUSet) Union(o CPUSet) CPUSet {
	for i := range s.bits {
		s.bits[i] |= o.bits[i]
	}
	return s
}

// Intersect returns the CPUs in both s and o.
func (s CPUSet) Intersect(o CPUSet) CPUSet {
	for i := range s.bits {
		s.bits[i] &= o.bits[i]
	}
	return s
}

// Difference returns the CPUs in s that are not in o.
func (s CPUSet) Difference(o CPUSet) CPUSet {
	for i := range s.bits {
		s.bits[i] &^= o.bits[i]
	}
	return s
}

// IsSubsetOf reports whether every CPU of s is in o.
func (s CPUSet) IsSubsetOf(o CPUSet) bool {
	for i := range s.bits {
		if s.bits[i]&^o.bits[i] != 0 {
			return false
		}
	}
	return true
}

// Equal reports whether s and o hold the same CPUs.
func (s CPUSet) Equal(o CPUSet) bool { return s.bits == o.bits }

// String prints the set in the kernel's list syntax, "0-3,8,10-11", the
// form /sys/devices/system/cpu/online and smp_affinity_list use. The empty
// set prints as "".
func (s CPUSet) String() string {
	var b strings.Builder
	start, prev := -1, -1
	flush := func() {
		if start < 0 {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(start))
		if prev > start {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(prev))
		}
	}
	for _, c := range s.CPUs() {
		if start >= 0 && c == prev+1 {
			prev = c
			continue
		}
		flush()
		start, prev = c, c
	}
	flush()
	return b.String()
}

// MarshalText prints the list syntax, so a CPUSet reads well in JSON.
func (s CPUSet) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses the list syntax.
func (s *CPUSet) UnmarshalText(b []byte) error {
	v, err := ParseCPUList(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseCPUList parses the kernel's CPU list syntax: comma-separated CPU
// numbers and inclusive ranges ("0-3,8,10-11"), and the kernel's grouped
// form "0-15:2/4" (of every group of 4 CPUs in the range, the first 2) that
// isolcpus and cpusets accept. Blank space around the whole list and a
// trailing newline are allowed; an empty list is the empty set. String
// prints the plain form, so grouped input round-trips to its expansion.
func ParseCPUList(list string) (CPUSet, error) {
	var s CPUSet
	list = strings.TrimSpace(list)
	if list == "" {
		return s, nil
	}
	for _, part := range strings.Split(list, ",") {
		if err := s.addRange(part); err != nil {
			return CPUSet{}, fmt.Errorf("parse cpu list %q: %w", list, err)
		}
	}
	return s, nil
}

func (s *CPUSet) addRange(part string) error {
	rng, groupText, grouped := strings.Cut(part, ":")
	loText, hiText, isRange := strings.Cut(rng, "-")
	lo, err := parseCPU(loText)
	if err != nil {
		return err
	}
	hi := lo
	if isRange {
		if hi, err = parseCPU(hiText); err != nil {
			return err
		}
		if hi < lo {
			return fmt.Errorf("range %q: end before start", part)
		}
	}
	used, size := 1, 1
	if grouped {
		if !isRange {
			return fmt.Errorf("%q: a group needs a range", part)
		}
		usedText, sizeText, ok := strings.Cut(groupText, "/")
		if !ok {
			return fmt.Errorf("%q: want RANGE:USED/GROUP", part)
		}
		if used, err = parseCPU(usedText); err != nil {
			return fmt.Errorf("%q: %w", part, err)
		}
		if size, err = parseCPU(sizeText); err != nil {
			return fmt.Errorf("%q: %w", part, err)
		}
		if used < 1 || size < 1 || used > size {
			return fmt.Errorf("%q: want 1 <= USED <= GROUP", part)
		}
	}
	for c := lo; c <= hi; c++ {
		if (c-lo)%size < used {
			s.bits[c/64] |= 1 << (uint(c) % 64)
		}
	}
	return nil
}

func parseCPU(t string) (int, error) {
	if t == "" {
		return 0, errors.New("empty cpu number")
	}
	for i := 0; i < len(t); i++ {
		if t[i] < '0' || t[i] > '9' {
			return 0, fmt.Errorf("%q: not a cpu number", t)
		}
	}
	if len(t) > 6 {
		return 0, fmt.Errorf("cpu %s: %w (want 0 to %d)", t, ErrCPURange, MaxCPU-1)
	}
	n, _ := strconv.Atoi(t)
	if n >= MaxCPU {
		return 0, fmt.Errorf("cpu %d: %w (want 0 to %d)", n, ErrCPURange, MaxCPU-1)
	}
	return n, nil
}

// MustParseCPUList is ParseCPUList for constants in tests and examples; it
// panics on a malformed list.
func MustParseCPUList(list string) CPUSet {
	s, err := ParseCPUList(list)
	if err != nil {
		panic(err)
	}
	return s
}
