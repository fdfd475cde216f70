package room

import (
	"slices"
	"sync"
	"time"

	"nbchat/protocol"
	"nbchat/store"
)

// User is a name's state that outlives its connections: which connections
// hold the name (a browser's tabs, a phone and a laptop; Config.Sessions
// bounds them), the user's direct messages (kept for recovery, sent to
// every connection) and the ids of recent messages (so a message resent
// after a reconnect, or by another tab, is stored and delivered once).
type User struct {
	name  string
	key   string // the user's direct messages on disk
	hub   *Hub
	shard *userShard

	// member holds the name, and so do x.more's connections; member is nil
	// only when there are none. Guarded by both shard.mu and mu, so holding
	// either is enough to read them.
	member Member
	// offlineAt is when member became nil (milliseconds); guarded by
	// shard.mu.
	offlineAt int64

	// mu guards the fields below and orders direct messages.
	mu       sync.Mutex
	attached bool   // member has its welcome: deliver direct messages to it
	remote   bool   // in a cluster: see pre
	dmSeq    uint64 // the last seq given out
	durable  uint64 // the last seq stored and delivered
	inbox    history
	pending  []pendingMsg // direct messages waiting for the store
	ids      *idRing

	// x is what few users need; nil when it is empty.
	x *userExtra
}

// userExtra is what few users need, apart from User, whose every instance
// would otherwise carry its slices: the connections besides User.member,
// and, in a cluster, for a user connected here whose owner is another node
// (remote), member's welcome from the owner and what arrived for member
// before its Attach.
type userExtra struct {
	welcome [][]byte
	early   []*protocol.Frame
	more    []session
}

// extra returns u.x, made if need be.
func (u *User) extra() *userExtra {
	if u.x == nil {
		u.x = new(userExtra)
	}
	return u.x
}

// trimExtra drops u.x once it holds nothing.
func (u *User) trimExtra() {
	if x := u.x; x != nil && x.welcome == nil && x.early == nil && x.more == nil {
		u.x = nil
	}
}

// more returns the connections holding the name besides member.
func (u *User) more() []session {
	if u.x == nil {
		return nil
	}
	return u.x.more
}

// session is a connection holding the name besides User.member; for a
// remote user, with its welcome and what arrived before its Attach.
type session struct {
	m        Member
	attached bool
	welcome  [][]byte
	early    []*protocol.Frame
}

// sessions returns how many connections hold the name (a node of the
// cluster holds one session for all its connections of the name).
func (u *User) sessions() int {
	if u.member == nil {
		return 0
	}
	n := weight(u.member)
	for _, s := range u.more() {
		n += weight(s.m)
	}
	return n
}

func weight(m Member) int {
	if rm, ok := m.(*remoteMember); ok {
		return int(rm.conns)
	}
	return 1
}

// remoteSession returns the session of node's connections, if any.
func (u *User) remoteSession(node string) *remoteMember {
	if rm, ok := u.member.(*remoteMember); ok && rm.node == node {
		return rm
	}
	for _, s := range u.more() {
		if rm, ok := s.m.(*remoteMember); ok && rm.node == node {
			return rm
		}
	}
	return nil
}

// addSession records m as holding the name, not attached yet. Both
// shard.mu and mu must be held.
func (u *User) addSession(m Member) {
	if u.member == nil {
		u.member, u.attached = m, false
		return
	}
	x := u.extra()
	x.more = append(x.more, session{m: m})
}

// addRemoteSession records node's connection of the name, attached: the
// owner's deliveries reach it through its node.
func (u *User) addRemoteSession(h *Hub, node string, conns int32) {
	if rm := u.remoteSession(node); rm != nil {
		rm.conns += conns
		return
	}
	rm := &remoteMember{h: h, node: node, name: u.name, conns: conns}
	u.addSession(rm)
	u.attach(rm)
}

