// Command loadtest opens tens of thousands of WebSocket connections to an
// nbchat server (or any server with -proto raw), drives a chat scenario,
// checks every delivery and writes a report. Run "go run ./loadtest -h".
package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"
)

// Config is the whole run's configuration; it is sent to worker processes
// as JSON, so every field is exported.
type Config struct {
	URL, MetricsURL, Proto, Scenario, Preset, Out, Progress, RunID string

	Conns, Rooms, Senders, Size, PerProc, SrcIPs, Pollers, DialWorkers int

	Rate, MsgRate, ChurnRate, SlowFrac, StormFrac, MaxConnFail float64

	RampTimeout, Hold, Duration, DrainTimeout, CloseTimeout, HandshakeTimeout, ChurnLife, StormAt time.Duration

	// IDs sends every room message with an id, as the chat page does.
	IDs bool
	// StormSilent: the storm's readers leave their old sockets open and
	// silent instead of closing them (see -storm-silent).
	StormSilent bool
}

// maxRun bounds the whole run: the sum of every phase's own bound.
func (c *Config) maxRun() time.Duration {
	return c.RampTimeout + 2*c.HandshakeTimeout + c.Hold + c.Duration + c.DrainTimeout + c.CloseTimeout + 30*time.Second
}

// presets set several flags at once; flags given explicitly win.
var presets = map[string]map[string]string{
	"smoke":   {"scenario": "rooms", "conns": "2000", "rooms": "20", "senders": "20", "msg-rate": "5", "duration": "5s", "hold": "1s"},
	"default": {"scenario": "rooms", "conns": "10000", "rooms": "100", "senders": "100", "msg-rate": "2", "duration": "60s", "hold": "5s"},
	"idle19k": {"scenario": "idle", "conns": "19000", "rooms": "190", "senders": "0", "hold": "30s", "duration": "0s"},
	// A room each, so no join is announced: the ramp's CPU is the handshake's.
	"handshake19k": {"scenario": "idle", "conns": "19000", "rooms": "19000", "senders": "0", "hold": "1s", "duration": "0s"},
	"room5k":       {"scenario": "rooms", "conns": "5000", "rooms": "1", "senders": "10", "msg-rate": "2", "duration": "30s", "hold": "3s"},
	"room5k-max":   {"scenario": "rooms", "conns": "5000", "rooms": "1", "senders": "10", "msg-rate": "20", "duration": "30s", "hold": "3s"},
	// Every reader drops at once and comes back with since: a reconnect storm.
	"storm":    {"scenario": "storm", "conns": "10000", "rooms": "100", "senders": "100", "msg-rate": "2", "duration": "20s", "hold": "2s", "storm-at": "5s"},
	"rooms19k": {"scenario": "rooms", "conns": "19000", "rooms": "1000", "senders": "1000", "msg-rate": "1", "duration": "30s", "hold": "3s"},
	// 500 rooms, not 510: coprime to 3 nodes, so every room spans all three.
	"cluster50k": {"scenario": "rooms", "conns": "51000", "rooms": "500", "senders": "500", "msg-rate": "1", "duration": "60s", "hold": "5s",
		"rate": "1500", "ramp-timeout": "90s", "per-proc": "17000", "src-ips": "6"},
}

