package room

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/btree"

	"nbchat/protocol"
	"nbchat/store"
)

// Room is a named group of members with its own message sequence.
type Room struct {
	// Immutable after creation.
	name  string
	key   string // the room's stream on disk
	hub   *Hub
	shard *roomShard

	// gone is set, under mu, when the room empties; the hub then drops it
	// and a later join creates a new room under the same name.
	gone atomic.Bool
	// count mirrors len(members) for readers that do not take mu.
	count atomic.Int32

	// mu guards the fields below and orders broadcasts.
	mu      sync.Mutex
	members []Member       // fan-out order
	index   map[Member]int // position of each member in members; nil in a small room (see find)
	names   *btree.BTreeG[string]
	// extra counts, by name, a user's connections in members beyond its
	// first: the room tells others of a user's first join and last leave
	// only, and counts users. nil when every member has a name of its own.
	extra   map[string]int32
	seq     uint64 // the last seq given out
	durable uint64 // the last seq stored and shown; seq when there is no store
	hist    history
	// pending are messages numbered but not yet on disk (with a store):
	// they are shown, kept and acknowledged once the store says so.
	pending []pendingMsg

	// Presence waiting for the next tick: every join and leave of a big
	// room, and those of a small one past its burst (see presenceLocked).
	// presenceNames are the members who came or went since the last tick;
	// the tick tells each one's state then.
	presenceNames  map[string]struct{}
	presenceQueued bool
	presenceTick   uint32 // the hub's tick presenceSent counts in
	presenceSent   int    // joins and leaves sent one by one in that tick
	presenceHot    uint32 // the last tick that sent coalesced names (0: none)

	// idleSince is when a sweep first found the room empty (0: it is not).
	idleSince int64
	// claimedUpTo is the last seq a claim took from another node: messages
	// up to it are not in this node's store.
	claimedUpTo uint64

	// In a cluster (see cluster.go): owner is the node that orders the
	// room, "" for this one. An owned room also has members on other
	// nodes (remotes, by node, then name); total counts every member.
	// A mirrored room's members are local; seq is the last message shown.
	owner     string
	claimed   bool
	remotes   map[string]map[string]*remoteMember
	total     int
	ids       map[string]*idRing  // owned: recent message ids by sender
	joining   map[Member]struct{} // mirrored: joins the owner has not answered
	synced    bool                // mirrored: seq is the owner's
	resyncing bool
	held      []HistEntry // mirrored: messages after a gap, until it is filled
	inflight  []Envelope  // mirrored: messages sent to the owner, not yet acknowledged
}

// pendingMsg is a message waiting for the store.
type pendingMsg struct {
	f    *protocol.Frame // one reference
	seq  uint64
	ts   int64
	from Member
	id   []byte // a copy of the request id, to acknowledge
}

// Acker is implemented by members that want to know when a message they
// sent with an id is stored.
type Acker interface {
	Acked(room string, id []byte, seq uint64)
}

// nameNodes is the node free list every room's name tree shares: one
// list per tree cost 400 bytes a room, most of it for rooms of a few.
var nameNodes = btree.NewFreeListG[string](btree.DefaultFreeListSize)

func lessString(a, b string) bool { return a < b }

func newRoom(h *Hub, s *roomShard, name string) *Room {
	r := &Room{
		name:  name,
		key:   "r/" + name,
		hub:   h,
		shard: s,
		names: btree.NewWithFreeListG(16, lessString, nameNodes),
		hist:  history{max: max(h.cfg.HistorySize, 0)},
	}
	if c := h.cfg.Cluster; c != nil {
		r.owner = c.RoomOwner(name)
	}
	if r.owner == "" {
		h.load(r.key, &r.seq, &r.hist)
	}
	r.durable = r.seq
	return r
}

// Key implements store.Stream.
func (r *Room) Key() string { return r.key }

// Name returns the room's name.
func (r *Room) Name() string { return r.name }

// Count returns the number of members.
func (r *Room) Count() int { return int(r.count.Load()) }

