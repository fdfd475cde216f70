package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Report is every figure of a run; report.json is this struct.
type Report struct {
	Config    *Config     `json:"config"`
	Started   time.Time   `json:"started"`
	Seconds   float64     `json:"seconds"`
	Processes int         `json:"processes"`
	Phases    []phaseSpan `json:"phases"`

	Connect struct {
		Attempted  int64            `json:"attempted"`
		Joined     int64            `json:"joined"`
		Failed     int64            `json:"failed"`
		Failures   map[string]int64 `json:"failures_by_reason"`
		RampSec    float64          `json:"ramp_seconds"`
		RatePerSec float64          `json:"joined_per_second"`
		Latency    latSummary       `json:"connect_upgrade_latency"`
	} `json:"connect"`

	Deliveries struct {
		Expected     int64            `json:"expected"`
		Received     int64            `json:"received"`
		Lost         int64            `json:"lost"`
		Extra        int64            `json:"extra"`
		Sent         int64            `json:"messages_sent"`
		Rejected     int64            `json:"messages_rejected"`
		LateSkipped  int64            `json:"sends_skipped_late"`
		AvgPerSec    float64          `json:"avg_per_second_traffic"`
		PeakPerSec   float64          `json:"peak_per_second"`
		Drained      bool             `json:"drained"`
		ServerErrors map[string]int64 `json:"server_errors"`
		Drops        map[string]int64 `json:"unexpected_disconnects"`
		CloseCodes   map[string]int64 `json:"server_close_codes"`
		counts
	} `json:"deliveries"`

	Latency      latSummary   `json:"latency"`
	LatencyCurve [][2]float64 `json:"latency_percentiles"`

	Churn struct {
		Dialed     int64            `json:"dialed"`
		Joined     int64            `json:"joined"`
		Failures   map[string]int64 `json:"failures"`
		Drops      map[string]int64 `json:"drops"`
		Deliveries int64            `json:"deliveries"`
	} `json:"churn"`
	Slow  slowStats    `json:"slow"`
	Storm *stormReport `json:"storm,omitempty"`

	Server struct {
		Available     bool    `json:"available"`
		Error         string  `json:"error,omitempty"`
		RSSBefore     float64 `json:"rss_before"`
		RSSAfterRamp  float64 `json:"rss_after_ramp"`
		RSSPeak       float64 `json:"rss_peak"`
		RSSPerConn    float64 `json:"rss_per_conn"`
		Goroutines    float64 `json:"goroutines_after_ramp"`
		GoroutinesMax float64 `json:"goroutines_max"`
		CPURamp       float64 `json:"cpu_seconds_ramp"`
		CPUPerConnUS  float64 `json:"cpu_us_per_connection"` // ramp CPU per joined connection: handshake, join, presence
		CPUTraffic    float64 `json:"cpu_seconds_traffic"`
		CPUPerMillion float64 `json:"cpu_seconds_per_million_deliveries"`
		DelivSource   string  `json:"deliveries_counted_by"`
	} `json:"server"` // with several -url nodes: the whole cluster, from the sums of their metrics
	Nodes []nodeReport `json:"nodes,omitempty"` // per node, with several -url nodes

	Generator struct {
		Processes      int     `json:"processes"`
		RSS            int64   `json:"rss_after_ramp"`
		Sockets        int64   `json:"sockets_after_ramp"`
		PerSocket      float64 `json:"rss_per_socket"`
		PerSocketDelta float64 `json:"rss_per_socket_marginal"`
		CPU            float64 `json:"cpu_seconds"`
		CPUPerMillion  float64 `json:"cpu_seconds_per_million_deliveries"`
	} `json:"generator"`

	CleanCloses  int64    `json:"clean_closes"`
	ForcedCloses int64    `json:"forced_closes"`
	Notes        []string `json:"notes"`
	Verdict      struct {
		OK       bool     `json:"ok"`
		Reasons  []string `json:"reasons"`
		Warnings []string `json:"warnings"`
	} `json:"verdict"`
	Series []point `json:"series"`
}

