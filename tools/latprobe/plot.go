package main

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strconv"

	"github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// series is one line of a percentile distribution plot: round-trip times
// in microseconds at percentiles between 0 and 100.
type series struct {
	name        string
	percentiles []float64
	micros      []float64
}

// maxPlotPercentile is where the plot's x axis ends: 99.999%, or
// 1/(1-p) = 100000.
const maxPlotPercentile = 99.999

// histSeries takes the percentile distribution of h (in ns), point by
// point, as HdrHistogram's own percentile output lists it.
func histSeries(name string, h *hdrhistogram.Histogram) series {
	s := series{name: name}
	if h.TotalCount() == 0 {
		return s
	}
	// Fixed steps on the log scale of 1/(1-p): ten per decade.
	for i := 0; ; i++ {
		p := 100 * (1 - math.Pow(10, -float64(i)/10))
		if p > maxPlotPercentile {
			p = maxPlotPercentile
		}
		s.percentiles = append(s.percentiles, p)
		s.micros = append(s.micros, float64(h.ValueAtPercentile(p))/1e3)
		if p == maxPlotPercentile {
			break
		}
	}
	return s
}

// pointSeries is a series from a few known percentiles (such as the ones
// sockperf prints).
func pointSeries(name string, percentiles, micros []float64) series {
	return series{name: name, percentiles: percentiles, micros: micros}
}

// plotX places percentile p on the x axis: 1/(1-p).
func plotX(p float64) float64 {
	p = math.Min(p, maxPlotPercentile)
	return 1 / (1 - p/100)
}

// percentileTicks labels the x axis at 0%, 90%, 99%, ... 99.999%.
type percentileTicks struct{}

func (percentileTicks) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for d, label := range []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"} {
		ticks = append(ticks, plot.Tick{Value: math.Pow(10, float64(d)), Label: label})
	}
	return ticks
}

// latencyTicks labels a log latency axis at 1, 2 and 5 of every decade in
// range, so that even a narrow range (5 to 40 µs) shows a few values.
type latencyTicks struct{}

func (latencyTicks) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for d := math.Floor(math.Log10(min)); d <= math.Ceil(math.Log10(max)); d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if v < min || v > max {
				continue
			}
			ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
		}
	}
	return ticks
}

// newPlot draws the series as a percentile distribution, HdrHistogram's
// way: latency against percentile, the percentile on a log scale of
// 1/(1-p) out to 99.999%, and the latency on a log scale too, so that one
// run's stall of milliseconds does not flatten every other curve's body of
// microseconds into a line at zero. One line per series, in fixed fonts
// and sizes so that the output is reproducible.
func newPlot(title string, all []series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "round trip (µs, log scale)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = percentileTicks{}
	p.X.Min, p.X.Max = 1, 2*plotX(maxPlotPercentile) // room for the last label
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = latencyTicks{}
	p.Y.Min = math.Inf(1)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(10)
	p.Add(plotter.NewGrid())
	for i, s := range all {
		if len(s.percentiles) == 0 {
			continue
		}
		pts := make(plotter.XYs, len(s.percentiles))
		for j := range s.percentiles {
			pts[j].X = plotX(s.percentiles[j])
			// A log axis has no zero: a value below the histograms'
			// 1 ns floor is drawn at it.
			pts[j].Y = math.Max(s.micros[j], 1e-3)
			p.Y.Max = math.Max(p.Y.Max, pts[j].Y*1.2)
			p.Y.Min = math.Min(p.Y.Min, pts[j].Y/1.2)
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("series %s: %w", s.name, err)
		}
		l.Color = plotColor(i)
		l.Width = vg.Points(1.5)
		l.Dashes = plotDashes(i)
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	if math.IsInf(p.Y.Min, 1) {
		p.Y.Min, p.Y.Max = 1, 10 // no data: an empty decade
	}
	return p, nil
}

// The palette: distinct hues, and dashes once they repeat.
var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, {0xd6, 0x27, 0x28, 0xff}, {0x2c, 0xa0, 0x2c, 0xff},
	{0xff, 0x7f, 0x0e, 0xff}, {0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff},
}

func plotColor(i int) color.Color { return palette[i%len(palette)] }

func plotDashes(i int) []vg.Length {
	if (i/len(palette))%2 == 1 {
		return []vg.Length{vg.Points(4), vg.Points(2)}
	}
	return nil
}

// writePlot draws the series into name, as SVG or PNG by its extension.
func writePlot(name, title string, all []series) error {
	if err := checkPlotName(name); err != nil {
		return fmt.Errorf("--plot %s: %w", name, err)
	}
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	p, err := newPlot(title, all)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	if err := p.Save(8*vg.Inch, 5*vg.Inch, name); err != nil {
		return fmt.Errorf("--plot %s: %w", filepath.Base(name), err)
	}
	return nil
}