// join adds m, replies and catches m up; it reports false if the room is
// gone. All of it happens under the room's lock, so the live messages that
// follow continue the replay with no gap and no duplicate.
func (r *Room) join(m Member, ref []byte, since int64) (bool, *protocol.Error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone.Load() {
		return false, nil
	}
	if r.owner != "" {
		return true, r.joinViaOwnerLocked(m, ref, since)
	}
	r.claimLocked()
	if since > int64(r.durable) {
		return true, errSinceAhead
	}
	if r.addLocalLocked(m) {
		if _, had := r.names.ReplaceOrInsert(m.Name()); had {
			r.addExtraLocked(m.Name())
		} else {
			r.total++
			r.count.Store(int32(r.total))
			r.idleSince = 0
			r.presenceLocked(m.Name(), m, protocol.EventJoin)
		}
	}
	rec := protocol.RecoveryNone
	if since >= 0 {
		rec = protocol.RecoveryPartial
		if r.hist.covers(uint64(since), r.durable) {
			rec = protocol.RecoveryFull
		}
	}
	m.Send(protocol.Joined(ref, r.name, r.total, r.firstNames(r.hub.cfg.JoinedNames), r.durable, rec))
	switch {
	case since >= 0:
		r.hist.since(m, uint64(since))
	case r.hub.cfg.JoinHistory > 0:
		r.hist.latest(m, r.hub.cfg.JoinHistory)
	}
	return true, nil
}

// Leave removes m and sends it a left reply carrying ref. It reports false
// if m was not a member.
func (r *Room) Leave(m Member, ref []byte) bool {
	if !r.remove(m) {
		return false
	}
	m.Send(protocol.Left(ref, r.name))
	return true
}

// Drop removes m without a reply, as when its connection closes.
func (r *Room) Drop(m Member) { r.remove(m) }

func (r *Room) remove(m Member) bool {
	r.mu.Lock()
	if r.owner != "" {
		return r.removeMirroredLocked(m) // unlocks
	}
	if !r.dropLocalLocked(m) {
		r.mu.Unlock()
		return false
	}
	if r.dropExtraLocked(m.Name()) {
		// The user is still here on another connection.
		r.mu.Unlock()
		return true
	}
	r.names.Delete(m.Name())
	r.total--
	r.count.Store(int32(r.total))
	// An empty room stays while it keeps history, so its seq continues
	// and returning members can recover; the sweep drops it later.
	gone := r.total == 0 && r.hist.n == 0 && len(r.pending) == 0
	if gone {
		r.gone.Store(true)
	} else if r.total > 0 {
		r.presenceLocked(m.Name(), m, protocol.EventLeave)
	}
	r.mu.Unlock()
	if gone {
		r.hub.remove(r)
	}
	return true
}

// addExtraLocked counts one more connection of a user already in the room.
// r.mu must be held.
func (r *Room) addExtraLocked(name string) {
	if r.extra == nil {
		r.extra = make(map[string]int32)
	}
	r.extra[name]++
}

// dropExtraLocked counts one connection of name's gone, if the user has
// another in the room; it reports whether it had. r.mu must be held.
func (r *Room) dropExtraLocked(name string) bool {
	n := r.extra[name]
	switch {
	case n <= 0:
		return false
	case n > 1:
		r.extra[name] = n - 1
	default:
		if delete(r.extra, name); len(r.extra) == 0 {
			r.extra = nil
		}
	}
	return true
}

// countLocalLocked makes the member list, counts and extra connections
// those of the members on this node alone. r.mu must be held.
func (r *Room) countLocalLocked() {
	r.names.Clear(false)
	r.extra, r.total = nil, 0
	for _, m := range r.members {
		if _, had := r.names.ReplaceOrInsert(m.Name()); had {
			r.addExtraLocked(m.Name())
		} else {
			r.total++
		}
	}
}

