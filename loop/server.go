package loop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"nbchat/protocol"
	"nbchat/room"
)

// Config configures a Server. The zero value is valid: New applies the
// defaults documented on each field.
type Config struct {
	// Addr is the listen address. Default 127.0.0.1:8080; ":0" picks a port.
	Addr string
	// MaxConns caps open WebSocket connections; past it upgrades get 503.
	// Default: the process's file limit less FDHeadroom.
	MaxConns int
	// MaxText is the longest message text in bytes. Default 4096.
	MaxText int
	// MaxMessage is the largest WebSocket message in bytes; larger ones
	// close the connection with 1009. Default 64 KiB.
	MaxMessage int
	// MaxPending caps a connection's output not yet taken by the kernel;
	// past it the connection is closed as a slow consumer. Default 1 MiB.
	MaxPending int
	// Compress negotiates permessage-deflate with clients that offer it:
	// each broadcast is compressed once and shared by those members.
	Compress bool
	// MaxRoomsPerConn caps the rooms one connection may be in. Default 32.
	MaxRoomsPerConn int
	// MaxConnsPerIP caps the connections from one remote address; past it
	// upgrades get 429. Default 0: off, since load tests and NATed offices
	// share addresses.
	MaxConnsPerIP int
	// MaxUpgradeRate caps upgrades a second, with bursts of a second's
	// worth; past it 503 with Retry-After 1-5 s at random, which spreads a
	// reconnect storm out. Default 0: off.
	MaxUpgradeRate float64
	// AuthSecret, when set, requires a token signed with it on every
	// upgrade (see auth.go); at least MinAuthSecret bytes. Default: none.
	AuthSecret []byte
	// TLSCertFile and TLSKeyFile, when both set, serve TLS (wss:// and
	// https://) instead of plain TCP on Addr.
	TLSCertFile string
	TLSKeyFile  string
	// RateLimit is each connection's sustained messages per second, and
	// RateBurst its burst; 0 turns the limit off only if RateBurst < 0.
	// Defaults 50 and 100.
	RateLimit float64
	RateBurst int
	// RateStrikes is how many messages in a row may be refused before the
	// connection is closed with 1008. Default 200.
	RateStrikes int
	// AllowedOrigins lists the Origin values a browser may connect from;
	// "*" allows any. Default: the page's own host only. Requests without
	// an Origin header (non-browser clients) are always allowed.
	AllowedOrigins []string
	// HandshakeTimeout bounds the time from accept to a connection's first
	// request (to the janitor's 100 ms tick), and that of the request once
	// started. Default 10s.
	HandshakeTimeout time.Duration
	// PingInterval is how long a connection may be quiet before the server
	// pings it; IdleTimeout how long before it is closed. Defaults 30s, 75s.
	PingInterval time.Duration
	IdleTimeout  time.Duration
	// NameProbe is how long a connection holding a name that another
	// connection asks for has to answer a ping before it is closed; an
	// asker refused because the name has all the connections it may have
	// (room.Config.Sessions) gets 409 with a Retry-After a little longer.
	// Without it a client whose old socket died silently (no FIN reached
	// the server) would keep it until IdleTimeout, and with exclusive names
	// could not have its name back before then.
	// Default 5s; negative: off.
	NameProbe time.Duration
	// CloseGrace is how long a closing connection has to answer the close
	// frame before its socket is closed. Default 2s.
	CloseGrace time.Duration
	// Pollers is the number of nbio poller goroutines, Flushers the number
	// of writer goroutines. Defaults: one of each per two CPUs. A poller
	// waits in epoll_wait holding its P; with a poller per CPU every P was
	// parked in a system call, so the Go scheduler kept taking Ps back and
	// waking threads for the other goroutines (measured on 2 cores: one
	// poller cut handshake CPU by a fifth and rooms19k's by 7%). One flusher
	// beside two pollers cut room5k's p99 and CPU per delivery by about a
	// fifth: fewer, fuller batches.
	Pollers  int
	Flushers int
	// Room configures rooms and presence.
	Room room.Config
	// Page serves the chat page at "/". Optional.
	Page http.Handler
	// Collectors are more Prometheus series for /metrics (the cluster's).
	Collectors []prometheus.Collector
	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
}

// FDHeadroom is the number of file descriptors kept free for the listener,
// accepts in flight (nbio briefly holds two per accept) and files.
const FDHeadroom = 100

// fileLimit is the process's soft limit on open files, 0 if unknown.
func fileLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 0
	}
	return int(lim.Cur)
}