func (co *coordinator) buildReport(o outcome) *Report {
	cfg := co.cfg
	r := &Report{Config: cfg, Started: co.start, Seconds: time.Since(co.start).Seconds(), Processes: len(co.shards)}
	co.mu.Lock()
	r.Phases, r.Series = co.phases, co.series
	srvErr, nodeErr := co.srvError, append([]string(nil), co.nodeErr...)
	co.mu.Unlock()
	r.Phases = append([]phaseSpan(nil), r.Phases...)

	lat, conn, rejoin := newHist(), newHist(), newHist()
	d := &r.Deliveries
	d.ServerErrors, d.Drops, d.CloseCodes = map[string]int64{}, map[string]int64{}, map[string]int64{}
	r.Connect.Failures, r.Churn.Failures, r.Churn.Drops = map[string]int64{}, map[string]int64{}, map[string]int64{}
	g := &r.Generator
	var rssBefore int64
	for _, s := range o.results {
		d.counts.add(&s.counts)
		d.Expected += s.Expected
		d.Sent += s.Sent
		d.Rejected += s.Rejected
		addMap(d.ServerErrors, s.ServerErrors)
		addMap(d.Drops, s.Drops)
		addMap(d.CloseCodes, s.CloseCodes)
		addMap(r.Connect.Failures, s.Failures)
		addMap(r.Churn.Failures, s.ChurnFail)
		addMap(r.Churn.Drops, s.ChurnDrops)
		r.Churn.Dialed += s.ChurnDialed
		r.Churn.Joined += s.ChurnJoined
		r.Slow.Connected += s.Slow.Connected
		r.Slow.ClosedByServer += s.Slow.ClosedByServer
		r.Slow.StillOpen += s.Slow.StillOpen
		r.Slow.BytesQueued += s.Slow.BytesQueued
		r.CleanCloses += s.CleanCloses
		r.ForcedCloses += s.ForcedCloses
		r.Notes = append(r.Notes, s.Notes...)
		if s.Latency != nil {
			lat.Merge(importHist(*s.Latency))
		}
		if s.Connect != nil {
			conn.Merge(importHist(*s.Connect))
		}
		if s.Storm != nil {
			if r.Storm == nil {
				r.Storm = &stormReport{stormCounts: stormCounts{Refused: map[string]int64{}, GaveUp: map[string]int64{}}}
			}
			r.Storm.add(&s.Storm.stormCounts)
			if s.Storm.Rejoin != nil {
				rejoin.Merge(importHist(*s.Storm.Rejoin))
			}
		}
		g.RSS += s.RSSRamp
		rssBefore += s.RSSBefore
		g.Sockets += s.OpenRamp
		g.CPU += s.CPU
	}
	if len(co.shards) > 1 {
		_, own := procSelf()
		g.CPU += own // the coordinator's own share
	}
	g.Processes = len(co.shards)
	if g.Sockets > 0 {
		g.PerSocket = float64(g.RSS) / float64(g.Sockets)
		g.PerSocketDelta = float64(g.RSS-rssBefore) / float64(g.Sockets)
	}
	d.Received = d.Deliv
	r.Churn.Deliveries = d.ChurnDeliv
	d.Sent, d.LateSkipped, d.Drained = max(d.Sent, o.traffic.Sent), o.traffic.Late, o.drained
	// Churn clients' deliveries are not in Deliv, nor their duplicates
	// in what is subtracted (they still fail the run).
	unique := d.Deliv - (d.Dups - d.ChurnDups)
	if diff := d.Expected - unique; diff > 0 {
		d.Lost = diff
	} else {
		d.Extra = -diff
	}
	if o.trafficSec > 0 {
		d.AvgPerSec = float64(unique) / o.trafficSec
	}
	for _, p := range r.Series {
		d.PeakPerSec = max(d.PeakPerSec, p.DelivRate)
	}
	if d.Received > 0 {
		g.CPUPerMillion = g.CPU / (float64(d.Received) / 1e6)
	}
	r.Latency, r.LatencyCurve = summarize(lat), percentileCurve(lat)
	if r.Storm != nil {
		r.Storm.Rejoin = summarize(rejoin)
	}

	c := &r.Connect
	c.Attempted, c.Joined, c.Failed, c.RampSec = int64(cfg.Conns), o.ramp.Joined, o.ramp.Failed, o.rampSec
	if o.rampSec > 0 {
		c.RatePerSec = float64(o.ramp.Joined) / o.rampSec
	}
	c.Latency = summarize(conn)
	co.serverFigures(r, o, srvErr)
	r.Nodes = nodeFigures(cfg, o, r.Series, nodeErr)
	verdict(r)
	return r
}