// Rooms of up to smallRoom members find one by scanning members: most rooms
// are small, and the map would be the bigger part of such a room's memory.
// A room keeps its map until it is down to half of that again.
const smallRoom = 16

// find returns m's position in members. r.mu must be held.
func (r *Room) find(m Member) (int, bool) {
	if r.index != nil {
		i, ok := r.index[m]
		return i, ok
	}
	for i, x := range r.members {
		if x == m {
			return i, true
		}
	}
	return 0, false
}

// addLocalLocked appends m, a connection on this node, to the fan-out
// list; it reports false if m is in it already. r.mu must be held.
func (r *Room) addLocalLocked(m Member) bool {
	if _, ok := r.find(m); ok {
		return false
	}
	if r.index == nil && len(r.members) >= smallRoom {
		r.index = make(map[Member]int, 2*len(r.members))
		for i, x := range r.members {
			r.index[x] = i
		}
	}
	if r.index != nil {
		r.index[m] = len(r.members)
	}
	r.members = append(r.members, m)
	return true
}

// dropLocalLocked takes m out of the fan-out list, moving the last member
// into its place; it reports false if m was not in it. r.mu must be held.
func (r *Room) dropLocalLocked(m Member) bool {
	i, ok := r.find(m)
	if !ok {
		return false
	}
	last := len(r.members) - 1
	moved := r.members[last]
	r.members[i] = moved
	r.members[last] = nil
	r.members = r.members[:last]
	if r.index != nil {
		r.index[moved] = i
		delete(r.index, m)
		if len(r.members) <= smallRoom/2 {
			r.index = nil
		}
	}
	return true
}

var errNotMember = &protocol.Error{Code: protocol.CodeNotMember, Message: "not a member of that room"}

// Publish numbers text from m with the room's next seq. Once it is stored
// (at once without a store) it is kept in the room's history, sent to every
// member, m included, and, if id is not nil and m is an Acker, acknowledged.
// It returns the seq.
func (r *Room) Publish(m Member, text, id []byte) (uint64, *protocol.Error) {
	ts := time.Now().UnixMilli()
	r.mu.Lock()
	if r.owner != "" {
		// The owner numbers it; the ack and the message come back from it.
		err := r.forwardLocked(&Envelope{Op: OpPublish, Room: r.name, Name: m.Name(), Conn: tokenOf(m), Text: text, ID: id, from: m})
		r.mu.Unlock()
		if err != nil {
			return 0, errUnavailable
		}
		return 0, nil
	}
	if _, ok := r.find(m); !ok {
		r.mu.Unlock()
		return 0, errNotMember
	}
	r.claimLocked()
	if seq, dup := r.recall(m.Name(), id); dup {
		durable := seq <= r.durable
		r.mu.Unlock()
		// A resend of a message still being stored is acknowledged once
		// it is, like the original.
		if a, ok := m.(Acker); ok && durable {
			a.Acked(r.name, id, seq)
		}
		return seq, nil
	}
	seq := r.publishLocked(m, text, id, ts)
	r.mu.Unlock()
	r.hub.messages.Add(1)
	return seq, nil
}

// publishLocked numbers and stores or shows a message. r.mu must be held.
func (r *Room) publishLocked(m Member, text, id []byte, ts int64) uint64 {
	r.seq++
	seq := r.seq
	r.remember(m.Name(), id, seq)
	f := protocol.Msg(r.name, m.Name(), text, seq, ts)
	if st := r.hub.cfg.Store; st != nil {
		f.Retain(1) // the store's reference
		r.pending = append(r.pending, pendingMsg{f: f, seq: seq, ts: ts, from: m, id: clone(id)})
		// Appending under the lock keeps the store's order the seq order.
		st.Append(store.Record{Stream: r, Seq: seq, TS: ts, Frame: f})
	} else {
		r.showLocked(f, seq, ts, m, id)
	}
	return seq
}

// Durable implements store.Stream: messages up to seq are on disk.
func (r *Room) Durable(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = popDurable(r.pending, seq, func(p *pendingMsg) { r.showLocked(p.f, p.seq, p.ts, p.from, p.id) })
}

