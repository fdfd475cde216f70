package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer speaks the nbchat protocol well enough to test the generator
// over real sockets: one goroutine per connection, one lock for everything.
// Its faults are injectable, to prove the checker sees them.
type fakeServer struct {
	t    *testing.T
	URL  string
	skip int64 // when a room's seq reaches skip, jump one seq (a gap)
	raw  bool  // broadcast every frame to everyone, like a hub example
	// Storm faults: refuse every refuseEvery-th upgrade that names no room
	// (a rejoin) with 503 and Retry-After 1, and leave the first message
	// out of every replay after a join with since.
	refuseEvery int64
	upgrades    atomic.Int64
	// closeEvery closes every closeEvery-th rejoin right after its 101.
	closeEvery int64
	rejoins    atomic.Int64
	replayGap  bool
	mu         sync.Mutex
	users      map[string]*fconn
	rooms      map[string]*froom
	all        map[*fconn]bool

	// A fake cluster is several listeners ("nodes") over the same rooms,
	// each with its own /metrics; URLs has one WebSocket URL per node.
	URLs       []string
	byNode     [][]string                       // names connected through each node, in order; under mu
	mute       func(node int, room string) bool // drop a room's messages to a node's members; under mu
	deliveries []atomic.Int64                   // per node, counted at the recipient's node
}

type froom struct {
	seq     int64
	members map[*fconn]bool
	hist    []map[string]any // every message, by seq order
}

type fconn struct {
	name  string
	node  int
	c     net.Conn
	wmu   sync.Mutex
	rooms map[string]bool
}

var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

func startFake(t *testing.T, skip int64, raw bool) *fakeServer {
	return startFakeCluster(t, 1, skip, raw)
}

// startFakeCluster starts a fake with n nodes sharing its rooms. Each
// node's metrics are its own: RSS 10 MiB + 1000 B per connection, CPU
// 1.5 s + 1 s per million deliveries, so per-node figures are exact.
func startFakeCluster(t *testing.T, n int, skip int64, raw bool) *fakeServer {
	s := &fakeServer{t: t, skip: skip, raw: raw, users: map[string]*fconn{}, rooms: map[string]*froom{}, all: map[*fconn]bool{},
		byNode: make([][]string, n), deliveries: make([]atomic.Int64, n)}
	for node := 0; node < n; node++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.URLs = append(s.URLs, "ws://"+ln.Addr().String()+"/ws")
		mux := http.NewServeMux()
		mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, node) })
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) { s.metrics(w, node) })
		srv := &http.Server{Handler: mux}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	s.URL = s.URLs[0]
	return s
}