// stormReport is the storm of every process together.
type stormReport struct {
	stormCounts
	Rejoin latSummary `json:"rejoin_after_drop"` // per client, drop to joined
}

func (co *coordinator) serverFigures(r *Report, o outcome, srvErr string) {
	s := &r.Server
	s.Error = srvErr
	if o.srvStart == nil || o.srvRamp == nil {
		if s.Error == "" {
			s.Error = "metrics not available"
		}
		return
	}
	s.Available = true
	s.RSSBefore, s.RSSAfterRamp, s.Goroutines = o.srvStart.RSS, o.srvRamp.RSS, o.srvRamp.Goroutines
	s.CPURamp = o.srvRamp.CPU - o.srvStart.CPU
	if n := float64(r.Connect.Joined); n > 0 {
		s.RSSPerConn = (o.srvRamp.RSS - o.srvStart.RSS) / n
		s.CPUPerConnUS = s.CPURamp / n * 1e6
	}
	for _, p := range r.Series {
		if p.Server != nil {
			s.RSSPeak = max(s.RSSPeak, p.Server.RSS)
			s.GoroutinesMax = max(s.GoroutinesMax, p.Server.Goroutines)
		}
	}
	if o.srvTraffic != nil && o.srvDrained != nil {
		s.CPUTraffic = o.srvDrained.CPU - o.srvTraffic.CPU
		deliv, src := o.srvDrained.Deliveries-o.srvTraffic.Deliveries, "server nbchat_deliveries_total"
		if deliv <= 0 {
			deliv, src = float64(r.Deliveries.Received), "generator"
		}
		s.DelivSource = src
		if deliv > 0 {
			s.CPUPerMillion = s.CPUTraffic / (deliv / 1e6)
		}
	}
}

