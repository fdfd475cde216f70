package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// outcome collects what the phases produced, for the report.
type outcome struct {
	ramp       rampResult
	traffic    trafficResult
	results    []shardResult
	srvStart   *srvSample // before the ramp
	srvRamp    *srvSample // after the ramp
	srvTraffic *srvSample // when traffic starts
	srvDrained *srvSample // after the drain
	nodes      nodeSnaps  // each node's samples at the same points
	rampSec    float64
	trafficSec float64
	drainSec   float64
	drained    bool
	err        error
}

// run is the coordinator: it starts the shards, walks them through the
// phases, and reports. It returns the exit status.
func run(cfg *Config, stdout, stderr io.Writer) int {
	co := &coordinator{cfg: cfg, start: time.Now(), prog: newProgress(cfg.Progress, stderr),
		client: &http.Client{Timeout: 900 * time.Millisecond}}
	// The last line of defence for "the run stops by itself".
	watchdog := time.AfterFunc(cfg.maxRun()+time.Minute, func() {
		fmt.Fprintln(stderr, "loadtest: run exceeded its time bound; exiting")
		os.Exit(2)
	})
	defer watchdog.Stop()

	ps := plans(cfg)
	for i, p := range ps {
		s, err := startShard(i, setup{Cfg: *cfg, Plan: p}, len(ps) == 1)
		if err != nil {
			fmt.Fprintln(stderr, "loadtest: starting worker:", err)
			co.stopShards()
			return 2
		}
		co.shards = append(co.shards, s)
	}
	defer co.stopShards()
	if len(ps) > 1 {
		co.prog.logf("%d connections over %d worker processes", cfg.Conns, len(ps))
	}
	for _, s := range co.shards {
		if err := s.await("ready", nil, 30*time.Second); err != nil {
			fmt.Fprintln(stderr, "loadtest:", err)
			return 2
		}
	}
	stop, sampled := make(chan struct{}), make(chan struct{})
	go co.sample(stop, sampled)
	out := co.runPhases()
	close(stop)
	<-sampled
	co.setPhase("")
	co.prog.done()
	if out.err != nil {
		fmt.Fprintln(stderr, "loadtest:", out.err)
		return 2
	}
	rep := co.buildReport(out)
	printSummary(stdout, rep)
	if cfg.Out != "" {
		if err := writeReport(cfg.Out, rep); err != nil {
			fmt.Fprintln(stderr, "loadtest: writing report:", err)
			return 2
		}
		fmt.Fprintf(stdout, "report: %s/report.html, %s/report.json\n", cfg.Out, cfg.Out)
	}
	if !rep.Verdict.OK {
		for _, r := range rep.Verdict.Reasons {
			fmt.Fprintln(stdout, "FAIL:", r)
		}
		return 1
	}
	fmt.Fprintln(stdout, "PASS")
	return 0
}

func (co *coordinator) stopShards() {
	for _, s := range co.shards {
		s.stop()
	}
	co.shards = nil
}

// broadcast sends one command to every shard and collects the replies.
func broadcast[T any](co *coordinator, cmd string, arg any, reply string, timeout time.Duration) ([]T, error) {
	for _, s := range co.shards {
		if err := s.w.send(cmd, arg); err != nil {
			return nil, err
		}
	}
	out := make([]T, len(co.shards))
	for i, s := range co.shards {
		if err := s.await(reply, &out[i], timeout); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (co *coordinator) runPhases() (o outcome) {
	cfg := co.cfg
	o.srvStart, o.nodes.start = co.scrape()

	co.setPhase("ramp")
	t0 := time.Now()
	ramps, err := broadcast[rampResult](co, "ramp", nil, "ramped", cfg.RampTimeout+2*cfg.HandshakeTimeout+30*time.Second)
	if err != nil {
		o.err = err
		return o
	}
	o.rampSec = time.Since(t0).Seconds()
	o.ramp.Members = make([]int64, max(cfg.Rooms, 1))
	for _, r := range ramps {
		o.ramp.Joined += r.Joined
		o.ramp.Failed += r.Failed
		o.ramp.SlowMembers += r.SlowMembers
		o.ramp.JoinedNode = addSlice(o.ramp.JoinedNode, r.JoinedNode)
		o.ramp.MembersNode = addSlice(o.ramp.MembersNode, r.MembersNode)
		for i, m := range r.Members {
			o.ramp.Members[i] += m
		}
	}
	co.prog.logf("ramp: %d joined, %d failed in %.1fs", o.ramp.Joined, o.ramp.Failed, o.rampSec)

	co.setPhase("hold")
	time.Sleep(time.Second / 2) // let the server settle before reading its RSS
	o.srvRamp, o.nodes.ramp = co.scrape()
	time.Sleep(max(0, cfg.Hold-time.Second/2))

	if cfg.Duration > 0 && cfg.Scenario != "idle" {
		co.setPhase("traffic")
		o.srvTraffic, o.nodes.traffic = co.scrape()
		t1 := time.Now()
		trs, err := broadcast[trafficResult](co, "traffic", o.ramp.Members, "trafficked", cfg.Duration+30*time.Second)
		if err != nil {
			o.err = err
			return o
		}
		o.trafficSec = time.Since(t1).Seconds()
		for _, t := range trs {
			o.traffic.Sent += t.Sent
			o.traffic.Late += t.Late
			o.traffic.SentRoom = addSlice(o.traffic.SentRoom, t.SentRoom)
		}

		co.setPhase("drain")
		t2 := time.Now()
		o.drained = co.drain()
		o.drainSec = time.Since(t2).Seconds()
		o.srvDrained, o.nodes.drained = co.scrape()
	}

	co.setPhase("close")
	res, err := broadcast[shardResult](co, "close", nil, "result", cfg.CloseTimeout+60*time.Second)
	if err != nil {
		o.err = err
		return o
	}
	o.results = res
	return o
}

// drain waits until every expected delivery arrived, the bound passed, or
// nothing arrived for 3 s (a dropped connection never catches up), then one
// more tick so late duplicates are seen too.
func (co *coordinator) drain() bool {
	limit := time.Now().Add(co.cfg.DrainTimeout)
	time.Sleep(300 * time.Millisecond) // ticks are 250 ms apart: see post-traffic counts
	last, lastChange := int64(-1), time.Now()
	for {
		t := co.sum()
		if t.Deliv-t.Dups >= t.Expected {
			time.Sleep(300 * time.Millisecond)
			return true
		}
		if t.Deliv != last {
			last, lastChange = t.Deliv, time.Now()
		}
		if time.Now().After(limit) || time.Since(lastChange) > 3*time.Second {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