// maxLoad is how many TCP connections nbio keeps at once (past it, it closes
// new ones as soon as they are accepted): WebSocket connections plus room
// for upgrades and page requests in flight, but never so many that accepts
// and files run out of descriptors.
func maxLoad(maxConns, fileLimit int) int {
	n := maxConns + FDHeadroom
	if fileLimit > FDHeadroom {
		n = min(n, fileLimit-FDHeadroom/2)
	}
	return n
}

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.MaxConns == 0 {
		if lim := fileLimit(); lim > FDHeadroom*2 {
			c.MaxConns = lim - FDHeadroom
		} else {
			c.MaxConns = 1000
		}
	}
	setDefault(&c.MaxText, protocol.DefaultMaxText)
	setDefault(&c.MaxMessage, 64<<10)
	setDefault(&c.MaxPending, 1<<20)
	setDefault(&c.MaxRoomsPerConn, 32)
	setDefault(&c.RateStrikes, 200)
	if c.RateLimit == 0 && c.RateBurst >= 0 {
		c.RateLimit = 50
	}
	setDefault(&c.RateBurst, 100)
	setDefault(&c.HandshakeTimeout, 10*time.Second)
	setDefault(&c.PingInterval, 30*time.Second)
	setDefault(&c.IdleTimeout, 75*time.Second)
	setDefault(&c.CloseGrace, 2*time.Second)
	setDefault(&c.NameProbe, 5*time.Second)
	// GOMAXPROCS's default is the CPUs this process may use, within a
	// container's CPU quota (NumCPU would count the whole host's).
	cpus := runtime.GOMAXPROCS(0)
	setDefault(&c.Pollers, max(1, cpus/2))
	setDefault(&c.Flushers, max(1, cpus/2))
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(c.AuthSecret) > 0 && len(c.AuthSecret) < MinAuthSecret {
		return fmt.Errorf("loop: auth secret must be at least %d bytes", MinAuthSecret)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("loop: TLS needs both a certificate and a key file")
	}
	if c.MaxPending > 1<<30 {
		return fmt.Errorf("loop: max pending %d is over 1 GiB", c.MaxPending)
	}
	if c.MaxMessage > 1<<30 {
		return fmt.Errorf("loop: max message %d is over 1 GiB", c.MaxMessage)
	}
	if c.MaxText > c.MaxMessage {
		return fmt.Errorf("loop: max text %d is over the max message %d", c.MaxText, c.MaxMessage)
	}
	return nil
}

func setDefault[T int | float64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// tickInterval is the janitor's clock resolution.
const tickInterval = 100 * time.Millisecond

// Server is a running chat server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	hub    *room.Hub
	engine *nbhttp.Engine
	m      *metrics
	conns  *registry
	perIP  *ipConns
	// reuse works around an nbio fd-reuse race (reuse.go); set by Start.
	reuse atomic.Pointer[reuseGuard]
	// waiting counts connections waiting for a reuse barrier off the
	// accept loop (guardedListener).
	waiting chan struct{}

	flushers []*flusher
	next     atomic.Uint32 // round-robin flusher choice

	// tick is the janitor's coarse clock, in tickIntervals since start,
	// from 1: a connection's lastRead of 0 means it is not upgraded yet.
	tick atomic.Int64
	// shutting is set once Shutdown starts: upgrades get 503.
	shutting atomic.Bool

	// handshakes holds plain connections from accept to first read: it
	// times them, and a first read may be a fast upgrade. Nil with TLS.
	handshakes *handshakeQueue
	// yields has one entry per poller (nbio's index: fd % pollers).
	yields []pollerYield
	// plain counts open plain TCP connections, which register holds to
	// MaxLoad as nbhttp does for those it registers (over TLS).
	plain atomic.Int64
	// rate is MaxUpgradeRate's limiter; nil when off.
	rate *upgradeRate

	stop chan struct{}
	wg   sync.WaitGroup
}

