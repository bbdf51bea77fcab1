package backend

import (
	"strings"
	"testing"
)

// TestFromEnvNamesVariable: every malformed or out-of-range LOWLAT_* value
// is refused with the variable's name and a bounded quote of the value,
// and an empty or blank value is the same as an unset one, for every
// variable.
func TestFromEnvNamesVariable(t *testing.T) {
	long := strings.Repeat("7", 100_000)
	for _, kv := range [][2]string{
		{"LOWLAT_BACKEND", "warp"}, {"LOWLAT_WAIT", "sometimes"}, {"LOWLAT_READ_TIMEOUT", "soon"},
		{"LOWLAT_READ_TIMEOUT", "-1s"}, {"LOWLAT_BATCH", "-1"}, {"LOWLAT_BATCH", "0"}, {"LOWLAT_BATCH", "2000"},
		{"LOWLAT_BATCH", long}, {"LOWLAT_BUSY_POLL_US", "0"}, {"LOWLAT_BUSY_POLL_US", "9999999"},
		{"LOWLAT_BUSY_POLL_BUDGET", "0"}, {"LOWLAT_BUSY_POLL_BUDGET", "5000"}, {"LOWLAT_IFACE", "a-very-long-interface-name"},
		{"LOWLAT_QUEUE", "-2"}, {"LOWLAT_QUEUE", "one"}, {"LOWLAT_XDP_MODE", "fast"}, {"LOWLAT_XDP_BIND", "glue"},
		{"LOWLAT_XDP_FRAMES", "0"}, {"LOWLAT_XDP_FRAMES", "100"}, {"LOWLAT_XDP_RING", "0"}, {"LOWLAT_XDP_RING", "3"},
		{"LOWLAT_XDP_BUSY_POLL", "maybe"},
	} {
		_, err := FromEnv(Options{}, func(name string) (string, bool) { return kv[1], name == kv[0] })
		if err == nil || !strings.HasPrefix(err.Error(), kv[0]+"=") || len(err.Error()) > 300 {
			t.Errorf("%s=%.20s: %.300v", kv[0], kv[1], err)
		}
	}
	for _, v := range EnvVars {
		for _, empty := range []string{"", "  "} {
			o, err := FromEnv(Options{BatchSize: 8}, func(name string) (string, bool) { return empty, name == v.Name })
			if err != nil || o.BatchSize != 8 || o.Backend != "" {
				t.Errorf("%s=%q: %+v, %v; want it read as unset", v.Name, empty, o, err)
			}
		}
	}
}