func (s *fakeServer) metrics(w io.Writer, node int) {
	s.mu.Lock()
	n := 0
	for fc := range s.all {
		if fc.node == node {
			n++
		}
	}
	s.mu.Unlock()
	d := s.deliveries[node].Load()
	fmt.Fprintf(w, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %d\n", 10<<20+n*1000)
	fmt.Fprintf(w, "process_cpu_seconds_total %g\ngo_goroutines %d\nnbchat_connections %d\n", 1.5+float64(d)/1e6, n+5, n)
	fmt.Fprintf(w, "nbchat_deliveries_total{kind=\"room\"} %d\n", d)
}

func (s *fakeServer) serveWS(w http.ResponseWriter, r *http.Request, node int) {
	name, room := r.URL.Query().Get("name"), r.URL.Query().Get("room")
	if s.raw {
		name = fmt.Sprintf("raw%p", r)
	}
	if !validName.MatchString(name) || (room != "" && !validName.MatchString(room)) {
		http.Error(w, "bad name", http.StatusBadRequest)
		return
	}
	if room == "" && s.refuseEvery > 0 && s.upgrades.Add(1)%s.refuseEvery == 0 {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	_, taken := s.users[name]
	s.mu.Unlock()
	if taken {
		http.Error(w, "name taken", http.StatusConflict)
		return
	}
	h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	_, _ = fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(h[:]))
	if room == "" && s.closeEvery > 0 && s.rejoins.Add(1)%s.closeEvery == 0 {
		_ = conn.Close()
		return
	}
	fc := &fconn{name: name, node: node, c: conn, rooms: map[string]bool{}}
	s.mu.Lock()
	s.users[name], s.all[fc] = fc, true
	s.byNode[node] = append(s.byNode[node], name)
	if !s.raw {
		fc.send(map[string]any{"type": "welcome", "name": name})
		if room != "" {
			s.joinLocked(fc, room, -1)
		}
	}
	s.mu.Unlock()
	s.readLoop(fc, brw.Reader)
}

// joinLocked adds fc to room and tells everyone, as nbchat does in small
// rooms; with since >= 0 the messages after it follow joined.
func (s *fakeServer) joinLocked(fc *fconn, room string, since int64) {
	rm := s.rooms[room]
	if rm == nil {
		rm = &froom{members: map[*fconn]bool{}}
		s.rooms[room] = rm
	}
	rm.members[fc], fc.rooms[room] = true, true
	names := []string{}
	for m := range rm.members {
		names = append(names, m.name)
	}
	sort.Strings(names)
	joined := map[string]any{"type": "joined", "room": room, "count": len(names), "members": names, "seq": rm.seq}
	if since >= 0 {
		joined["recovered"] = true
	}
	fc.send(joined)
	gap := s.replayGap
	for _, m := range rm.hist {
		if since >= 0 && m["seq"].(int64) > since {
			if gap {
				gap = false
				continue
			}
			fc.send(m)
		}
	}
	for m := range rm.members {
		if m != fc {
			m.send(map[string]any{"type": "presence", "room": room, "event": "join", "name": fc.name, "count": len(names)})
		}
	}
}

func (s *fakeServer) leaveLocked(fc *fconn) {
	delete(s.users, fc.name)
	delete(s.all, fc)
	for room := range fc.rooms {
		rm := s.rooms[room]
		delete(rm.members, fc)
		for m := range rm.members {
			m.send(map[string]any{"type": "presence", "room": room, "event": "leave", "name": fc.name, "count": len(rm.members)})
		}
	}
}

func (s *fakeServer) readLoop(fc *fconn, br *bufio.Reader) {
	defer func() {
		s.mu.Lock()
		s.leaveLocked(fc)
		s.mu.Unlock()
		_ = fc.c.Close()
	}()
	for {
		op, payload, err := readClientFrame(br)
		if err != nil {
			return
		}
		switch op {
		case opClose:
			fc.write(opClose, payload)
			return
		case opPing:
			fc.write(opPong, payload)
		case opText:
			s.onText(fc, payload)
		}
	}
}

func (s *fakeServer) onText(fc *fconn, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.raw {
		for m := range s.all {
			m.write(opText, p)
			s.deliveries[m.node].Add(1)
		}
		return
	}
	var m struct {
		Type, Room, To, Text string
		Since                *int64
	}
	if json.Unmarshal(p, &m) != nil {
		fc.send(map[string]any{"type": "error", "code": "bad_request", "message": "bad json"})
		return
	}
	switch m.Type {
	case "msg":
		rm := s.rooms[m.Room]
		if rm == nil || !rm.members[fc] {
			fc.send(map[string]any{"type": "error", "code": "not_member", "message": "not in room"})
			return
		}
		rm.seq++
		if rm.seq == s.skip {
			rm.seq++ // injected fault
		}
		out := map[string]any{"type": "msg", "room": m.Room, "from": fc.name, "text": m.Text, "seq": rm.seq, "ts": time.Now().UnixMilli()}
		rm.hist = append(rm.hist, out)
		for mem := range rm.members {
			if s.mute != nil && s.mute(mem.node, m.Room) {
				continue // injected fault: the node never delivers this room
			}
			mem.send(out)
			s.deliveries[mem.node].Add(1)
		}
	case "join":
		since := int64(-1)
		if m.Since != nil {
			since = *m.Since
		}
		s.joinLocked(fc, m.Room, since)
	case "dm":
		to := s.users[m.To]
		if to == nil {
			fc.send(map[string]any{"type": "error", "code": "no_such_user", "message": m.To})
			return
		}
		out := map[string]any{"type": "dm", "from": fc.name, "to": m.To, "text": m.Text, "ts": time.Now().UnixMilli()}
		to.send(out)
		if to != fc {
			fc.send(out)
		}
	default:
		fc.send(map[string]any{"type": "error", "code": "unknown_type", "message": m.Type})
	}
}

func (fc *fconn) send(v any) {
	b, _ := json.Marshal(v)
	fc.write(opText, b)
}

// write sends one unmasked server frame.
func (fc *fconn) write(op byte, p []byte) {
	fc.wmu.Lock()
	_ = fc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = fc.c.Write(serverFrame(op, p))
	fc.wmu.Unlock()
}

// readClientFrame reads one frame and insists on the mask, as RFC 6455
// requires of a server: the generator must mask every frame.
func readClientFrame(br *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 == 0 {
		return 0, nil, fmt.Errorf("unmasked client frame")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	if _, err := io.ReadFull(br, key[:]); err != nil {
		return 0, nil, err
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return 0, nil, err
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
	return h[0] & 0x0F, p, nil
}
