package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// point is one second of the run's time series.
type point struct {
	T         float64    `json:"t"`
	Phase     string     `json:"phase"`
	Open      int64      `json:"open"`
	ChurnOpen int64      `json:"churn_open"`
	Deliv     int64      `json:"deliveries"`
	DelivRate float64    `json:"deliveries_per_s"`
	Sent      int64      `json:"sent"`
	P99       int64      `json:"p99_us"` // worst process's p99 over the last 250 ms
	Max       int64      `json:"max_us"`
	GenRSS    int64      `json:"generator_rss"`
	GenCPU    float64    `json:"generator_cpu_seconds"`
	Server    *srvSample `json:"server,omitempty"` // with several nodes: their sum
	// Nodes has each node's sample (null where one did not answer), only
	// with several -url nodes.
	Nodes []*srvSample `json:"nodes,omitempty"`
}

// srvSample is what we read from the server's /metrics.
type srvSample struct {
	RSS        float64 `json:"rss_bytes"`
	CPU        float64 `json:"cpu_seconds"`
	Goroutines float64 `json:"goroutines"`
	Conns      float64 `json:"connections"`
	MsgsIn     float64 `json:"messages_in"`
	Deliveries float64 `json:"deliveries"`
}

// coordinator drives the shards through the phases and samples everything
// once a second.
type coordinator struct {
	cfg    *Config
	shards []*shardProc
	start  time.Time
	prog   *progress
	client *http.Client

	mu       sync.Mutex
	phase    string
	series   []point
	phases   []phaseSpan
	srvError string   // the last metrics error of any node
	nodeErr  []string // the last metrics error of each node
}

type phaseSpan struct {
	Name  string  `json:"name"`
	Start float64 `json:"start_s"`
	End   float64 `json:"end_s"`
}

func (co *coordinator) setPhase(name string) {
	co.mu.Lock()
	defer co.mu.Unlock()
	now := time.Since(co.start).Seconds()
	if n := len(co.phases); n > 0 {
		co.phases[n-1].End = now
	}
	co.phase = name
	if name != "" {
		co.phases = append(co.phases, phaseSpan{Name: name, Start: now})
	}
}

// sum adds the latest ticks of all shards.
func (co *coordinator) sum() (t tick) {
	for _, s := range co.shards {
		l := s.lastTick()
		t.Open += l.Open
		t.ChurnOpen += l.ChurnOpen
		t.Joined += l.Joined
		t.Failed += l.Failed
		t.Sent += l.Sent
		t.Expected += l.Expected
		t.Deliv += l.Deliv
		t.Dups += l.Dups
		t.ChurnDeliv += l.ChurnDeliv
		t.WinP99 = max(t.WinP99, l.WinP99)
		t.WinMax = max(t.WinMax, l.WinMax)
		t.RSS += l.RSS
		t.CPU += l.CPU
	}
	return t
}

// sample runs once a second until stop is closed.
func (co *coordinator) sample(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	var prev int64
	prevT := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-tk.C:
			t := co.sum()
			srv, nodes := co.scrape()
			co.mu.Lock()
			p := point{T: now.Sub(co.start).Seconds(), Phase: co.phase, Open: t.Open, ChurnOpen: t.ChurnOpen,
				Deliv: t.Deliv, Sent: t.Sent, P99: t.WinP99, Max: t.WinMax, Server: srv, GenRSS: t.RSS, GenCPU: t.CPU}
			if len(nodes) > 1 {
				p.Nodes = nodes
			}
			p.DelivRate = float64(t.Deliv-prev) / now.Sub(prevT).Seconds()
			prev, prevT = t.Deliv, now
			co.series = append(co.series, p)
			phase := co.phase
			co.mu.Unlock()
			co.prog.update(phase, t.Open, int64(co.cfg.Conns), p.DelivRate, time.Since(co.start))
		}
	}
}

// parseMetrics reads the few series we need from the Prometheus text
// format, summing over labels (a counter may be split by label).
func parseMetrics(r io.Reader) *srvSample {
	s := &srvSample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
			_, rest, ok = strings.Cut(line[strings.LastIndexByte(line, '}')+1:], " ")
		}
		if !ok {
			continue
		}
		val, _, _ := strings.Cut(strings.TrimSpace(rest), " ") // drop a timestamp
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		switch name {
		case "process_resident_memory_bytes":
			s.RSS += v
		case "process_cpu_seconds_total":
			s.CPU += v
		case "go_goroutines":
			s.Goroutines += v
		case "nbchat_connections":
			s.Conns += v
		case "nbchat_messages_in_total":
			s.MsgsIn += v
		case "nbchat_deliveries_total":
			s.Deliveries += v
		}
	}
	return s
}

// progress shows a one-line bar on a terminal, else a line every 5 s.
type progress struct {
	mode string
	w    io.Writer
	last time.Time
}

func newProgress(mode string, w io.Writer) *progress {
	if mode == "auto" {
		mode = "lines"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			mode = "bar"
		}
	}
	return &progress{mode: mode, w: w}
}

func (p *progress) update(phase string, open, target int64, rate float64, el time.Duration) {
	line := fmt.Sprintf("%-8s conns %6d/%-6d  %9.0f deliveries/s  %6.1fs", phase, open, target, rate, el.Seconds())
	switch p.mode {
	case "bar":
		const width = 20
		fill := int(width * min(1, float64(open)/float64(max(target, 1))))
		fmt.Fprintf(p.w, "\r\033[K[%s%s] %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill), line)
	case "lines":
		if time.Since(p.last) >= 5*time.Second {
			p.last = time.Now()
			fmt.Fprintln(p.w, "loadtest:", line)
		}
	}
}

func (p *progress) done() {
	if p.mode == "bar" {
		fmt.Fprintln(p.w)
	}
}

// logf prints a status line without tearing the progress bar.
func (p *progress) logf(format string, args ...any) {
	if p.mode == "bar" {
		fmt.Fprint(p.w, "\r\033[K")
	}
	if p.mode != "off" {
		fmt.Fprintf(p.w, "loadtest: "+format+"\n", args...)
	}
}