// verdict decides pass/fail: chat semantics are strict, raw mode only
// reports what it saw.
func verdict(r *Report) {
	v, d, cfg := &r.Verdict, &r.Deliveries, r.Config
	fail := func(format string, args ...any) { v.Reasons = append(v.Reasons, fmt.Sprintf(format, args...)) }
	warn := func(format string, args ...any) { v.Warnings = append(v.Warnings, fmt.Sprintf(format, args...)) }
	if r.Connect.Joined == 0 {
		fail("no client connected (%s)", fmtMap(r.Connect.Failures))
	} else if fr := float64(r.Connect.Failed) / float64(max(r.Connect.Attempted, 1)); fr > cfg.MaxConnFail {
		fail("%d of %d connects failed (%.1f%% > -max-connect-fail %.1f%%): %s",
			r.Connect.Failed, r.Connect.Attempted, 100*fr, 100*cfg.MaxConnFail, fmtMap(r.Connect.Failures))
	}
	if d.ProtoErr > 0 {
		fail("%d frames could not be parsed", d.ProtoErr)
	}
	if cfg.Proto == "raw" {
		if d.Lost > 0 {
			warn("%d of %d deliveries (every frame to every client) did not arrive", d.Lost, d.Expected)
		}
	} else {
		if d.Lost > 0 {
			fail("loss: %d of %d expected deliveries never arrived", d.Lost, d.Expected)
		}
		if d.Extra > 0 {
			fail("extra: %d more deliveries than expected", d.Extra)
		}
		if d.Gaps > 0 {
			fail("gaps: %d seq numbers skipped", d.Gaps)
		}
		if d.Dups > 0 {
			fail("duplicates: %d deliveries arrived twice", d.Dups)
		}
		if d.Reorders > 0 {
			fail("reorders: %d deliveries arrived out of seq order", d.Reorders)
		}
		if d.Misrouted > 0 {
			fail("misrouted: %d messages reached a client not in that room/DM", d.Misrouted)
		}
	}
	if st := r.Storm; cfg.Scenario == "storm" {
		switch {
		case st == nil || st.Dropped == 0:
			fail("storm: no reader was dropped")
		case st.Rejoined < st.Dropped:
			fail("storm: %d of %d dropped readers never rejoined (%s)", st.Dropped-st.Rejoined, st.Dropped, fmtMap(st.GaveUp))
		case st.SilentClosed < st.Silent:
			// Each would hold a place in its rooms, and a share of the
			// server's memory, until the idle timeout.
			fail("storm: the server closed %d of %d silent old sockets within a handshake timeout of the traffic's end", st.SilentClosed, st.Silent)
		}
		if d.Unrecovered > 0 {
			fail("storm: %d rejoins with since were not recovered from history", d.Unrecovered)
		}
	}
	if d.Rejected > 0 {
		warn("server rejected %d sends (%s): the scenario is faster than the server allows", d.Rejected, fmtMap(d.ServerErrors))
	}
	if n := sumMap(d.Drops); n > 0 {
		// A connection the server dropped without a close frame is a
		// failure even when no delivery was due (scenario idle).
		fail("unexpected disconnects: %d connections closed by the server without a close frame (%s)", n, fmtMap(d.Drops))
	}
	if d.LateSkipped > 0 {
		warn("%d sends skipped because the generator fell behind", d.LateSkipped)
	}
	if !r.Server.Available {
		warn("server metrics unavailable (%s)", r.Server.Error)
	}
	if n := len(r.Nodes); n > 1 && cfg.Proto == "chat" && cfg.Scenario != "dm" {
		if span := roomSpan(cfg.Rooms, n); span < n {
			warn("with -rooms %d over %d nodes each room has members on only %d node(s): pick -rooms coprime to the node count", cfg.Rooms, n, span)
		}
	}
	v.OK = len(v.Reasons) == 0
}

func sumMap(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

func fmtMap(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, m[k])
	}
	return b.String()
}

func writeReport(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), j, 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.html"))
	if err != nil {
		return err
	}
	if err := renderHTML(f, r); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func ms(us int64) string { return fmt.Sprintf("%.2fms", float64(us)/1000) }