// popDurable hands show every pending message up to seq, in order, and
// returns what is left.
func popDurable(pending []pendingMsg, seq uint64, show func(*pendingMsg)) []pendingMsg {
	n := 0
	for n < len(pending) && pending[n].seq <= seq {
		show(&pending[n])
		pending[n] = pendingMsg{}
		n++
	}
	return pending[:copy(pending, pending[n:])]
}

// showLocked keeps a stored message, sends it to every member and
// acknowledges it; it takes over the caller's reference to f. r.mu must
// be held.
func (r *Room) showLocked(f *protocol.Frame, seq uint64, ts int64, from Member, id []byte) {
	r.durable = seq
	f.Retain(1)
	r.hist.add(f, seq, ts)
	r.broadcastLocked(f, seq, ts)
	if id != nil {
		if a, ok := from.(Acker); ok {
			a.Acked(r.name, id, seq)
		}
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// History sends m, a member, up to limit kept messages before seq before
// (before <= 0: the latest), oldest first.
func (r *Room) History(m Member, before int64, limit int, ref []byte) *protocol.Error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owner != "" {
		if r.hub.cfg.Cluster.Send(r.owner, &Envelope{Op: OpHistory, Room: r.name, Name: m.Name(), Conn: tokenOf(m), Before: before, Limit: limit, Ref: ref}) != nil {
			return errUnavailable
		}
		return nil
	}
	if _, ok := r.find(m); !ok {
		return errNotMember
	}
	msgs, more := r.hist.page(before, limit)
	m.Send(protocol.History(ref, r.name, msgs, more))
	return nil
}

// sweep drops history older than cutoff, and reports whether the room is
// empty with nothing kept, or evictable at now, so it can go.
func (r *Room) sweep(cutoff, now int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hist.expire(cutoff)
	r.hist.compact()
	if r.owner != "" {
		if len(r.members) == 0 && len(r.joining) == 0 {
			r.gone.Store(true)
			return true
		}
		return false
	}
	if r.total > 0 || len(r.pending) > 0 {
		r.idleSince = 0
		return false
	}
	if r.hist.n == 0 || r.evictable(now) {
		// Once evicted, the next join starts a new room that loads seq
		// and history from the store, as after a restart.
		r.gone.Store(true)
		r.hist.clear()
		return true
	}
	return false
}

// evictable reports whether an empty room has been so for RoomTTL and its
// seq and every message it keeps are in this node's store. In a cluster
// the owner answers a claim for an evicted room from the store
// (Relinquish) and brings its evicted rooms back before it leaves
// (RestoreOwned); history a claim brought from another node is only in
// memory, so the room stays until that has aged out. r.mu must be held.
func (r *Room) evictable(now int64) bool {
	cfg := &r.hub.cfg
	if cfg.Store == nil || cfg.RoomTTL < 0 || r.durable != r.seq {
		return false
	}
	if cfg.Cluster != nil && (!r.claimed || r.hub.leaving.Load() || r.hist.first <= r.claimedUpTo) {
		return false
	}
	if r.idleSince == 0 {
		r.idleSince = now
	}
	return now-r.idleSince >= cfg.RoomTTL.Milliseconds()
}

// broadcastLocked queues f to every member, on this node and others, and
// releases the caller's reference. r.mu must be held: it is what keeps
// every member's queue in seq order. seq is 0 for presence.
func (r *Room) broadcastLocked(f *protocol.Frame, seq uint64, ts int64) {
	r.deliverRemotesLocked(f, seq, ts, "", "")
	r.broadcastLocalLocked(f, "")
}

// deliverRemotesLocked sends f to the other nodes with members, each once;
// their copies of the room fan it out. A presence event names its member
// (except, who does not get it) and event, so mirrors can follow the
// member list.
func (r *Room) deliverRemotesLocked(f *protocol.Frame, seq uint64, ts int64, except, event string) {
	if len(r.remotes) == 0 {
		return
	}
	e := Envelope{Op: OpFrame, Room: r.name, Name: except, To: event, Seq: seq, TS: ts, Frames: [][]byte{f.Payload()}}
	for node := range r.remotes {
		r.hub.cfg.Cluster.Deliver(node, &e)
	}
}

// broadcastLocalLocked queues f to every member on this node but the
// connections of the user called except, and releases the caller's
// reference.
func (r *Room) broadcastLocalLocked(f *protocol.Frame, except string) {
	if except != "" {
		// One pass: a reference for everyone, and those skipped (the
		// user's own connections, few) handed back after.
		f.Retain(len(r.members))
		skipped := 0
		for _, m := range r.members {
			if m.Name() == except {
				skipped++
				continue
			}
			m.Send(f)
		}
		for range skipped + 1 {
			f.Release()
		}
		r.hub.deliveries.Add(uint64(len(r.members) - skipped))
		return
	}
	start := time.Now()
	n := len(r.members)
	f.Retain(n)
	for _, m := range r.members {
		m.Send(f)
	}
	f.Release()
	r.hub.deliveries.Add(uint64(n))
	if r.hub.cfg.OnBroadcast != nil {
		r.hub.cfg.OnBroadcast(n, time.Since(start))
	}
}

// broadcastExceptLocked is broadcastLocked without one member.
func (r *Room) broadcastExceptLocked(f *protocol.Frame, skip Member) {
	n := len(r.members)
	if _, ok := r.find(skip); ok {
		n--
	}
	f.Retain(n)
	for _, m := range r.members {
		if m != skip {
			m.Send(f)
		}
	}
	f.Release()
	r.hub.deliveries.Add(uint64(n))
}

// Members sends m one page of the member list in name order, starting
// after the name after.
func (r *Room) Members(m Member, after []byte, limit int, ref []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owner != "" {
		if r.hub.cfg.Cluster.Send(r.owner, &Envelope{Op: OpMembers, Room: r.name, Name: m.Name(), Conn: tokenOf(m), After: after, Limit: limit, Ref: ref}) != nil {
			m.Send(protocol.Err(ref, errUnavailable))
		}
		return
	}
	r.membersLocked(m, after, limit, ref)
}

func (r *Room) membersLocked(m Member, after []byte, limit int, ref []byte) {
	names := func(yield func(string) bool) {
		n := 0
		r.names.AscendGreaterOrEqual(string(after), func(name string) bool {
			if name == string(after) {
				return true
			}
			n++
			return n <= limit && yield(name)
		})
	}
	m.Send(protocol.Members(ref, r.name, r.total, names))
}

// firstNames yields up to n member names in name order. r.mu must be held
// while the result is used.
func (r *Room) firstNames(n int) func(func(string) bool) {
	return func(yield func(string) bool) {
		i := 0
		r.names.Ascend(func(name string) bool {
			i++
			return i <= n && yield(name)
		})
	}
}

// Typing tells the room's other members that m's user is typing: at once,
// and to none of the user's own connections. Rooms of more than
// PresenceLimit users drop it, as they coalesce presence: there it would be
// noise that costs a write per member. Nothing is kept or numbered.
func (r *Room) Typing(m Member) *protocol.Error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.find(m); !ok {
		return errNotMember
	}
	if r.owner != "" {
		_ = r.hub.cfg.Cluster.Send(r.owner, &Envelope{Op: OpTyping, Room: r.name, Name: m.Name()})
		return nil
	}
	r.typingLocked(m.Name())
	return nil
}

