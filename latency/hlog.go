package latency

import (
	"fmt"
	"io"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// IntervalSink receives the round trips of one interval. h is reused once
// the call returns.
type IntervalSink interface {
	WriteInterval(h *hdrhistogram.Histogram, start, end time.Time) error
}

// HlogWriter writes intervals as an HdrHistogram interval log (.hlog), the
// text format HdrHistogram's own tools read (HistogramLogProcessor,
// HistogramLogAnalyzer, hdrhistogram-go's log reader): a header with the
// start time, then one line per interval with its start relative to the
// log's base time, its length, its maximum in milliseconds and the
// compressed histogram of nanosecond values.
type HlogWriter struct {
	lw  *hdrhistogram.HistogramLogWriter
	tag string
}

// NewHlogWriter writes the log header to w, with start as the log's start
// and base time and comment as a comment line (skipped when empty).
func NewHlogWriter(w io.Writer, start time.Time, comment string) (*HlogWriter, error) {
	lw := hdrhistogram.NewHistogramLogWriter(w)
	ms := start.UnixMilli()
	lw.SetBaseTime(ms)
	steps := []func() error{
		lw.OutputLogFormatVersion,
		func() error { return lw.OutputStartTime(ms) },
		func() error { return lw.OutputBaseTime(ms) },
	}
	if comment != "" {
		steps = append(steps, func() error { return lw.OutputComment(comment) })
	}
	steps = append(steps, lw.OutputLegend)
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("write hlog header: %w", err)
		}
	}
	return &HlogWriter{lw: lw}, nil
}

// SetTag labels the intervals written from now on (for example the message
// size of one step of a sweep). A tag holds no commas, spaces or newlines.
func (l *HlogWriter) SetTag(tag string) { l.tag = tag }

// WriteInterval writes one interval line.
func (l *HlogWriter) WriteInterval(h *hdrhistogram.Histogram, start, end time.Time) error {
	h.SetStartTimeMs(start.UnixMilli())
	h.SetEndTimeMs(end.UnixMilli())
	h.SetTag(l.tag)
	return l.lw.OutputIntervalHistogram(h)
}
