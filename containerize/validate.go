package containerize

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lowlat/lowlat/affinity"
)

// FieldError is an invalid field of Options or Deploy: Field is its Go
// name ("CPUSet"), so that a command can name its own flag.
type FieldError struct {
	Field string
	Value string
	Err   error
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("containerize: %s %q: %v", e.Field, e.Value, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// checkCPUList checks a cpuset in list syntax ("0-3,8") with
// affinity.ParseCPUList; empty is fine (no pinning).
func checkCPUList(field, list string) error {
	if list == "" {
		return nil
	}
	s, err := affinity.ParseCPUList(list)
	if err == nil && s.IsEmpty() {
		err = fmt.Errorf("no CPUs")
	}
	if err != nil {
		return &FieldError{field, list, err}
	}
	return nil
}

// binarySuffixes are the only quantity suffixes emitted: Kubernetes,
// podman and docker all read them as powers of 1024 (podman and docker
// would read "256m" as MiB, Kubernetes as 0.256 bytes, so the decimal and
// milli forms are refused).
var binarySuffixes = []struct {
	s     string
	shift uint
}{{"Ki", 10}, {"Mi", 20}, {"Gi", 30}, {"Ti", 40}}

// ParseBytes parses a memory size as a whole number of bytes or a whole
// number followed by Ki, Mi, Gi or Ti ("256Mi"), the forms that every
// engine and Kubernetes read the same way, and returns it in bytes.
func ParseBytes(s string) (int64, error) {
	num, shift := s, uint(0)
	for _, b := range binarySuffixes {
		if n, ok := strings.CutSuffix(s, b.s); ok {
			num, shift = n, b.shift
			break
		}
	}
	if num == "" || num[0] < '1' || num[0] > '9' || strings.ContainsFunc(num, func(r rune) bool { return r < '0' || r > '9' }) {
		return 0, fmt.Errorf("want a whole number of bytes, or one with Ki, Mi, Gi or Ti (such as 256Mi)")
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v > (1<<62)>>shift {
		return 0, fmt.Errorf("too large")
	}
	return v << shift, nil
}

// Validate checks d as the emitters will use it: Backend, CPUs, CPUSet (a
// CPU list), Memory and Hugepages (sizes ParseBytes reads; huge pages in
// whole 2 MiB pages). Empty fields take their defaults.
func (d Deploy) Validate() error {
	if _, err := Capabilities(d.Backend, d.Realtime); err != nil {
		return err
	}
	if d.CPUs < 0 {
		return &FieldError{"CPUs", strconv.Itoa(d.CPUs), fmt.Errorf("want a positive whole number")}
	}
	if err := checkCPUList("CPUSet", d.CPUSet); err != nil {
		return err
	}
	if d.OnloadResource != "" && (!strings.Contains(d.OnloadResource, "/") || strings.ContainsAny(d.OnloadResource, " \t\n:")) {
		return &FieldError{"OnloadResource", d.OnloadResource, fmt.Errorf("want a domain-qualified extended resource name such as example.com/onload")}
	}
	if d.OnloadLib != "" && (!strings.HasPrefix(d.OnloadLib, "/") || strings.ContainsAny(d.OnloadLib, " \t\n:,")) {
		return &FieldError{"OnloadLib", d.OnloadLib, fmt.Errorf("want the absolute host path of libonload.so, such as %s", DefaultOnloadLib)}
	}
	if d.Memory != "" {
		if _, err := ParseBytes(d.Memory); err != nil {
			return &FieldError{"Memory", d.Memory, err}
		}
	}
	if d.Hugepages != "" {
		n, err := ParseBytes(d.Hugepages)
		if err == nil && n%(2<<20) != 0 {
			err = fmt.Errorf("want a whole number of 2 MiB pages (such as 1Gi)")
		}
		if err != nil {
			return &FieldError{"Hugepages", d.Hugepages, err}
		}
	}
	return nil
}