// typingEvent, as the To of an unnumbered OpFrame, says it is a typing
// notice: mirrors pass it on to their members but the typist.
const typingEvent = "typing"

// typingLocked sends a typing notice from the user called name. r.mu must
// be held.
func (r *Room) typingLocked(name string) {
	if r.total > r.hub.cfg.PresenceLimit {
		return
	}
	f := protocol.Typing(r.name, name, "")
	r.deliverRemotesLocked(f, 0, 0, name, typingEvent)
	r.broadcastLocalLocked(f, name)
}

// presenceLocked tells the other members that the member called name (m
// if it is on this node, else nil) joined or left: at once in a small room,
// at the next tick in a big one, or in a small one that has already sent
// PresenceBurst events this tick or coalesced at the last (a reconnect
// storm, where announcing each of n joins to everyone costs n² writes).
// Once one is held, the rest of the tick's are too, so none overtakes
// another. r.mu must be held.
func (r *Room) presenceLocked(name string, m Member, event string) {
	cfg := &r.hub.cfg
	if r.total <= cfg.PresenceLimit && !r.presenceQueued && r.presenceBudgetLocked() {
		f := protocol.PresenceEvent(r.name, event, name, r.total)
		r.deliverRemotesLocked(f, 0, 0, name, event)
		if m != nil {
			r.broadcastExceptLocked(f, m)
		} else {
			r.broadcastLocalLocked(f, "")
		}
		return
	}
	if r.presenceNames == nil {
		r.presenceNames = make(map[string]struct{})
	}
	r.presenceNames[name] = struct{}{}
	if !r.presenceQueued {
		r.presenceQueued = true
		r.hub.queuePresence(r)
	}
}

