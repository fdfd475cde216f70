package main

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

//go:embed report.html.tmpl
var reportTmpl string

// series is one line of a chart.
type series struct {
	Name, Color string
	X, Y        []float64
}

// axis maps data to pixels and labels its ticks.
type axis struct {
	lo, hi   float64
	pLo, pHi float64
	ticks    []float64
	label    func(float64) string
}

func (a axis) px(v float64) float64 {
	if a.hi == a.lo {
		return a.pLo
	}
	return a.pLo + (v-a.lo)/(a.hi-a.lo)*(a.pHi-a.pLo)
}

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) (float64, float64, []float64) {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	lo = math.Floor(lo/step) * step
	hi = math.Ceil(hi/step) * step
	var t []float64
	for v := lo; v <= hi+step/2 && len(t) < 50; v += step {
		t = append(t, v)
	}
	return lo, hi, t
}

func human(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return trimF(v/1e9) + "G"
	case a >= 1e6:
		return trimF(v/1e6) + "M"
	case a >= 1e3:
		return trimF(v/1e3) + "k"
	}
	return trimF(v)
}

func trimF(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

const chartW, chartH, padL, padR, padT, padB = 720, 260, 64, 16, 24, 36

// svgChart draws line series as an inline SVG: no script, no CDN.
func svgChart(title, xName, yName string, ss []series, x *axis) template.HTML {
	var yMax, xMin, xMax float64 = 0, math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for i := range s.X {
			yMax = max(yMax, s.Y[i])
			xMin, xMax = min(xMin, s.X[i]), max(xMax, s.X[i])
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" width="%d" height="%d" role="img"><title>%s</title>`, chartW, chartH, chartW, chartH, template.HTMLEscapeString(title))
	if math.IsInf(xMin, 1) {
		b.WriteString(`<text x="20" y="40">no data</text></svg>`)
		return template.HTML(b.String())
	}
	if x == nil {
		lo, hi, t := niceTicks(xMin, xMax, 8)
		x = &axis{lo: lo, hi: hi, ticks: t, label: human}
	}
	x.pLo, x.pHi = padL, chartW-padR
	ylo, yhi, yt := niceTicks(0, yMax, 5)
	y := axis{lo: ylo, hi: yhi, pLo: chartH - padB, pHi: padT, ticks: yt, label: human}
	for _, t := range y.ticks {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end" font-size="11">%s</text>`,
			padL, chartW-padR, y.px(t), y.px(t), padL-4, y.px(t)+4, y.label(t))
	}
	for _, t := range x.ticks {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/><text x="%.1f" y="%d" text-anchor="middle" font-size="11">%s</text>`,
			x.px(t), x.px(t), padT, chartH-padB, x.px(t), chartH-padB+14, x.label(t))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="12">%s</text>`, (padL+chartW-padR)/2, chartH-4, template.HTMLEscapeString(xName))
	fmt.Fprintf(&b, `<text x="12" y="%d" font-size="12" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>`, chartH/2, chartH/2, template.HTMLEscapeString(yName))
	legendStep := 300
	if len(ss) > 2 {
		legendStep = (chartW - padL - padR) / len(ss)
	}
	for i, s := range ss {
		var pts strings.Builder
		for k := range s.X {
			fmt.Fprintf(&pts, "%.1f,%.1f ", x.px(s.X[k]), y.px(s.Y[k]))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`, s.Color, pts.String())
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" fill="%s">%s</text>`, padL+8+i*legendStep, padT-8, s.Color, template.HTMLEscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// latencyChart plots latency against percentile on the usual 1/(1-p)
// scale, so the tail gets as much room as the median.
func latencyChart(curve [][2]float64) template.HTML {
	tr := func(p float64) float64 { return -math.Log10(max(1-p/100, 1e-6)) }
	s := series{Name: "send-to-receive latency (ms)", Color: "#1f77b4"}
	for _, c := range curve {
		s.X = append(s.X, tr(c[0]))
		s.Y = append(s.Y, c[1]/1000)
	}
	labels := []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "100%"}
	x := &axis{lo: 0, hi: 6, ticks: []float64{0, 1, 2, 3, 4, 5, 6},
		label: func(v float64) string { return labels[int(v)] }}
	return svgChart("latency distribution", "percentile", "ms", []series{s}, x)
}

type htmlData struct {
	*Report
	Summary                                                      string
	LatChart, RateChart, ConnChart, RSSChart, P99Chart, CPUChart template.HTML
	NodeRSSChart, NodeCPUChart                                   template.HTML // several -url nodes only
	HasServer                                                    bool
	FailText                                                     string
}

func renderHTML(w io.Writer, r *Report) error {
	var sum strings.Builder
	printSummary(&sum, r)
	d := htmlData{Report: r, Summary: sum.String(), LatChart: latencyChart(r.LatencyCurve), HasServer: r.Server.Available}
	rate := series{Name: "deliveries/s", Color: "#2ca02c"}
	conns := series{Name: "open connections (generator)", Color: "#1f77b4"}
	srvConns := series{Name: "server nbchat_connections", Color: "#ff7f0e"}
	rss := series{Name: "server RSS (MiB)", Color: "#d62728"}
	p99 := series{Name: "p99 latency per 250 ms window (ms)", Color: "#9467bd"}
	genRSS := series{Name: "generator RSS (MiB)", Color: "#7f7f7f"}
	srvCPU := series{Name: "server CPU (cores)", Color: "#d62728"}
	genCPU := series{Name: "generator CPU (cores)", Color: "#7f7f7f"}
	var prev *point
	for i, p := range r.Series {
		genRSS.X, genRSS.Y = append(genRSS.X, p.T), append(genRSS.Y, float64(p.GenRSS)/(1<<20))
		if prev != nil && p.T > prev.T {
			dt := p.T - prev.T
			genCPU.X, genCPU.Y = append(genCPU.X, p.T), append(genCPU.Y, max(0, p.GenCPU-prev.GenCPU)/dt)
			if p.Server != nil && prev.Server != nil {
				srvCPU.X, srvCPU.Y = append(srvCPU.X, p.T), append(srvCPU.Y, max(0, p.Server.CPU-prev.Server.CPU)/dt)
			}
		}
		prev = &r.Series[i]
		rate.X, rate.Y = append(rate.X, p.T), append(rate.Y, p.DelivRate)
		conns.X, conns.Y = append(conns.X, p.T), append(conns.Y, float64(p.Open))
		p99.X, p99.Y = append(p99.X, p.T), append(p99.Y, float64(p.P99)/1000)
		if p.Server != nil {
			srvConns.X, srvConns.Y = append(srvConns.X, p.T), append(srvConns.Y, p.Server.Conns)
			rss.X, rss.Y = append(rss.X, p.T), append(rss.Y, p.Server.RSS/(1<<20))
		}
	}
	d.RateChart = svgChart("deliveries per second", "seconds", "deliveries/s", []series{rate}, nil)
	d.ConnChart = svgChart("connections", "seconds", "connections", []series{conns, srvConns}, nil)
	d.RSSChart = svgChart("memory", "seconds", "MiB", []series{rss, genRSS}, nil)
	d.CPUChart = svgChart("CPU", "seconds", "cores", []series{srvCPU, genCPU}, nil)
	d.P99Chart = svgChart("latency over time", "seconds", "ms", []series{p99}, nil)
	if len(r.Nodes) > 0 {
		d.NodeRSSChart, d.NodeCPUChart = nodeCharts(r.Series, len(r.Nodes))
	}
	if !r.Verdict.OK {
		d.FailText = strings.Join(r.Verdict.Reasons, "; ")
	}
	t, err := template.New("report").Funcs(template.FuncMap{"mib": func(v float64) float64 { return v / (1 << 20) }}).Parse(reportTmpl)
	if err != nil {
		return err
	}
	return t.Execute(w, d)
}

var nodeColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"}

// nodeCharts draws RSS and CPU over time, one line per cluster node.
func nodeCharts(pts []point, nodes int) (rssChart, cpuChart template.HTML) {
	rss, cpu := make([]series, nodes), make([]series, nodes)
	for i := range rss {
		c := nodeColors[i%len(nodeColors)]
		rss[i] = series{Name: fmt.Sprintf("node %d RSS (MiB)", i+1), Color: c}
		cpu[i] = series{Name: fmt.Sprintf("node %d CPU (cores)", i+1), Color: c}
	}
	for k, p := range pts {
		for i := 0; i < nodes && i < len(p.Nodes); i++ {
			s := p.Nodes[i]
			if s == nil {
				continue
			}
			rss[i].X, rss[i].Y = append(rss[i].X, p.T), append(rss[i].Y, s.RSS/(1<<20))
			if k == 0 || i >= len(pts[k-1].Nodes) || pts[k-1].Nodes[i] == nil || p.T <= pts[k-1].T {
				continue
			}
			prev := pts[k-1].Nodes[i]
			cpu[i].X, cpu[i].Y = append(cpu[i].X, p.T), append(cpu[i].Y, max(0, s.CPU-prev.CPU)/(p.T-pts[k-1].T))
		}
	}
	return svgChart("memory per node", "seconds", "MiB", rss, nil), svgChart("CPU per node", "seconds", "cores", cpu, nil)
}