const usageHead = `loadtest: WebSocket load generator and chat-semantics checker for nbchat.

Phases: ramp (connect at -rate, bounded by -ramp-timeout) -> hold (-hold) ->
traffic (-duration) -> drain (until every expected delivery arrived, at most
-drain-timeout) -> close (close frames, then sockets). The run always stops
by itself. More than -per-proc connections start worker copies of this
program; source addresses 127.0.0.2, .3, ... are used in turn.

Clusters: -url takes a comma-separated list, one URL per server node.
Client i connects to URL i % n (in every worker process), so with -rooms
coprime to n every room has members on every node and a room's senders and
readers sit on different nodes; the seq checks are the same, since every
node must number a room's messages alike. /metrics is read from every node
(-metrics takes a list too) and the report gives per-node figures and the
whole-cluster totals. loadtest/cluster.sh starts NATS and three nodes.

Scenarios (-scenario):
  idle   hold N named connections, each in a room
  rooms  N clients over R rooms round-robin; S senders (ids 0..S-1) send
         -msg-rate msgs/s each of -size bytes; every member must get each
         message exactly once, with per-room seq +1, no gaps/dups/reorders
  dm     pairs (id, id^1); S senders send direct messages to their partner
  churn  like rooms, plus -churn-rate connections/s opening, joining a room
         and closing after -churn-life
  slow   like rooms, but -slow-frac of clients stop reading after the ramp;
         the others' latency is reported, slow ones closed by the server are
         counted, and the server's RSS over time is charted
  storm  like rooms, but -storm-at into the traffic -storm-frac of the
         readers drop their sockets at once (no close frame) and reconnect
         at once, as after a network blip: each joins again with since=
         the last seq it saw, waits out a 503's Retry-After (409 name taken:
         100 ms, as it closed the old socket itself) and must get every
         message it missed exactly once; the report gives the time to the
         last rejoin and the refusals. With -storm-silent the old sockets
         stay open and silent, and the server must find them dead: before
         a rejoin if names are exclusive (409s), else by the end of the run
Presets (-preset; flags given explicitly win):
  smoke       2,000 conns, 20 rooms, 20 senders x 5 msg/s for 5 s
  default     10,000 conns, 100 rooms, 100 senders x 2 msg/s for 60 s (~1.5 min)
  idle19k     19,000 idle connections in 190 rooms, held 30 s
  handshake19k 19,000 connections, a room each (no presence): the ramp's
              server CPU per connection is the handshake's
  room5k      5,000 clients in one room, 10 senders x 2 msg/s = 100,000 deliveries/s
  room5k-max  the same at 20 msg/s each = 1,000,000 deliveries/s
  rooms19k    19,000 clients, 1,000 rooms, 1,000 senders x 1 msg/s
  storm       10,000 clients, 100 rooms, 100 senders x 2 msg/s for 20 s; at
              5 s the 9,900 readers drop and reconnect at once
  cluster50k  51,000 clients over 3 -url nodes (17,000 each), 500 rooms of 102
              spanning every node, 500 senders x 1 msg/s = 51,000 deliveries/s
              for 60 s; 3 worker processes (run: loadtest/cluster.sh)

-proto raw: for servers that broadcast every frame to everyone (the usual hub
examples). Connects to -url as given, sends the payload as the whole text
frame, and counts any text frame received as a delivery (each '\n'-separated
line of it, as hubs that coalesce queued messages send them), with latency from
the timestamp at the start of each. No seq checks; loss is reported against "every frame
reaches every client" but does not fail the run.

Exit status: 0 ok; 1 loss, duplicates, gaps, reorders, misrouted or extra
deliveries, or too many failed connects; 2 bad usage or a failed run.

Flags:
`

func main() {
	// -worker is hidden from -h: only the tool itself starts workers.
	if os.Getenv(workerEnv) != "" || (len(os.Args) > 1 && os.Args[1] == "-worker") {
		os.Exit(workerMain(os.Stdin, os.Stdout))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	// A CPU profile of the generator itself, for when it looks like the
	// bottleneck: NBCHAT_LOADTEST_CPUPROFILE=/tmp/lt.pprof go run ./loadtest ...
	if path := os.Getenv("NBCHAT_LOADTEST_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			_ = pprof.StartCPUProfile(f)
			code := run(cfg, os.Stdout, os.Stderr)
			pprof.StopCPUProfile()
			_ = f.Close()
			os.Exit(code)
		}
	}
	os.Exit(run(cfg, os.Stdout, os.Stderr))
}