// dropSession forgets m; it reports false if m did not hold the name.
// What arrived for m before its Attach is released. Both shard.mu and mu
// must be held.
func (u *User) dropSession(m Member) bool {
	more := u.more()
	i := slices.IndexFunc(more, func(s session) bool { return s.m == m })
	switch {
	case u.member == m && len(more) == 0:
		u.member, u.attached = nil, false
		return true
	case u.member == m:
		// The last of the others takes member's place.
		for _, f := range u.takeEarly() {
			f.Release()
		}
		i = len(more) - 1
		u.member, u.attached = more[i].m, more[i].attached
		u.x.welcome, u.x.early = more[i].welcome, more[i].early
		more[i].early = nil
	case i < 0:
		return false
	}
	for _, f := range more[i].early {
		f.Release()
	}
	n := len(more) - 1
	more[i] = more[n]
	more[n] = session{}
	if u.x.more = more[:n]; n == 0 {
		u.x.more = nil
		u.trimExtra()
	}
	return true
}

// toLocalLocked delivers f, a frame from another node, to the user's
// connection whose token is conn, or, with conn 0, to each of the user's
// connections here: at once to those attached, after its welcome to one
// still waiting for its Attach. It takes over the caller's reference.
// u.mu must be held.
func (u *User) toLocalLocked(f *protocol.Frame, conn uint64) {
	more := u.more()
	for i := range more {
		if conn != 0 && tokenOf(more[i].m) != conn {
			continue
		}
		f.Retain(1)
		if more[i].attached {
			more[i].m.Send(f)
		} else {
			more[i].early = append(more[i].early, f)
		}
	}
	switch {
	case u.member == nil, conn != 0 && tokenOf(u.member) != conn:
		f.Release()
	case u.attached:
		u.member.Send(f)
	default:
		x := u.extra()
		x.early = append(x.early, f)
	}
}

// takePre returns m's welcome from the owner and what arrived for it
// before its Attach, and forgets them.
func (u *User) takePre(m Member) (welcome [][]byte, early []*protocol.Frame) {
	if u.member == m {
		if u.x != nil {
			welcome = u.x.welcome
		}
		return welcome, u.takeEarly()
	}
	more := u.more()
	for i := range more {
		if more[i].m == m {
			welcome, early = more[i].welcome, more[i].early
			more[i].welcome, more[i].early = nil, nil
			return welcome, early
		}
	}
	return nil, nil
}

// attach marks m as having its welcome; it reports false if m does not
// hold the name. u.mu must be held.
func (u *User) attach(m Member) bool {
	if u.member == m {
		u.attached = true
		return true
	}
	more := u.more()
	for i := range more {
		if more[i].m == m {
			more[i].attached = true
			return true
		}
	}
	return false
}

// probeSessions asks every connection holding the name to check its peer:
// a new connection for the name is often the same client back on a new
// network, its old socket dead but not yet closed.
func (u *User) probeSessions() {
	probe(u.member)
	for _, s := range u.more() {
		probe(s.m)
	}
}

// takeEarly returns what arrived before Attach and forgets it all.
func (u *User) takeEarly() []*protocol.Frame {
	if u.x == nil {
		return nil
	}
	early := u.x.early
	u.x.welcome, u.x.early = nil, nil
	u.trimExtra()
	return early
}

// Key implements store.Stream.
func (u *User) Key() string { return u.key }

// Name returns the user's name.
func (u *User) Name() string { return u.name }

// Attach sends m, a connection holding the name, its welcome and then, if
// dmSince is not negative, every kept direct message after dmSince; from
// then on new direct messages are delivered to it. Doing both under the
// user's lock means none is missed or sent twice. A dmSince ahead of the
// user's latest direct message is an error, and nothing is replayed.
func (u *User) Attach(m Member, dmSince int64) *protocol.Error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.attach(m) {
		return nil
	}
	if u.remote {
		welcome, early := u.takePre(m)
		for _, p := range welcome {
			m.Send(protocol.NewFrame(protocol.OpText, p))
		}
		for _, f := range early {
			m.Send(f)
		}
		return nil
	}
	m.Send(protocol.Welcome(u.name, u.durable))
	for _, f := range u.takeEarly() {
		m.Send(f)
	}
	if dmSince > int64(u.durable) {
		return errSinceAhead
	}
	if dmSince >= 0 {
		u.inbox.since(m, uint64(dmSince))
	}
	return nil
}