func printSummary(w io.Writer, r *Report) {
	cfg, c, d, s, g := r.Config, &r.Connect, &r.Deliveries, &r.Server, &r.Generator
	preset := ""
	if cfg.Preset != "" {
		preset = " " + cfg.Preset
	}
	fmt.Fprintf(w, "=== loadtest%s: scenario %s, proto %s, %d conns, %d rooms, %d senders x %g msg/s, %v, %d process(es), %.1fs\n",
		preset, cfg.Scenario, cfg.Proto, cfg.Conns, cfg.Rooms, cfg.Senders, cfg.MsgRate, cfg.Duration, r.Processes, r.Seconds)
	fmt.Fprintf(w, "connect:    %d/%d joined in %.1fs (%.0f/s); failed %d (%s)\n", c.Joined, c.Attempted, c.RampSec, c.RatePerSec, c.Failed, fmtMap(c.Failures))
	fmt.Fprintf(w, "  latency:  p50 %s p90 %s p99 %s p99.9 %s max %s\n", ms(c.Latency.P50), ms(c.Latency.P90), ms(c.Latency.P99), ms(c.Latency.P999), ms(c.Latency.Max))
	fmt.Fprintf(w, "messages:   sent %d, rejected %d; deliveries expected %d, received %d, lost %d, extra %d\n", d.Sent, d.Rejected, d.Expected, d.Received, d.Lost, d.Extra)
	fmt.Fprintf(w, "  checks:   gaps %d, duplicates %d, reorders %d, misrouted %d, unparsable %d; presence frames %d, history replayed on join %d\n", d.Gaps, d.Dups, d.Reorders, d.Misrouted, d.ProtoErr, d.Presence, d.Replayed)
	drained := "n/a"
	if d.Sent > 0 {
		drained = fmt.Sprint(d.Drained)
	}
	fmt.Fprintf(w, "  rate:     %.0f deliveries/s average over traffic, peak %.0f/s; all arrived within -drain-timeout: %s\n", d.AvgPerSec, d.PeakPerSec, drained)
	l := r.Latency
	fmt.Fprintf(w, "latency:    p50 %s p90 %s p99 %s p99.9 %s max %s (%d samples)\n", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), l.Count)
	if cfg.Scenario == "churn" {
		fmt.Fprintf(w, "churn:      %d dialed, %d joined, failures %s, deliveries %d\n", r.Churn.Dialed, r.Churn.Joined, fmtMap(r.Churn.Failures), d.ChurnDeliv)
	}
	if st := r.Storm; st != nil {
		fmt.Fprintf(w, "storm:      %d readers dropped at %v into the traffic, %d rejoined with since, the last %.2fs after the drop; %d attempts, refused %s\n",
			st.Dropped, cfg.StormAt.Round(time.Millisecond), st.Rejoined, st.Seconds, st.Attempts, fmtMap(st.Refused))
		fmt.Fprintf(w, "  rejoin:   p50 %s p90 %s p99 %s max %s after the drop; %d missed deliveries recovered from history, %d rejoins not recovered\n",
			ms(st.Rejoin.P50), ms(st.Rejoin.P90), ms(st.Rejoin.P99), ms(st.Rejoin.Max), d.Recovered, d.Unrecovered)
		if st.Silent > 0 {
			fmt.Fprintf(w, "  silent:   %d old sockets left open and silent; the server closed %d, the last %.2fs after the drop\n",
				st.Silent, st.SilentClosed, st.SilentSeconds)
		}
	}
	if cfg.Scenario == "slow" {
		fmt.Fprintf(w, "slow:       %d stopped reading; closed by server %d, still open %d (latency above is the others')\n", r.Slow.Connected, r.Slow.ClosedByServer, r.Slow.StillOpen)
	}
	label := "server:   "
	if len(r.Nodes) > 0 {
		label = "  total:  "
		fmt.Fprintf(w, "cluster:    %d nodes; whole-cluster totals from the sums of their metrics, then each node:\n", len(r.Nodes))
	}
	if s.Available {
		fmt.Fprintf(w, "%s  RSS %.1f MiB after ramp (%+.0f B/conn vs. before the ramp), peak %.1f MiB; goroutines %.0f (max %.0f); CPU %.2fs in traffic = %.2fs per million deliveries\n",
			label, s.RSSAfterRamp/(1<<20), s.RSSPerConn, s.RSSPeak/(1<<20), s.Goroutines, s.GoroutinesMax, s.CPUTraffic, s.CPUPerMillion)
		fmt.Fprintf(w, "  ramp:     CPU %.2fs = %.1f us per connection (handshake, join, presence)\n", s.CPURamp, s.CPUPerConnUS)
	} else {
		fmt.Fprintf(w, "%s  no metrics (%s)\n", label, s.Error)
	}
	printNodes(w, r.Nodes)
	fmt.Fprintf(w, "generator:  RSS %.1f MiB for %d sockets = %.0f B/socket (%.0f B marginal); CPU %.2fs (%.2fs per million deliveries)\n",
		float64(g.RSS)/(1<<20), g.Sockets, g.PerSocket, g.PerSocketDelta, g.CPU, g.CPUPerMillion)
	fmt.Fprintf(w, "close:      %d clean, %d forced; server close codes %s\n", r.CleanCloses, r.ForcedCloses, fmtMap(d.CloseCodes))
	for _, n := range r.Notes {
		fmt.Fprintln(w, "  e.g.", n)
	}
	for _, x := range r.Verdict.Warnings {
		fmt.Fprintln(w, "WARN:", x)
	}
}
