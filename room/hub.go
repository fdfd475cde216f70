package room

import (
	"cmp"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"nbchat/protocol"
	"nbchat/store"
)

// Config configures a Hub. The zero value is valid: every field has a
// default, applied by New.
type Config struct {
	// Shards is the number of room shards and of user shards, a power of
	// two. Default 64.
	Shards int
	// PresenceLimit is the largest room whose joins and leaves are sent
	// one by one; bigger rooms get coalesced presence. Default 200.
	PresenceLimit int
	// PresenceInterval is how often coalesced presence is sent. Default 1s.
	PresenceInterval time.Duration
	// PresenceBurst is how many joins and leaves a small room sends one by
	// one in each PresenceInterval; more are coalesced until the next
	// tick, as in big rooms (a reconnect storm), and after a tick that
	// coalesced, none is sent one by one until an interval passes without
	// one to coalesce. Default 5; negative: every one is coalesced.
	PresenceBurst int
	// PresenceNames caps each name list of a coalesced presence message.
	// Default 50.
	PresenceNames int
	// JoinedNames caps the member names a joined reply carries. Default 200.
	JoinedNames int
	// HistorySize is how many messages each room keeps for history and
	// recovery (-1: none). Default 1000.
	HistorySize int
	// HistoryAge drops kept messages, room and direct, older than this.
	// Default 24h.
	HistoryAge time.Duration
	// JoinHistory is how many recent messages follow a joined reply
	// (-1: none). Default 50.
	JoinHistory int
	// DMHistory is how many direct messages each user keeps (-1: none).
	// Default 200.
	DMHistory int
	// Sessions is how many connections may hold one name at once (a
	// user's tabs and devices): each gets the user's direct messages, and
	// rooms tell others of the user's first join and last leave. One makes
	// names exclusive. In a cluster it counts connections on every node.
	// Default 8.
	Sessions int
	// OfflineTTL is how long a user's direct messages and recent message
	// ids outlive its last connection. Default 1h.
	OfflineTTL time.Duration
	// RoomTTL is how long an empty room stays in memory once every message
	// it keeps is in the Store; the next join (or, in a cluster, the next
	// claim) reads its seq and history back. Without a store an empty room
	// stays while it keeps history. Default 1h; negative: never.
	RoomTTL time.Duration
	// SweepInterval is how often expired history, idle rooms and departed
	// users are dropped, counted in PresenceIntervals. Default 10s.
	SweepInterval time.Duration
	// Store, if set, keeps messages on disk: a message is shown and
	// acknowledged only once stored, and seqs continue after a restart.
	Store *store.Store
	// Cluster, if set, shares rooms, names and direct messages with other
	// nodes (see cluster.go).
	Cluster Cluster
	// Logger receives errors loading from the store. Default slog.Default().
	Logger *slog.Logger
	// OnBroadcast, if set, is called after each room broadcast with the
	// number of recipients and how long enqueueing to them took.
	OnBroadcast func(recipients int, d time.Duration)
}