// deliver numbers a direct message in u's sequence; once stored (at once
// without a store) it is kept and sent to u's connection if there is one.
func (u *User) deliver(from, to string, text []byte, ts int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.dmSeq++
	f := protocol.DM(from, to, text, ts, u.dmSeq)
	if st := u.hub.cfg.Store; st != nil {
		f.Retain(1) // the store's reference
		u.pending = append(u.pending, pendingMsg{f: f, seq: u.dmSeq, ts: ts})
		st.Append(store.Record{Stream: u, Seq: u.dmSeq, TS: ts, Frame: f})
		return
	}
	u.showLocked(f, u.dmSeq, ts)
}

// Durable implements store.Stream: direct messages up to seq are on disk.
func (u *User) Durable(seq uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.pending = popDurable(u.pending, seq, func(p *pendingMsg) { u.showLocked(p.f, p.seq, p.ts) })
}

// showLocked keeps a stored direct message and sends it to u's attached
// connections; it takes over the caller's reference to f. u.mu must be
// held.
func (u *User) showLocked(f *protocol.Frame, seq uint64, ts int64) {
	u.durable = seq
	f.Retain(1)
	u.inbox.add(f, seq, ts)
	u.sendAttachedLocked(f)
}

// sendAttachedLocked queues f to each of u's attached connections and
// takes over the caller's reference. u.mu must be held.
func (u *User) sendAttachedLocked(f *protocol.Frame) {
	for _, s := range u.more() {
		if s.attached {
			f.Retain(1)
			s.m.Send(f)
		}
	}
	if u.attached && u.member != nil {
		u.member.Send(f)
	} else {
		f.Release()
	}
}

// Recall reports the seq under which the message with id was stored in
// room, if u sent it recently.
func (u *User) Recall(room string, id []byte) (uint64, bool) {
	if id == nil {
		return 0, false
	}
	h := idHash(room, id)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ids == nil {
		return 0, false
	}
	return u.ids.find(h)
}

// Remember records that the message with id was stored in room as seq.
func (u *User) Remember(room string, id []byte, seq uint64) {
	if id == nil {
		return
	}
	h := idHash(room, id)
	u.mu.Lock()
	if u.ids == nil {
		u.ids = new(idRing)
	}
	u.ids.add(h, seq)
	u.mu.Unlock()
}

// RecallDM reports whether u lately sent a direct message with id to the
// user called to.
func (u *User) RecallDM(to, id []byte) bool {
	if id == nil {
		return false
	}
	h := dmIDHash(to, id)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ids == nil {
		return false
	}
	_, ok := u.ids.find(h)
	return ok
}

// RememberDM records that u sent a direct message with id to the user
// called to. Its ids share the ring of room messages' ids.
func (u *User) RememberDM(to, id []byte) {
	if id == nil {
		return
	}
	h := dmIDHash(to, id)
	u.mu.Lock()
	if u.ids == nil {
		u.ids = new(idRing)
	}
	u.ids.add(h, 1) // no seq to keep: 1 marks it present
	u.mu.Unlock()
}

// idRing remembers the last few message ids a user sent, as hashes.
type idRing struct {
	hash [64]uint64
	seq  [64]uint64
	next int
}

func (r *idRing) add(h, seq uint64) {
	r.hash[r.next], r.seq[r.next] = h, seq
	r.next = (r.next + 1) % len(r.hash)
}