func workerMain(in io.Reader, out io.Writer) int {
	if err := runShard(in, out); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest worker:", err)
		return 2
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.URL, "url", "ws://127.0.0.1:8080/ws", "server WebSocket URL, or a comma-separated list of one per cluster node (client i uses URL i % n)")
	fs.StringVar(&c.MetricsURL, "metrics", "", "server Prometheus metrics URL (a list: one per -url node), sampled every second (default: http://HOST/metrics from each -url; \"off\" disables)")
	fs.StringVar(&c.Proto, "proto", "chat", "chat (nbchat JSON protocol) or raw (any broadcast-everything server, see above)")
	fs.BoolVar(&c.IDs, "ids", false, "send each room message with an id, as the chat page does: the server acknowledges it, drops a resend, and in a cluster sends it on to a new owner after a failover")
	fs.StringVar(&c.Scenario, "scenario", "rooms", "idle, rooms, dm, churn, slow or storm")
	fs.StringVar(&c.Preset, "preset", "", "smoke, default, idle19k, handshake19k, room5k, room5k-max, rooms19k, storm or cluster50k (sets several flags)")
	fs.IntVar(&c.Conns, "conns", 2000, "client connections (N)")
	fs.IntVar(&c.Rooms, "rooms", 20, "rooms (R); clients join room id%R")
	fs.IntVar(&c.Senders, "senders", 20, "senders (S): clients 0..S-1 send")
	fs.Float64Var(&c.MsgRate, "msg-rate", 5, "messages per second per sender")
	fs.IntVar(&c.Size, "size", 64, "message text bytes (send time, sender id and counter, padded with x)")
	fs.Float64Var(&c.Rate, "rate", 2000, "connects per second during the ramp (whole run)")
	fs.DurationVar(&c.RampTimeout, "ramp-timeout", 60*time.Second, "bound of the ramp phase")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", 10*time.Second, "bound for one connect+upgrade+join")
	fs.DurationVar(&c.Hold, "hold", 2*time.Second, "hold phase: connections open, no traffic")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "traffic phase length")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Second, "bound for late deliveries after traffic")
	fs.DurationVar(&c.CloseTimeout, "close-timeout", 5*time.Second, "bound for close handshakes")
	fs.Float64Var(&c.ChurnRate, "churn-rate", 50, "churn: connections opened (and later closed) per second")
	fs.DurationVar(&c.ChurnLife, "churn-life", 2*time.Second, "churn: how long each churn connection stays")
	fs.Float64Var(&c.SlowFrac, "slow-frac", 0.1, "slow: share of clients that stop reading after the ramp")
	fs.DurationVar(&c.StormAt, "storm-at", 0, "storm: when into the traffic the readers drop (default a third of -duration)")
	fs.Float64Var(&c.StormFrac, "storm-frac", 1, "storm: share of the readers (non-senders) that drop and reconnect")
	fs.BoolVar(&c.StormSilent, "storm-silent", false, "storm: leave each old socket open and answering nothing, as a peer behind a dead network path looks to the server, instead of closing it; the server must close each within a handshake timeout of the traffic's end (with exclusive names it holds the name until then, so a 409's Retry-After is obeyed; each process, and the server, then holds up to two sockets per reader)")
	fs.IntVar(&c.PerProc, "per-proc", 19000, "most connections per process; more start worker processes (fd limit 20000)")
	fs.IntVar(&c.SrcIPs, "src-ips", 4, "source addresses 127.0.0.2.. used in turn (loopback servers only; 0 = kernel's choice)")
	fs.IntVar(&c.Pollers, "pollers", 1, "nbio poller goroutines per process")
	fs.IntVar(&c.DialWorkers, "dial-workers", 32, "goroutines doing the blocking TCP connect, per process")
	fs.Float64Var(&c.MaxConnFail, "max-connect-fail", 0.01, "share of failed connects that fails the run")
	fs.StringVar(&c.Out, "out", "reports", "directory for report.json and report.html (\"\" = none)")
	fs.StringVar(&c.Progress, "progress", "auto", "auto (bar on a terminal, lines otherwise), bar, lines or off")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.Preset != "" {
		p, ok := presets[c.Preset]
		if !ok {
			fmt.Fprintf(stderr, "loadtest: unknown preset %q\n", c.Preset)
			return nil, fmt.Errorf("unknown preset")
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for k, v := range p {
			if !set[k] {
				_ = fs.Set(k, v)
			}
		}
	}
	if err := c.check(); err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return nil, err
	}
	return c, nil
}

// check validates flags and fills derived defaults.
func (c *Config) check() error {
	if err := c.checkURLs(); err != nil {
		return err
	}
	switch {
	case c.Proto != "chat" && c.Proto != "raw":
		return fmt.Errorf("-proto %q: want chat or raw", c.Proto)
	case !strings.Contains(" idle rooms dm churn slow storm ", " "+c.Scenario+" "):
		return fmt.Errorf("-scenario %q unknown", c.Scenario)
	case c.Scenario == "storm" && (c.Proto != "chat" || c.Rooms < 1):
		return fmt.Errorf("-scenario storm needs -proto chat and -rooms > 0")
	case c.StormFrac < 0 || c.StormFrac > 1 || c.StormAt < 0:
		return fmt.Errorf("-storm-frac must be 0..1 and -storm-at not negative")
	case c.Conns < 1 || c.Rate <= 0 || c.PerProc < 2 || c.DialWorkers < 1 || c.Pollers < 1:
		return fmt.Errorf("-conns, -rate, -per-proc, -dial-workers and -pollers must be positive")
	case c.SrcIPs < 0 || c.SrcIPs > 250:
		return fmt.Errorf("-src-ips must be 0..250")
	case c.Size < 48 || c.Size > 60000:
		return fmt.Errorf("-size must be 48..60000 (the text carries a timestamp, ids and a counter)")
	}
	if c.Scenario == "idle" {
		c.Senders = 0
	}
	if c.StormAt == 0 {
		c.StormAt = c.Duration / 3
	}
	if c.Proto == "raw" {
		c.Rooms = 1
	}
	if c.Rooms < 0 {
		c.Rooms = 0
	}
	if c.Senders > c.Conns {
		c.Senders = c.Conns
	}
	if c.RunID == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.RunID = "lt" + hex.EncodeToString(b[:]) // fresh names and rooms every run
	}
	return nil
}