// New builds a server from cfg; Start runs it.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, conns: newRegistry(), perIP: newIPConns(), stop: make(chan struct{}),
		waiting: make(chan struct{}, maxBarrierWaiters), yields: make([]pollerYield, max(cfg.Pollers, 1)),
		rate: newUpgradeRate(cfg.MaxUpgradeRate)}
	s.tick.Store(1)
	var err error
	onBroadcast := cfg.Room.OnBroadcast
	cfg.Room.OnBroadcast = func(n int, d time.Duration) {
		s.m.observeBroadcast(n, d)
		if onBroadcast != nil {
			onBroadcast(n, d)
		}
	}
	if s.hub, err = room.New(cfg.Room); err != nil {
		return nil, err
	}
	s.m = newMetrics(func() int { return int(s.conns.count.Load()) }, s.hub.Stats)
	s.m.reg.MustRegister(cfg.Collectors...)
	for range cfg.Flushers {
		s.flushers = append(s.flushers, newFlusher(s))
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	mux.HandleFunc("/healthz", s.serveHealth)
	mux.Handle("/metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
	if cfg.Page != nil {
		mux.Handle("/", cfg.Page)
	}
	logging.SetLevel(logging.LevelNone) // nbio's own logger is noisy; we log what matters
	engineCfg := nbhttp.Config{
		Network: "tcp",
		Addrs:   []string{cfg.Addr},
		Handler: mux,
		NPoller: cfg.Pollers,
		// nbio applies this to HTTP connections only: it is the handshake
		// timeout. Upgraded connections are timed by the janitor.
		KeepaliveTime: cfg.HandshakeTimeout,
		// A backstop: our own MaxPending check closes slow consumers first,
		// with a close frame.
		MaxWriteBufferSize: cfg.MaxPending * 2,
		MaxLoad:            maxLoad(cfg.MaxConns, fileLimit()),
		ReadLimit:          1 << 20,
		SupportServerOnly:  true,
		// No TCP keepalive (Go's default for accepted sockets): the
		// janitor's pings find dead peers, and it saves four setsockopt
		// calls per connection.
		Listen: func(network, addr string) (net.Listener, error) {
			ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), network, addr)
			if err != nil {
				return nil, err
			}
			bl := backoffListener{Listener: ln, s: s}
			if cfg.TLSCertFile != "" {
				return bl, nil
			}
			return guardedListener{Listener: bl, s: s}, nil
		},
	}
	if cfg.TLSCertFile != "" {
		if engineCfg.TLSConfig, err = loadTLS(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			s.hub.Close()
			return nil, err
		}
		engineCfg.Addrs, engineCfg.AddrsTLS = nil, engineCfg.Addrs
	}
	s.engine = nbhttp.NewEngine(engineCfg)
	s.engine.OnClose(s.onClose)
	if engineCfg.TLSConfig == nil {
		s.handshakes = newHandshakeQueue(max(fileLimit(), cfg.MaxConns+FDHeadroom))
	}
	s.engine.Engine.OnData(s.onData)
	watchHandoff(s.engine)
	s.engine.OnWrittenSize(func(nc *nbio.Conn, _ []byte, n int) {
		if c, ok := nc.Session().(*conn); ok {
			c.written(n)
		}
	})
	return s, nil
}

// Start listens and serves in the background.
func (s *Server) Start() error {
	if err := s.engine.Start(); err != nil {
		s.hub.Close()
		return fmt.Errorf("loop: start: %w", err)
	}
	if g, err := newReuseGuard(s.engine.Engine, s.cfg.Pollers); err != nil {
		s.log.Warn("fd reuse guard unavailable; fresh connections may be dropped under churn", "err", err)
	} else {
		s.reuse.Store(g)
	}
	for _, fl := range s.flushers {
		s.wg.Add(1)
		go fl.run(s.stop, &s.wg)
	}
	s.wg.Add(1)
	go s.janitor()
	s.log.Info("listening", "addr", s.Addr(), "max_conns", s.cfg.MaxConns)
	if lim := fileLimit(); lim > 0 && s.cfg.MaxConns > lim-FDHeadroom {
		s.log.Warn("max_conns is past what the open-file limit allows; connections past it are refused at accept",
			"max_conns", s.cfg.MaxConns, "file_limit", lim, "max_tcp_conns", maxLoad(s.cfg.MaxConns, lim))
	}
	return nil
}

// Addr returns the address the server listens on, with the real port.
func (s *Server) Addr() string {
	if len(s.engine.AddrsTLS) > 0 {
		return s.engine.AddrsTLS[0]
	}
	return s.engine.Addrs[0]
}

// Hub returns the server's rooms and users.
func (s *Server) Hub() *room.Hub { return s.hub }

// Conns returns the number of open WebSocket connections.
func (s *Server) Conns() int { return int(s.conns.count.Load()) }

// Shutdown stops taking connections, closes every client with 1001, waits
// for them to go until ctx is done, and stops the server.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.shutting.CompareAndSwap(false, true) {
		return errors.New("loop: already shut down")
	}
	all := s.conns.snapshot(nil)
	s.log.Info("shutting down", "conns", len(all))
	for _, c := range all {
		c.close(reasonShutdown)
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.conns.count.Load() > 0 {
		select {
		case <-ctx.Done():
			s.log.Warn("shutdown deadline reached", "open", s.conns.count.Load())
			goto stop
		case <-t.C:
		}
	}
stop:
	close(s.stop)
	// nbio closes what is left and waits at least one of its 200 ms rounds.
	err := s.engine.Shutdown(ctx)
	if g := s.reuse.Load(); g != nil {
		g.close()
	}
	s.wg.Wait()
	s.hub.Close()
	return err
}

// janitor advances the coarse clock and, once a second, checks every
// connection for pings, idle timeouts and overdue closes.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	var batch []*conn
	var silent []*nbio.Conn
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := s.tick.Add(1)
		if s.handshakes != nil {
			silent = s.closeSilent(now, silent)
		}
		if now%int64(time.Second/tickInterval) != 0 {
			continue
		}
		batch = s.conns.snapshot(batch[:0])
		for i, c := range batch {
			c.janitorCheck(now)
			batch[i] = nil
		}
	}
}

func (s *Server) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.shutting.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("shutting down\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// pickFlusher spreads connections over the flushers.
func (s *Server) pickFlusher() *flusher {
	return s.flushers[int(s.next.Add(1))%len(s.flushers)]
}

// Pollers returns the number of nbio pollers the server runs.
func (s *Server) Pollers() int { return s.cfg.Pollers }
