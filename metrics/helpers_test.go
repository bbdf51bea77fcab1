package metrics_test

import (
	"net/netip"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

func netipLoopback() netip.AddrPort { return netip.MustParseAddrPort("127.0.0.1:0") }

// filtered passes on only the metrics whose description names one metric.
type filtered struct {
	c    prometheus.Collector
	name string
}

func (f filtered) Describe(ch chan<- *prometheus.Desc) { f.c.Describe(ch) }

func (f filtered) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 64)
	go func() { f.c.Collect(all); close(all) }()
	for m := range all {
		if strings.Contains(m.Desc().String(), `"`+f.name+`"`) {
			ch <- m
		}
	}
}
