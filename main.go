// Command nbchat is a WebSocket chat server: rooms, direct messages and
// presence for tens of thousands of connections per process, with the
// browser chat page built in.
//
//	nbchat -addr 127.0.0.1:8080
//
// Run "nbchat -h" for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"nbchat/cluster"
	"nbchat/loop"
	"nbchat/store"
	"nbchat/web"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nbchat:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "token" {
		return runToken(args[1:], os.Stdout)
	}
	fs := flag.NewFlagSet("nbchat", flag.ContinueOnError)
	var (
		cfg       loop.Config
		origins   string
		secret    string
		logLevel  slog.Level
		shutdown  time.Duration
		debugAddr string
		dataDir   string
		gcPct     int
		natsURLs  string
		ccfg      cluster.Config
	)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "listen address (host:port)")
	fs.IntVar(&cfg.MaxConns, "max-conns", 0, "maximum WebSocket connections (0: the file limit less headroom)")
	fs.IntVar(&cfg.MaxText, "max-text", 4096, "maximum message text in bytes (larger: error too_large)")
	fs.IntVar(&cfg.MaxMessage, "max-message", 64<<10, "maximum WebSocket message in bytes (larger: close 1009)")
	fs.IntVar(&cfg.MaxPending, "max-pending", 1<<20, "unsent bytes per connection before it is closed as a slow consumer (4008)")
	fs.BoolVar(&cfg.Compress, "compress", false, "negotiate permessage-deflate; each broadcast is compressed once and shared")
	fs.IntVar(&cfg.MaxRoomsPerConn, "max-rooms", 32, "rooms one connection may be in")
	fs.Float64Var(&cfg.RateLimit, "rate", 50, "messages per second per connection (sustained)")
	fs.IntVar(&cfg.RateBurst, "burst", 100, "message burst per connection; -1 with -rate 0 turns the limit off")
	fs.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", 0, "maximum WebSocket connections from one IP address, IPv6 counted per /64 (0: off); past it 429")
	fs.Float64Var(&cfg.MaxUpgradeRate, "max-upgrade-rate", 0, "maximum WebSocket upgrades a second, in bursts of a second's worth (0: off); past it 503 with Retry-After 1-5 s at random, to spread reconnect storms")
	fs.StringVar(&secret, "auth-secret", "", "require tokens signed with this secret (HS256, at least 32 bytes; default $"+authSecretEnv+"; see 'nbchat token -h')")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "TLS certificate file (PEM): serve wss:// and https:// (needs -tls-key)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "TLS private key file (PEM)")
	fs.StringVar(&origins, "origins", "", "comma-separated browser origins allowed to connect, or * (default: the page's own host)")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", 10*time.Second, "time allowed from accept to the first request, and for that request")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", 30*time.Second, "ping a connection quiet for this long")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 75*time.Second, "close a connection quiet for this long")
	fs.IntVar(&cfg.Room.Sessions, "sessions", 8, "connections that may hold one name at once (a user's tabs and devices, on any nodes of a cluster; 1: names are exclusive); one more gets 409")
	fs.DurationVar(&cfg.NameProbe, "name-probe", 5*time.Second, "when a connection asks for a name others hold, close each holder that does not answer a ping within this long (an asker refused past -sessions gets 409 with Retry-After; 0: off)")
	fs.IntVar(&cfg.Room.Shards, "shards", 64, "room and user shards (a power of two)")
	fs.IntVar(&cfg.Room.PresenceLimit, "presence-limit", 200, "rooms up to this size get each join and leave at once; bigger rooms get them coalesced")
	fs.DurationVar(&cfg.Room.PresenceInterval, "presence-interval", time.Second, "how often coalesced presence is sent")
	fs.IntVar(&cfg.Room.PresenceBurst, "presence-burst", 5, "joins and leaves a small room sends one by one per -presence-interval; more are coalesced, and so is every one until an interval passes without (-1: all)")
	fs.StringVar(&dataDir, "data", "./data", `directory for the message store ("": history in memory only)`)
	fs.IntVar(&cfg.Room.HistorySize, "history", 1000, "messages each room keeps for history and recovery (-1: none)")
	fs.DurationVar(&cfg.Room.HistoryAge, "history-age", 24*time.Hour, "drop kept messages older than this")
	fs.DurationVar(&cfg.Room.OfflineTTL, "user-ttl", time.Hour, "how long a user's direct messages and recent message ids stay in memory after its last connection (with -data its direct messages stay on disk)")
	fs.DurationVar(&cfg.Room.RoomTTL, "room-ttl", time.Hour, "an empty room leaves memory after this long once its messages are on disk; the next join reads them back (0: never; needs -data)")
	fs.IntVar(&cfg.Room.JoinHistory, "join-history", 50, "recent messages sent after joined (-1: none)")
	fs.IntVar(&cfg.Room.DMHistory, "dm-history", 200, "direct messages each user keeps for recovery (-1: none)")
	fs.IntVar(&cfg.Pollers, "pollers", 0, "nbio poller goroutines (0: one per two CPUs)")
	fs.IntVar(&cfg.Flushers, "flushers", 0, "writer goroutines (0: one per two CPUs)")
	fs.DurationVar(&shutdown, "shutdown-timeout", 5*time.Second, "how long a graceful shutdown may take")
	fs.IntVar(&gcPct, "gc-percent", 50, "Go GC target percent (GOGC, which overrides it): lower keeps memory per idle connection down, higher makes connecting cheaper")
	fs.StringVar(&debugAddr, "debug-addr", "", "serve Go's pprof profiles on this address (off when empty; keep it private)")
	fs.StringVar(&natsURLs, "nats", "", "join a cluster through these NATS servers (comma-separated nats:// URLs; off when empty)")
	fs.StringVar(&ccfg.Name, "node", "", "this node's name in the cluster, unique (default: random)")
	fs.StringVar(&ccfg.Prefix, "nats-prefix", "nbchat", "NATS subject prefix, so several clusters can share NATS")
	fs.TextVar(&logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if cfg.Room.OfflineTTL <= 0 {
		return fmt.Errorf("-user-ttl must be positive")
	}
	if cfg.Room.Sessions < 1 {
		return fmt.Errorf("-sessions must be at least 1")
	}
	if cfg.Room.RoomTTL == 0 {
		cfg.Room.RoomTTL = -1 // the hub's 0 means its default
	}
	if cfg.NameProbe == 0 {
		cfg.NameProbe = -1 // the server's 0 means its default
	}
	if secret == "" {
		secret = os.Getenv(authSecretEnv)
	}
	if secret != "" {
		cfg.AuthSecret = []byte(secret)
	}
	if os.Getenv("GOGC") == "" {
		// Most of the heap is long-lived connection state and the hot
		// paths allocate almost nothing, so collecting at +50% instead
		// of +100% costs little CPU and much less memory per connection;
		// what it costs is paid while connections arrive (at +25% the GC
		// was a fifth of a handshake's CPU).
		debug.SetGCPercent(gcPct)
	}
	if origins != "" {
		cfg.AllowedOrigins = strings.Split(origins, ",")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	cfg.Logger = log
	cfg.Page = web.Handler()
	cfg.Room.Logger = log
	if dataDir != "" {
		st, err := store.Open(dataDir, max(cfg.Room.HistorySize, cfg.Room.DMHistory, 1), log)
		if err != nil {
			return err
		}
		// Closed last: it commits what is queued, then the file.
		defer func() {
			if err := st.Close(); err != nil {
				log.Error("closing the store", "err", err)
			}
		}()
		cfg.Room.Store = st
	}
	if cfg.RateLimit == 0 && cfg.RateBurst >= 0 {
		return fmt.Errorf("-rate 0 needs -burst -1 to turn the rate limit off")
	}

	if debugAddr != "" {
		go func() {
			// net/http/pprof registers on the default mux; it is served only here.
			log.Warn("debug server stopped", "err", http.ListenAndServe(debugAddr, nil))
		}()
	}
	var node *cluster.Node
	if natsURLs != "" {
		ccfg.URLs = strings.Split(natsURLs, ",")
		ccfg.Logger = log
		var err error
		if node, err = cluster.New(ccfg); err != nil {
			return err
		}
		// Closed after the server: its connections' leaves and name
		// releases go out first.
		defer node.Close()
		cfg.Room.Cluster = node
		cfg.Collectors = node.Collectors()
	}
	srv, err := loop.New(cfg)
	if err != nil {
		return err
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// Each nbio poller waits in epoll_wait holding a P. Counted among
		// the CPUs it leaves the rest of the server a P short, and whenever
		// that one is busy Go's sysmon takes the poller's P back and then
		// naps at 20 us for a while: one P more per poller avoids both
		// (README: handshake CPU -18%, rooms19k p99 -34%, room5k the same).
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + srv.Pollers())
	}
	if node != nil {
		if err := node.Start(srv.Hub()); err != nil {
			return err
		}
	}
	if err := srv.Start(); err != nil {
		return err
	}

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	log.Info("signal received; shutting down", "signal", s.String(), "timeout", shutdown)
	go func() {
		<-sig
		log.Warn("second signal; exiting now")
		os.Exit(1)
	}()
	if node != nil {
		// Hand rooms and users to the other nodes first, so clients that
		// reconnect there find their history and direct messages.
		node.Leave()
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdown)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	log.Info("stopped")
	return nil
}
