package room

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"nbchat/protocol"
)

// event is any server message decoded for assertions.
type event struct {
	Type    string          `json:"type"`
	Room    string          `json:"room"`
	From    string          `json:"from"`
	To      string          `json:"to"`
	Text    string          `json:"text"`
	Event   string          `json:"event"`
	Name    string          `json:"name"`
	Code    string          `json:"code"`
	Count   int             `json:"count"`
	Members []string        `json:"members"`
	Joined  []string        `json:"joined"`
	Left    []string        `json:"left"`
	Seq     uint64          `json:"seq"`
	TS      int64           `json:"ts"`
	Ref     json.RawMessage `json:"ref"`
	Rooms   []struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	} `json:"rooms"`
	Recovered    bool    `json:"recovered"`
	HasRecovered bool    `json:"-"`
	Messages     []event `json:"messages"`
	More         bool    `json:"more"`
}

// fakeMember is a Member that keeps a copy of every frame it is sent and
// Releases the frame at once, as a connection does once it has written it.
// Send only copies, so it is cheap enough to run under a room's lock.
type fakeMember struct {
	name string

	mu     sync.Mutex
	frames [][]byte // payloads, in arrival order
	bad    []string // frames whose WebSocket header was wrong
}

func newFake(name string) *fakeMember { return &fakeMember{name: name} }

func (m *fakeMember) Name() string { return m.name }

func (m *fakeMember) Send(f *protocol.Frame) {
	p := append([]byte(nil), f.Payload()...)
	err := checkHeader(f.Bytes(), len(p))
	f.Release()
	m.mu.Lock()
	m.frames = append(m.frames, p)
	if err != nil {
		m.bad = append(m.bad, err.Error())
	}
	m.mu.Unlock()
}

// checkHeader checks that b starts with the header of a final, unmasked
// text frame carrying n bytes of payload.
func checkHeader(b []byte, n int) error {
	if len(b) < 2 || b[0] != 0x80|protocol.OpText || b[1]&0x80 != 0 {
		return fmt.Errorf("bad frame header % x", b[:min(len(b), 2)])
	}
	var got, hdr int
	switch l := int(b[1]); l {
	case 126:
		got, hdr = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		got, hdr = int(binary.BigEndian.Uint64(b[2:])), 10
	default:
		got, hdr = l, 2
	}
	if got != n || len(b) != hdr+n {
		return fmt.Errorf("header says %d bytes, frame is %d with %d payload", got, len(b), n)
	}
	return nil
}

// events decodes everything received so far and forgets it.
func (m *fakeMember) events(t testing.TB) []event {
	t.Helper()
	m.mu.Lock()
	frames, bad := m.frames, m.bad
	m.frames, m.bad = nil, nil
	m.mu.Unlock()
	for _, s := range bad {
		t.Errorf("%s: %s", m.name, s)
	}
	evs := make([]event, len(frames))
	for i, p := range frames {
		evs[i].HasRecovered = bytes.Contains(p, []byte(`"recovered":`))
		if err := json.Unmarshal(p, &evs[i]); err != nil {
			t.Fatalf("%s: frame %d is not JSON: %v: %s", m.name, i, err, p)
		}
	}
	return evs
}

// only returns the single event m received since the last call.
func (m *fakeMember) only(t testing.TB) event {
	t.Helper()
	evs := m.events(t)
	if len(evs) != 1 {
		t.Fatalf("%s got %d messages, want 1: %+v", m.name, len(evs), evs)
	}
	return evs[0]
}

// none checks that m received nothing since the last call.
func (m *fakeMember) none(t testing.TB) {
	t.Helper()
	if evs := m.events(t); len(evs) != 0 {
		t.Fatalf("%s got %d messages, want none: %+v", m.name, len(evs), evs)
	}
}

// countMember is a Member that only counts and Releases what it is sent.
// It allocates nothing, for benchmarks and allocation guards.
type countMember struct {
	name string
	n    atomic.Int64
}

func (m *countMember) Name() string { return m.name }

func (m *countMember) Send(f *protocol.Frame) {
	m.n.Add(1)
	f.Release()
}

// newHub returns a hub that is closed when the test ends.
// newHub starts a hub for a test. History is off unless the test sets it,
// so replies are only what each test is about.
func newHub(t testing.TB, cfg Config) *Hub {
	t.Helper()
	if cfg.HistorySize == 0 {
		cfg.HistorySize = -1
	}
	if cfg.JoinHistory == 0 {
		cfg.JoinHistory = -1
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// userName is the i-th test user; names sort in index order.
func userName(i int) string { return fmt.Sprintf("u%05d", i) }

// fill adds n counting members to the room called name and returns them.
func fill(h *Hub, name string, n int) (*Room, []*countMember) {
	ms := make([]*countMember, n)
	var r *Room
	for i := range ms {
		ms[i] = &countMember{name: userName(i)}
		r = mustJoin(h, ms[i], []byte(name), nil)
	}
	return r, ms
}

// Test shorthands for the hub's API.

func mustJoin(h *Hub, m Member, name, ref []byte) *Room {
	r, err := h.Join(m, name, ref, -1)
	if err != nil {
		panic(err)
	}
	return r
}

func publish(r *Room, m Member, text []byte) *protocol.Error {
	_, err := r.Publish(m, text, nil)
	return err
}

// register claims name for m and attaches it, so m gets a welcome and
// then its direct messages.
func register(h *Hub, name string, m Member) bool {
	u, ok := h.Register(name, m)
	if ok {
		_ = u.Attach(m, -1)
		if f, isFake := m.(*fakeMember); isFake {
			f.mu.Lock()
			f.frames = nil // the welcome
			f.mu.Unlock()
		}
	}
	return ok
}

func unregister(h *Hub, name string, m Member) {
	if u := h.user([]byte(name)); u != nil {
		h.Unregister(u, m)
	}
}

func dm(h *Hub, from Member, to, text []byte) *protocol.Error {
	return h.DM(h.user([]byte(from.Name())), to, text, nil)
}