// presenceBudgetLocked reports whether a small room may send one more
// presence event at once in this tick, and counts it. A room whose last
// tick had to coalesce gets no burst until a tick passes without: a storm
// lasts seconds, and a burst each second costs everyone a write per event.
func (r *Room) presenceBudgetLocked() bool {
	t := r.hub.presenceTick.Load()
	if r.presenceHot == t && t != 0 {
		return false
	}
	if r.presenceTick != t {
		r.presenceTick, r.presenceSent = t, 0
	}
	if r.presenceSent >= r.hub.cfg.PresenceBurst {
		return false
	}
	r.presenceSent++
	return true
}

// flushPresence sends the presence held since the last tick as one
// message: who is a member now and who is not, of those who came or went.
// Reporting each one's state now, rather than its events, is right for
// any member whatever it saw before: one who joined meanwhile has a list
// from its joined reply, which a later leave and join again would not
// otherwise correct. A big room's lists are cut to PresenceNames; a small
// room's are whole, so its members' lists stay exact, unless more than
// PresenceLimit came and went in one tick (left is cut there). Other nodes
// get the whole lists, to keep their copies' member lists.
func (r *Room) flushPresence() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.presenceQueued = false
	names := r.presenceNames
	if len(names) > maxKeptPresenceNames {
		r.presenceNames = nil // a storm's map is not kept
	} else {
		defer clear(names)
	}
	if len(names) > 0 {
		r.presenceHot = r.hub.presenceTick.Load()
	}
	if r.gone.Load() || r.owner != "" || len(names) == 0 {
		return
	}
	var joined, left []string
	for name := range names {
		if r.names.Has(name) {
			joined = append(joined, name)
		} else {
			left = append(left, name)
		}
	}
	slices.Sort(joined)
	slices.Sort(left)
	show := func(names []string) []string {
		most := r.hub.cfg.PresenceLimit // joined can be no longer in a small room
		if r.total > r.hub.cfg.PresenceLimit {
			most = r.hub.cfg.PresenceNames
		}
		return names[:min(len(names), most)]
	}
	f := protocol.PresenceBatch(r.name, show(joined), show(left), r.total)
	if len(r.remotes) > 0 {
		e := Envelope{Op: OpFrame, Room: r.name, To: presenceBatch, Text: []byte(strings.Join(joined, "\n")),
			After: []byte(strings.Join(left, "\n")), Frames: [][]byte{f.Payload()}}
		for node := range r.remotes {
			r.hub.cfg.Cluster.Deliver(node, &e)
		}
	}
	r.broadcastLocalLocked(f, "")
}

// maxKeptPresenceNames bounds the held-presence map a room keeps between
// ticks.
const maxKeptPresenceNames = 64
