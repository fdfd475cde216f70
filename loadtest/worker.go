package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// The coordinator and each process holding connections (a shard) talk in
// lines over the shard's stdin/stdout: "KIND JSON\n". A single shard runs
// in-process over io.Pipe with exactly the same protocol.
//
//	coordinator -> shard: config {cfg,plan} | ramp | traffic [members] | close | quit
//	shard -> coordinator: ready | tick {..} every 250 ms | ramped {..} | trafficked {..} | result {..} | error text

// workerEnv marks a re-executed worker; it also lets a test binary act as
// one (TestMain checks it), since a test binary cannot take our flags.
const workerEnv = "NBCHAT_LOADTEST_WORKER"

// shardPlan is one process's slice of the run.
type shardPlan struct {
	Index, Count int
	Lo, Hi       int     // static client ids [Lo, Hi)
	Rate         float64 // connects per second for this process
	ChurnRate    float64
	ChurnBase    int // first id of this process's churn clients
}

type setup struct {
	Cfg  Config
	Plan shardPlan
}

// lineWriter serializes lines from the tick goroutine and the main loop.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) send(kind string, v any) error {
	b := []byte(kind)
	if v != nil {
		j, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b = append(append(b, ' '), j...)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.w.Write(append(b, '\n'))
	return err
}

// runShard is a shard's whole life: it obeys the coordinator until quit,
// EOF (the coordinator died) or its own time bound.
func runShard(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	w := &lineWriter{w: out}
	if !sc.Scan() {
		return errors.New("loadtest worker: no config")
	}
	kind, data := splitLine(sc.Bytes())
	var s setup
	if kind != "config" || json.Unmarshal(data, &s) != nil {
		return errors.New("loadtest worker: bad config line")
	}
	g, err := newGen(&s.Cfg, s.Plan)
	if err != nil {
		_ = w.send("error", err.Error())
		return err
	}
	stopTicks := make(chan struct{})
	defer close(stopTicks)
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopTicks:
				return
			case <-t.C:
				_ = w.send("tick", g.tick())
			}
		}
	}()
	// Bound the shard's life even if the coordinator hangs.
	bound := time.AfterFunc(s.Cfg.maxRun()+30*time.Second, func() {
		fmt.Fprintln(os.Stderr, "loadtest worker: time bound exceeded, exiting")
		os.Exit(3)
	})
	defer bound.Stop()
	_ = w.send("ready", nil)
	for sc.Scan() {
		kind, data := splitLine(sc.Bytes())
		switch kind {
		case "ramp":
			err = w.send("ramped", g.ramp())
		case "traffic":
			var members []int64
			_ = json.Unmarshal(data, &members)
			err = w.send("trafficked", g.traffic(members))
		case "close":
			g.closeAll()
			err = w.send("result", g.result())
		case "quit":
			g.engine.Stop()
			return nil
		}
		if err != nil {
			return err
		}
	}
	g.engine.Stop()
	return sc.Err()
}

func splitLine(b []byte) (string, []byte) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return string(b[:i]), b[i+1:]
	}
	return string(b), nil
}

// shardProc is the coordinator's handle on one shard.
type shardProc struct {
	idx  int
	in   io.WriteCloser
	w    *lineWriter
	msgs chan shardMsg
	cmd  *exec.Cmd
	done chan struct{}

	mu   sync.Mutex
	last tick
}

type shardMsg struct {
	kind string
	data []byte
}

// startShard starts one shard: in-process when it is the only one,
// otherwise a copy of this executable with -worker.
func startShard(idx int, s setup, inProcess bool) (*shardProc, error) {
	p := &shardProc{idx: idx, msgs: make(chan shardMsg, 8), done: make(chan struct{})}
	var out io.Reader
	if inProcess {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		p.in, out = inW, outR
		go func() {
			err := runShard(inR, outW)
			if err != nil {
				_ = (&lineWriter{w: outW}).send("error", err.Error())
			}
			_ = outW.Close()
			_ = inR.Close()
		}()
	} else {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		p.cmd = exec.Command(exe, "-worker")
		p.cmd.Env = append(os.Environ(), workerEnv+"=1")
		p.cmd.Stderr = os.Stderr
		if p.in, err = p.cmd.StdinPipe(); err != nil {
			return nil, err
		}
		stdout, err := p.cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		out = stdout
		if err := p.cmd.Start(); err != nil {
			return nil, err
		}
	}
	p.w = &lineWriter{w: p.in}
	go p.read(out)
	return p, p.w.send("config", s)
}

// read splits the shard's output: ticks update last, the rest queue up.
func (p *shardProc) read(out io.Reader) {
	defer close(p.done)
	defer close(p.msgs)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		kind, data := splitLine(sc.Bytes())
		if kind == "tick" {
			var t tick
			if json.Unmarshal(data, &t) == nil {
				p.mu.Lock()
				p.last = t
				p.mu.Unlock()
			}
			continue
		}
		p.msgs <- shardMsg{kind, append([]byte(nil), data...)}
	}
}

func (p *shardProc) lastTick() tick {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// await waits for the next message of kind, decoding it into v.
func (p *shardProc) await(kind string, v any, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case m, ok := <-p.msgs:
		switch {
		case !ok:
			return fmt.Errorf("shard %d exited while waiting for %s", p.idx, kind)
		case m.kind == "error":
			return fmt.Errorf("shard %d: %s", p.idx, m.data)
		case m.kind != kind:
			return fmt.Errorf("shard %d: got %q, want %q", p.idx, m.kind, kind)
		case v != nil:
			return json.Unmarshal(m.data, v)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("shard %d: no %s within %v", p.idx, kind, timeout)
	}
}

// stop asks the shard to quit and reaps it, killing it after a grace period.
func (p *shardProc) stop() {
	_ = p.w.send("quit", nil)
	_ = p.in.Close()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		if p.cmd != nil && p.cmd.Process != nil {
			_ = p.cmd.Process.Kill()
		}
	}
	if p.cmd != nil {
		_ = p.cmd.Wait()
	}
}

// plans splits the run into processes of at most -per-proc static clients
// (sockets, with -storm-silent: half as many clients); boundaries are even
// so DM partners (id, id^1) share a process.
func plans(cfg *Config) []shardPlan {
	churnLive := int(cfg.ChurnRate*cfg.ChurnLife.Seconds()) + 1
	if cfg.Scenario != "churn" {
		churnLive = 0
	}
	per := max(cfg.PerProc-churnLive, 2)
	if cfg.Scenario == "storm" && cfg.StormSilent {
		per = max(per/2, 2) // a dropped reader keeps its silent socket beside the new one
	}
	k := max(1, (cfg.Conns+per-1)/per)
	var out []shardPlan
	size := (cfg.Conns/k + 1) &^ 1
	for i := 0; i < k; i++ {
		lo, hi := min(i*size, cfg.Conns), min((i+1)*size, cfg.Conns)
		if i == k-1 {
			hi = cfg.Conns
		}
		out = append(out, shardPlan{Index: i, Count: k, Lo: lo, Hi: hi,
			Rate: cfg.Rate / float64(k), ChurnRate: cfg.ChurnRate / float64(k),
			ChurnBase: cfg.Conns + i*1_000_000})
	}
	return out
}