func (c *Config) setDefaults() error {
	if c.Shards == 0 {
		c.Shards = 64
	}
	if c.Shards < 1 || c.Shards&(c.Shards-1) != 0 {
		return errors.New("room: shard count must be a power of two")
	}
	if c.PresenceLimit == 0 {
		c.PresenceLimit = 200
	}
	if c.PresenceInterval == 0 {
		c.PresenceInterval = time.Second
	}
	if c.PresenceBurst == 0 {
		c.PresenceBurst = 5
	}
	if c.PresenceNames == 0 {
		c.PresenceNames = 50
	}
	if c.JoinedNames == 0 {
		c.JoinedNames = 200
	}
	if c.HistorySize == 0 {
		c.HistorySize = 1000
	}
	if c.HistoryAge == 0 {
		c.HistoryAge = 24 * time.Hour
	}
	if c.JoinHistory == 0 {
		c.JoinHistory = 50
	}
	if c.DMHistory == 0 {
		c.DMHistory = 200
	}
	if c.Sessions <= 0 {
		c.Sessions = 8
	}
	if c.OfflineTTL == 0 {
		c.OfflineTTL = time.Hour
	}
	if c.RoomTTL == 0 {
		c.RoomTTL = time.Hour
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Hub is the set of rooms and the user registry.
type Hub struct {
	cfg   Config
	mask  uint32
	rooms []roomShard
	users []userShard

	// pmu guards pending, the rooms with coalesced presence to send.
	pmu     sync.Mutex
	pending []*Room
	// presenceTick counts the presence ticks; a room's burst is per tick.
	presenceTick atomic.Uint32

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	// leaving is set when this node hands its rooms over before it goes.
	leaving atomic.Bool

	roomCount  atomic.Int64
	deliveries atomic.Uint64
	messages   atomic.Uint64
}

type roomShard struct {
	mu    sync.Mutex
	rooms map[string]*Room
	_     [40]byte // keeps neighbouring shards' locks off one cache line
}

type userShard struct {
	mu    sync.RWMutex
	users map[string]*User
	// locals are the users connected to this node, in a cluster; their
	// owner may be another node.
	locals map[string]*User
	_      [32]byte
}

// New returns a hub and starts its presence ticker; Close stops it.
func New(cfg Config) (*Hub, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	h := &Hub{
		cfg:   cfg,
		mask:  uint32(cfg.Shards - 1),
		rooms: make([]roomShard, cfg.Shards),
		users: make([]userShard, cfg.Shards),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for i := range h.rooms {
		h.rooms[i].rooms = make(map[string]*Room)
		h.users[i].users = make(map[string]*User)
		h.users[i].locals = make(map[string]*User)
	}
	go h.presenceLoop()
	return h, nil
}

// Close stops the presence ticker. It may be called more than once.
func (h *Hub) Close() {
	h.closeOnce.Do(func() { close(h.stop) })
	<-h.done
}

// Stats are counters since the hub started.
type Stats struct {
	Rooms      int64  // rooms that exist now
	Messages   uint64 // room messages and direct messages accepted
	Deliveries uint64 // frames queued to members by broadcasts and DMs
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{Rooms: h.roomCount.Load(), Messages: h.messages.Load(), Deliveries: h.deliveries.Load()}
}

// fnv32a hashes a name to pick its shard.
func fnv32a[T ~string | ~[]byte](s T) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// Join adds m to the room called name, creating the room if needed, and
// sends m a joined reply carrying ref, followed by recent messages: with
// since >= 0 every kept message after since (and "recovered" says whether
// that is all of them), else the last Config.JoinHistory. Joining a room m
// is already in answers joined again and changes nothing.
func (h *Hub) Join(m Member, name, ref []byte, since int64) (*Room, *protocol.Error) {
	for {
		r, _ := roomFor(h, name)
		ok, err := r.join(m, ref, since)
		if err != nil {
			return nil, err
		}
		if ok {
			return r, nil
		}
		// The room emptied and went away between the lookup and the join.
	}
}

// roomFor returns the live room called name, making it (with its seq and
// history from the store) if there is none; created says it did. A gone
// room still in the map is replaced, not added: its remove then finds
// another room and counts nothing.
func roomFor[T ~string | ~[]byte](h *Hub, name T) (r *Room, created bool) {
	s := &h.rooms[fnv32a(name)&h.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	if r = s.rooms[string(name)]; r != nil && !r.gone.Load() {
		return r, false
	}
	if r == nil {
		h.roomCount.Add(1)
	}
	r = newRoom(h, s, string(name))
	s.rooms[r.name] = r
	return r, true
}

// remove drops r from its shard once it has emptied.
func (h *Hub) remove(r *Room) {
	s := r.shard
	s.mu.Lock()
	if s.rooms[r.name] == r {
		delete(s.rooms, r.name)
		h.roomCount.Add(-1)
	}
	s.mu.Unlock()
}

// load fills a new room's or user's seq and history from the store.
func (h *Hub) load(key string, seq *uint64, hist *history) {
	if h.cfg.Store == nil {
		return
	}
	last, entries, err := h.cfg.Store.Load(key, hist.max)
	if err != nil {
		h.cfg.Logger.Error("loading history", "stream", key, "err", err)
	}
	*seq = last
	for _, e := range entries {
		hist.add(protocol.NewFrame(protocol.OpText, e.Payload), e.Seq, e.TS)
	}
	hist.expire(time.Now().Add(-h.cfg.HistoryAge).UnixMilli())
}

// allRooms returns every room, each shard locked only while it is copied.
func (h *Hub) allRooms() []*Room {
	var rooms []*Room
	for i := range h.rooms {
		s := &h.rooms[i]
		s.mu.Lock()
		for _, r := range s.rooms {
			rooms = append(rooms, r)
		}
		s.mu.Unlock()
	}
	return rooms
}

// sweepRooms drops expired history, rooms left with nothing and rooms
// empty for RoomTTL whose history the store has.
func (h *Hub) sweepRooms(now int64) {
	cutoff := now - h.cfg.HistoryAge.Milliseconds()
	for _, r := range h.allRooms() {
		if r.sweep(cutoff, now) {
			h.remove(r)
		}
	}
}

// expireStreamsPerSweep bounds the streams one sweep looks at in the
// store: 100,000 rooms and users are covered every quarter of an hour.
const expireStreamsPerSweep = 1000

// expireStored drops stored messages older than HistoryAge, which the
// rooms and users in memory have already let go of.
func (h *Hub) expireStored(now int64) {
	if st := h.cfg.Store; st != nil {
		if err := st.Expire(now-h.cfg.HistoryAge.Milliseconds(), expireStreamsPerSweep); err != nil {
			h.cfg.Logger.Error("expiring stored messages", "err", err)
		}
	}
}

// Find returns the room called name, or nil.
func (h *Hub) Find(name []byte) *Room {
	s := &h.rooms[fnv32a(name)&h.mask]
	s.mu.Lock()
	r := s.rooms[string(name)]
	s.mu.Unlock()
	if r == nil || r.gone.Load() {
		return nil
	}
	return r
}

// maxRoomsListed caps a rooms reply.
const maxRoomsListed = 100

// RoomCount is a room's name and member count.
type RoomCount struct {
	Name  string
	Count int
}

// Rooms sends m the busiest rooms with their member counts, busiest first;
// in a cluster, the rooms every node owns, as they last announced them.
func (h *Hub) Rooms(m Member, ref []byte) {
	var list []RoomCount
	if c := h.cfg.Cluster; c != nil {
		list = append(h.OwnedCounts(maxRoomsListed), c.Directory()...)
	} else {
		list = h.counts(func(*Room) bool { return true })
	}
	sortCounts(list)
	list = list[:min(len(list), maxRoomsListed)]
	m.Send(protocol.Rooms(ref, func(yield func(string, int) bool) {
		for _, rc := range list {
			if !yield(rc.Name, rc.Count) {
				return
			}
		}
	}))
}

// OwnedCounts returns up to limit of the busiest rooms this node orders:
// in a cluster, their counts are the whole cluster's.
func (h *Hub) OwnedCounts(limit int) []RoomCount {
	list := h.counts(func(r *Room) bool { return r.ownerName() == "" })
	sortCounts(list)
	return list[:min(len(list), limit)]
}

func (h *Hub) counts(keep func(*Room) bool) []RoomCount {
	var list []RoomCount
	for _, r := range h.allRooms() {
		if n := int(r.count.Load()); n > 0 && keep(r) {
			list = append(list, RoomCount{r.name, n})
		}
	}
	return list
}

func sortCounts(list []RoomCount) {
	slices.SortFunc(list, func(a, b RoomCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
}
