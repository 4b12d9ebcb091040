package main

import (
	"fmt"
	"image/color"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// plotReady draws the Ready pods of all workloads over time, one line per
// drainer, with the desired count dashed.
func plotReady(path, title string, results []Result, workloads []workload) error {
	var desired int32
	var names []string
	for _, w := range workloads {
		desired += w.replicas
		names = append(names, w.name)
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Ready pods during a Spot hand-off (desired %d; %s; above %d: a surge)", desired, title, desired)
	p.X.Label.Text = "seconds since the signal"
	p.Y.Label.Text = "Ready pods (" + strings.Join(names, " + ") + ")"
	colors := []color.Color{color.RGBA{R: 0x1b, G: 0x9e, B: 0x77, A: 0xff}, color.RGBA{R: 0xd9, G: 0x5f, B: 0x02, A: 0xff},
		color.RGBA{R: 0x75, G: 0x70, B: 0xb3, A: 0xff}, color.RGBA{R: 0xe7, G: 0x29, B: 0x8a, A: 0xff}}
	maxT := 0.0
	for i, r := range results {
		pts := make(plotter.XYs, len(r.Samples))
		for k, s := range r.Samples {
			var ready int32
			for _, v := range s.Ready {
				ready += v
			}
			pts[k].X, pts[k].Y = s.At, float64(ready)
			maxT = max(maxT, s.At)
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = colors[i%len(colors)]
		line.Width = vg.Points(2)
		p.Add(line)
		p.Legend.Add(r.Drainer, line)
	}
	want, err := plotter.NewLine(plotter.XYs{{X: 0, Y: float64(desired)}, {X: maxT, Y: float64(desired)}})
	if err != nil {
		return err
	}
	want.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	want.Color = color.Gray{Y: 0x80}
	p.Add(want)
	p.Legend.Add("desired", want)
	p.Legend.Top, p.Legend.Left = false, true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(12), vg.Points(12)
	peak := float64(desired)
	for _, r := range results {
		for _, s := range r.Samples {
			var ready int32
			for _, v := range s.Ready {
				ready += v
			}
			peak = max(peak, float64(ready))
		}
	}
	p.Y.Min, p.Y.Max = 0, peak+1
	p.Add(plotter.NewGrid())
	return p.Save(9*vg.Inch, 4.5*vg.Inch, path)
}