func (r *idRing) find(h uint64) (uint64, bool) {
	for i, v := range r.hash {
		if v == h && r.seq[i] != 0 {
			return r.seq[i], true
		}
	}
	return 0, false
}

// idHash is FNV-1a over the room name and the id: 64 bits make a false
// match among a user's last 64 ids vanishingly unlikely.
func idHash(room string, id []byte) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(room); i++ {
		h = (h ^ uint64(room[i])) * 1099511628211
	}
	h = (h ^ 0xFF) * 1099511628211
	for _, c := range id {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// dmIDHash is idHash for a direct message to the user called to: '@' and
// the name stand for the room, which no room name can start with.
func dmIDHash(to, id []byte) uint64 {
	h := uint64(14695981039346656037)
	h = (h ^ '@') * 1099511628211
	for _, c := range to {
		h = (h ^ uint64(c)) * 1099511628211
	}
	h = (h ^ 0xFF) * 1099511628211
	for _, c := range id {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

var (
	errNoSuchUser = &protocol.Error{Code: protocol.CodeNoSuchUser, Message: "no user by that name"}
	errSinceAhead = &protocol.Error{Code: protocol.CodeBadRequest, Message: "since is after the latest seq"}
)

// Register claims name for m. It reports false if as many connections as
// the hub allows (Config.Sessions; one in a cluster) hold the name
// already; either way those are asked to check their peers. The user
// receives nothing on m until Attach.
func (h *Hub) Register(name string, m Member) (*User, bool) {
	s := &h.users[fnv32a(name)&h.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[name]
	if u == nil {
		u = &User{name: name, key: "u/" + name, hub: h, shard: s}
		u.inbox.max = max(h.cfg.DMHistory, 0)
		h.load(u.key, &u.dmSeq, &u.inbox)
		u.durable = u.dmSeq
		s.users[name] = u
	} else if n := u.sessions(); n > 0 {
		u.probeSessions()
		if n >= h.maxSessions() {
			return nil, false
		}
	}
	u.mu.Lock()
	u.addSession(m)
	u.mu.Unlock()
	u.offlineAt = 0
	return u, true
}

// maxSessions is how many connections may hold one name.
func (h *Hub) maxSessions() int { return h.cfg.Sessions }

// Unregister releases m's hold on u's name. Once no connection holds it,
// the user's direct messages and recent ids stay for a while, for when it
// comes back.
func (h *Hub) Unregister(u *User, m Member) {
	s := u.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.dropSession(m) {
		return
	}
	c := h.cfg.Cluster
	if c != nil {
		// The owner counts the user's connections on each node.
		if owner := c.UserOwner(u.name); owner != "" {
			_ = c.Send(owner, &Envelope{Op: OpRelease, Name: u.name})
		}
	}
	if u.member != nil {
		return
	}
	for _, f := range u.takeEarly() {
		f.Release()
	}
	if c != nil {
		if s.locals[u.name] == u {
			delete(s.locals, u.name)
		}
		if u.remote {
			return
		}
	}
	// The user stays until the sweep after OfflineTTL, so a DM sent just
	// after a disconnect is kept for the reconnect, not refused.
	u.offlineAt = time.Now().UnixMilli()
}

// Connect claims name for m, which will be attached with dmSince: on this
// node, or, in a cluster, at the name's owner node (which answers with the
// welcome). It fails with ErrNameTaken or ErrUnavailable.
func (h *Hub) Connect(name string, m Member, dmSince int64) (*User, error) {
	c := h.cfg.Cluster
	owner := ""
	if c != nil {
		owner = c.UserOwner(name)
	}
	if owner == "" {
		u, ok := h.Register(name, m)
		if !ok {
			return nil, ErrNameTaken
		}
		if c != nil {
			u.shard.mu.Lock()
			u.shard.locals[name] = u
			u.shard.mu.Unlock()
		}
		return u, nil
	}
	frames, err := c.Register(owner, name, dmSince)
	if err != nil {
		return nil, err
	}
	s := &h.users[fnv32a(name)&h.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.locals[name]; old != nil && old.member != nil {
		// Another connection of the user is here: m is one more.
		old.mu.Lock()
		old.addSession(m)
		if more := old.more(); old.member != m && len(more) > 0 {
			more[len(more)-1].welcome = frames
		}
		old.mu.Unlock()
		return old, nil
	}
	u := &User{name: name, key: "u/" + name, hub: h, shard: s, remote: true, member: m, x: &userExtra{welcome: frames}}
	s.locals[name] = u
	return u, nil
}

// RegisterRemote claims name, owned here, for a connection on node, and
// returns the payloads of its welcome and of its direct messages after
// dmSince.
func (h *Hub) RegisterRemote(node, name string, dmSince int64) ([][]byte, error) {
	s := &h.users[fnv32a(name)&h.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	u := h.ownedUserLocked(s, name)
	u.mu.Lock()
	defer u.mu.Unlock()
	if n := u.sessions(); n > 0 {
		u.probeSessions()
		if n >= h.maxSessions() {
			return nil, ErrNameTaken
		}
	}
	u.addRemoteSession(h, node, 1)
	u.offlineAt = 0
	col := collector{name: name}
	col.Send(protocol.Welcome(name, u.durable))
	if dmSince > int64(u.durable) {
		col.Send(protocol.Err(nil, errSinceAhead))
	} else if dmSince >= 0 {
		u.inbox.since(&col, uint64(dmSince))
	}
	p := col.payloads()
	for i := range p {
		p[i] = clone(p[i])
	}
	col.release()
	return p, nil
}

// ownedUserLocked returns the user called name, creating it. s.mu must be
// held.
func (h *Hub) ownedUserLocked(s *userShard, name string) *User {
	u := s.users[name]
	if u == nil {
		u = &User{name: name, key: "u/" + name, hub: h, shard: s}
		u.inbox.max = max(h.cfg.DMHistory, 0)
		h.load(u.key, &u.dmSeq, &u.inbox)
		u.durable = u.dmSeq
		u.offlineAt = time.Now().UnixMilli()
		s.users[name] = u
	}
	return u
}

// adopt records that name, owned here since the cluster changed, has conns
// connections on node.
func (h *Hub) adopt(node, name string, conns int32) {
	s := &h.users[fnv32a(name)&h.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	u := h.ownedUserLocked(s, name)
	u.mu.Lock()
	if u.remoteSession(node) == nil {
		u.addRemoteSession(h, node, max(conns, 1))
		u.offlineAt = 0
	}
	u.mu.Unlock()
}

// releaseRemote counts one connection of name's on node gone.
func (h *Hub) releaseRemote(node, name string) {
	s := &h.users[fnv32a(name)&h.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[name]
	if u == nil {
		return
	}
	u.mu.Lock()
	if rm := u.remoteSession(node); rm != nil {
		if rm.conns--; rm.conns <= 0 {
			u.dropSession(rm)
		}
		if u.member == nil {
			u.offlineAt = time.Now().UnixMilli()
		}
	}
	u.mu.Unlock()
}

// local returns the user connected here under name, in a cluster.
func (h *Hub) local(name string) *User {
	s := &h.users[fnv32a(name)&h.mask]
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.locals[name]
}

func (u *User) localMember() Member {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.member
}

func (h *Hub) ownedUser(name string) *User { return h.user([]byte(name)) }

// Lookup returns the connection holding name.
func (h *Hub) Lookup(name []byte) (Member, bool) {
	s := &h.users[fnv32a(name)&h.mask]
	s.mu.RLock()
	defer s.mu.RUnlock()
	if u := s.users[string(name)]; u != nil && u.member != nil {
		return u.member, true
	}
	return nil, false
}

func (h *Hub) user(name []byte) *User {
	s := &h.users[fnv32a(name)&h.mask]
	s.mu.RLock()
	u := s.users[string(name)]
	s.mu.RUnlock()
	return u
}

// DM sends text from one user to the user named to, connected or recently
// connected, and echoes it to the sender; a DM to oneself arrives once.
// Each party gets it numbered in its own sequence and kept for recovery.
func (h *Hub) DM(from *User, to, text, ref []byte) *protocol.Error {
	if c := h.cfg.Cluster; c != nil {
		if owner := c.UserOwner(string(to)); owner != "" {
			if c.Send(owner, &Envelope{Op: OpDM, Name: from.name, To: string(to), Text: text, Ref: ref}) != nil {
				return errUnavailable
			}
			return nil
		}
	}
	target := h.user(to)
	if target == nil {
		return errNoSuchUser
	}
	ts := time.Now().UnixMilli()
	h.messages.Add(1)
	target.deliver(from.name, target.name, text, ts)
	h.deliveries.Add(1)
	if target.name != from.name {
		h.echoDM(from.name, target.name, text, ts)
	}
	return nil
}

// remoteDM delivers a direct message sent from another node to a user
// owned here.
func (h *Hub) remoteDM(e *Envelope) {
	target := h.user([]byte(e.To))
	if target == nil {
		// The sender's view of the cluster may be behind ours (a node
		// handing its users over): pass it on to the owner we know.
		if owner := h.cfg.Cluster.UserOwner(e.To); owner != "" && e.Hops < 2 {
			fwd := *e
			fwd.Hops++
			if h.cfg.Cluster.Send(owner, &fwd) == nil {
				return
			}
		}
		h.errorTo(e.Node, e.Name, e.Conn, e.Ref, errNoSuchUser)
		return
	}
	ts := time.Now().UnixMilli()
	h.messages.Add(1)
	target.deliver(e.Name, target.name, e.Text, ts)
	h.deliveries.Add(1)
	if target.name != e.Name {
		h.echoDM(e.Name, target.name, e.Text, ts)
	}
}

// echoDM keeps the sender's copy of a direct message in the sender's own
// sequence, at the sender's owner node.
func (h *Hub) echoDM(from, to string, text []byte, ts int64) {
	if c := h.cfg.Cluster; c != nil {
		if owner := c.UserOwner(from); owner != "" {
			_ = c.Send(owner, &Envelope{Op: OpDMEcho, Name: from, To: to, Text: text, TS: ts})
			return
		}
	}
	if u := h.user([]byte(from)); u != nil {
		u.deliver(from, to, text, ts)
		h.deliveries.Add(1)
	}
}

// TypingTo tells the user called to, on each of its connections, that from
// is typing to it. Nothing is kept; a user not known here is not told.
func (h *Hub) TypingTo(from *User, to []byte) {
	if c := h.cfg.Cluster; c != nil {
		if owner := c.UserOwner(string(to)); owner != "" {
			_ = c.Send(owner, &Envelope{Op: OpTyping, Name: from.name, To: string(to)})
			return
		}
	}
	if target := h.user(to); target != nil && target.name != from.name {
		target.typing(from.name)
	}
}

// typing sends u's attached connections a typing notice from the user
// called from.
func (u *User) typing(from string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sendAttachedLocked(protocol.Typing("", from, u.name))
}

// sweepUsers forgets users that have been away longer than OfflineTTL and
// drops direct messages older than HistoryAge.
func (h *Hub) sweepUsers(now int64) {
	cutoff := now - h.cfg.HistoryAge.Milliseconds()
	gone := now - h.cfg.OfflineTTL.Milliseconds()
	for i := range h.users {
		s := &h.users[i]
		s.mu.Lock()
		for name, u := range s.users {
			u.mu.Lock()
			u.inbox.expire(cutoff)
			u.inbox.compact()
			if u.member == nil && u.offlineAt < gone && len(u.pending) == 0 {
				u.inbox.clear()
				delete(s.users, name)
			}
			u.mu.Unlock()
		}
		s.mu.Unlock()
	}
}
