package room

import (
	"errors"
	"slices"
	"strings"
	"time"

	"nbchat/protocol"
)

// Cluster connects a hub to the other nodes of a cluster; package cluster
// implements it over NATS. Without one (Config.Cluster nil) a hub is a
// whole chat server on its own.
//
// Every room and every user has an owner node, chosen by the cluster from
// the live nodes. A room's owner numbers its messages, keeps its history
// and its member list; other nodes with members in the room mirror it:
// they forward their members' requests to the owner and fan the owner's
// frames out to their own members. A user's owner holds the name (so names
// are unique across nodes) and the user's direct messages.
type Cluster interface {
	// RoomOwner and UserOwner name the node that owns a room or a user;
	// "" means this node.
	RoomOwner(room string) string
	UserOwner(user string) string
	// Alive reports whether node is among the live nodes.
	Alive(node string) bool
	// Send queues e to node's owner inbox; Deliver queues e to node's
	// delivery stream. Both keep the order of calls per node and do not
	// wait for the network; they fail only when the cluster is unreachable.
	Send(node string, e *Envelope) error
	Deliver(node string, e *Envelope)
	// Claim asks every other live node for what it knows of room, so this
	// node can take the room over; the nodes it reaches hand the room to
	// it. It waits a bounded time for the answers. failover says the old
	// owner died.
	Claim(room string, failover bool) ClaimResult
	// Register claims name at its owner node for a connection here and
	// returns the welcome and the direct messages after dmSince.
	Register(owner, name string, dmSince int64) ([][]byte, error)
	// Directory returns the busiest rooms the other live nodes own, with
	// their counts, as they last announced them.
	Directory() []RoomCount
}

// Op is what an Envelope asks for.
type Op uint8

// Requests to an owner (Cluster.Send).
const (
	OpJoin    Op = iota + 1 // Name joins Room; since in Since; reply OpJoined
	OpLeave                 // Name leaves Room
	OpPublish               // Name sends Text with ID to Room
	OpHistory               // Name asks Room's history: Before, Limit, Ref
	OpMembers               // Name asks Room's members: After, Limit, Ref
	OpDM                    // Name sends Text to the user To
	OpDMEcho                // keep the sender's copy of a DM in Name's sequence
	OpEnsure                // the sender thinks this node owns Room now; Seq 1: the sender holds it
	OpResync                // resend Room's messages after Seq
	OpRelease               // Name's connection on the sender closed
	OpAdopt                 // Name has Limit connections on the sender (after a rehome)
	OpHandoff               // Name's direct messages, now owned here: Seq the latest, Frames from Since on
	OpTyping                // Name is typing in Room, or to the user To
)

// Deliveries to a node (Cluster.Deliver).
const (
	OpFrame    Op = iota + 32 // a Room frame for every local member but Name; Seq 0: presence (To: presenceBatch, see below)
	OpJoined                  // Name is now a member of Room at Seq: Frames are its joined reply and replay
	OpTo                      // Frames for the connection of user Name
	OpAck                     // Name's message ID is stored in Room as Seq
	OpResynced                // Room's messages from Seq on, one per frame
	OpProbe                   // another connection asks for Name: check that its connection here is alive
)

// presenceBatch, as the To of a presence OpFrame, says it is coalesced
// presence: Text holds the names now members and After the names no longer
// members, each list one name per line.
const presenceBatch = "batch"

// Envelope is one message between nodes. Which fields matter depends on
// Op; the cluster fills in Node, the sender.
type Envelope struct {
	Op     Op
	Hops   uint8
	Node   string
	Room   string
	Name   string
	To     string
	Ref    []byte
	ID     []byte
	Text   []byte
	After  []byte
	Seq    uint64
	TS     int64
	Since  int64
	Before int64
	Limit  int
	Frames [][]byte

	// Conn names the connection on the sender a request came from, and so
	// the one its reply is for (0: every connection of Name's there).
	Conn uint64
	// from is, in a mirrored room's inflight messages, the connection here
	// that sent it; it does not travel.
	from Member
}

// ClaimReply is what one node knows of a room another node claims.
type ClaimReply struct {
	Seq   uint64      // the latest message it has
	Names []string    // its members
	Hist  []HistEntry // the messages it keeps, oldest first, consecutive
}

// HistEntry is one kept message.
type HistEntry struct {
	Seq     uint64
	TS      int64
	Payload []byte
}

// ClaimResult is every answer to a claim, by node.
type ClaimResult map[string]ClaimReply

// Errors of clustered operations.
var (
	ErrNameTaken   = errors.New("room: name taken")
	ErrUnavailable = errors.New("room: cluster unavailable")

	errUnavailable = &protocol.Error{Code: protocol.CodeUnavailable, Message: "the room's node is unreachable; try again"}
)

// remoteMember is a member on another node as its owner room or user sees
// it: what is sent to it travels as an OpTo delivery.
type remoteMember struct {
	h    *Hub
	node string
	name string
	// conns counts the user's connections on node, when it is a session of
	// a user this node owns (it fits where the struct has room to spare).
	conns int32
}

// replyTo is one connection on another node, for the replies to its
// request: they travel with its token.
type replyTo struct {
	remoteMember
	conn uint64
}

func (m *replyTo) Send(f *protocol.Frame) {
	m.h.cfg.Cluster.Deliver(m.node, &Envelope{Op: OpTo, Name: m.name, Conn: m.conn, Frames: [][]byte{f.Payload()}})
	f.Release()
}

// Addressed is a Member that replies from another node can be addressed
// to: its token is unique among this node's live connections.
type Addressed interface {
	Token() uint64
}

// tokenOf returns m's token, or 0.
func tokenOf(m Member) uint64 {
	if a, ok := m.(Addressed); ok {
		return a.Token()
	}
	return 0
}

func (m *remoteMember) Name() string { return m.name }

// Probe implements Prober: the node the connection is on checks it.
func (m *remoteMember) Probe() {
	m.h.cfg.Cluster.Deliver(m.node, &Envelope{Op: OpProbe, Name: m.name})
}

func (m *remoteMember) Send(f *protocol.Frame) {
	m.h.cfg.Cluster.Deliver(m.node, &Envelope{Op: OpTo, Name: m.name, Frames: [][]byte{f.Payload()}})
	f.Release()
}

// Acked implements Acker for messages from other nodes.
func (m *remoteMember) Acked(room string, id []byte, seq uint64) {
	m.h.cfg.Cluster.Deliver(m.node, &Envelope{Op: OpAck, Room: room, Name: m.name, ID: id, Seq: seq})
}

func isRemote(m Member) bool {
	_, ok := m.(*remoteMember)
	return ok
}

// collector gathers the frames meant for a member on another node, so they
// travel in one delivery.
type collector struct {
	name   string
	frames []*protocol.Frame
}

func (c *collector) Name() string           { return c.name }
func (c *collector) Send(f *protocol.Frame) { c.frames = append(c.frames, f) }

// payloads returns the frames' payloads; release drops the frames.
func (c *collector) payloads() [][]byte {
	p := make([][]byte, len(c.frames))
	for i, f := range c.frames {
		p[i] = f.Payload()
	}
	return p
}

func (c *collector) release() {
	for _, f := range c.frames {
		f.Release()
	}
	c.frames = nil
}

// HandleOwner serves a request from another node to this node as owner.
func (h *Hub) HandleOwner(e *Envelope) {
	switch e.Op {
	case OpJoin, OpLeave, OpPublish, OpHistory, OpMembers, OpEnsure, OpResync:
		h.ownerRoomRequest(e)
	case OpTyping:
		if e.Room != "" {
			h.ownerRoomRequest(e)
		} else if u := h.ownedUser(e.To); u != nil && e.To != e.Name {
			u.typing(e.Name)
		}
	case OpDM:
		h.remoteDM(e)
	case OpDMEcho:
		if u := h.ownedUser(e.Name); u != nil {
			u.deliver(e.Name, e.To, e.Text, e.TS)
			h.deliveries.Add(1)
		} else if owner := h.cfg.Cluster.UserOwner(e.Name); owner != "" && e.Hops < 2 {
			fwd := *e
			fwd.Hops++
			_ = h.cfg.Cluster.Send(owner, &fwd)
		}
	case OpRelease:
		h.releaseRemote(e.Node, e.Name)
	case OpAdopt:
		h.adopt(e.Node, e.Name, int32(e.Limit))
	case OpHandoff:
		h.takeDMs(e)
	}
}

// ownerRoomRequest runs a room request on the room this node owns, taking
// it over first if needed. A request that reached a node that does not own
// the room by its own view goes on to the owner it knows.
func (h *Hub) ownerRoomRequest(e *Envelope) {
	c := h.cfg.Cluster
	r := h.Find([]byte(e.Room))
	cur := "" // the owner our copy of the room knows
	if r != nil {
		cur = r.ownerName()
	}
	// A holder handing the room over (Ensure with Seq 1) is obeyed even if
	// our view of the cluster still names another owner: the holder is the
	// one that knows, and the views will agree once they settle.
	handover := e.Op == OpEnsure && e.Seq == 1
	if (r == nil || cur != "") && c.RoomOwner(e.Room) != "" && !handover {
		owner := c.RoomOwner(e.Room)
		if r != nil {
			owner = cur
		}
		if e.Op == OpEnsure || e.Hops >= 2 || owner == "" {
			h.refuseRemote(e)
			return
		}
		fwd := *e
		fwd.Hops++
		if c.Send(owner, &fwd) != nil {
			h.refuseRemote(e)
		}
		return
	}
	if r == nil {
		if e.Op == OpLeave || e.Op == OpResync || e.Op == OpTyping {
			return
		}
		r, _ = roomFor(h, e.Room)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone.Load() {
		h.refuseRemote(e)
		return
	}
	if r.owner != "" || (e.Op == OpEnsure && e.Seq == 1) {
		// Our view changed after the lookup, or another node still holds
		// the room: take it over (again), from everyone.
		r.owner = ""
		r.claimed = false
	}
	r.claimLocked()
	switch e.Op {
	case OpJoin:
		r.joinRemoteLocked(e)
	case OpLeave:
		r.leaveRemoteLocked(e.Node, e.Name)
	case OpPublish:
		r.publishRemoteLocked(e)
	case OpHistory:
		if r.remoteMember(e.Node, e.Name) == nil {
			h.errorTo(e.Node, e.Name, e.Conn, e.Ref, errNotMember)
			return
		}
		msgs, more := r.hist.page(e.Before, e.Limit)
		m := &replyTo{remoteMember{h: h, node: e.Node, name: e.Name}, e.Conn}
		m.Send(protocol.History(e.Ref, r.name, msgs, more))
	case OpMembers:
		m := &replyTo{remoteMember{h: h, node: e.Node, name: e.Name}, e.Conn}
		r.membersLocked(m, e.After, e.Limit, e.Ref)
	case OpTyping:
		if r.remoteMember(e.Node, e.Name) != nil {
			r.typingLocked(e.Name)
		}
	case OpResync:
		var frames [][]byte
		first := uint64(0)
		if r.hist.n > 0 && e.Seq+1 < r.hist.next() {
			first = max(e.Seq+1, r.hist.first)
			for s := first; s < r.hist.next(); s++ {
				frames = append(frames, r.hist.at(s).f.Payload())
			}
		}
		c.Deliver(e.Node, &Envelope{Op: OpResynced, Room: r.name, Seq: first, Frames: frames})
	}
}

// refuseRemote answers a request that cannot be served here.
func (h *Hub) refuseRemote(e *Envelope) {
	switch e.Op {
	case OpJoin, OpPublish, OpHistory, OpMembers:
		ref := e.Ref
		if e.Op == OpPublish {
			ref = e.ID
		}
		h.errorTo(e.Node, e.Name, e.Conn, ref, errUnavailable)
	}
}

func (h *Hub) errorTo(node, name string, conn uint64, ref []byte, err *protocol.Error) {
	f := protocol.Err(ref, err)
	h.cfg.Cluster.Deliver(node, &Envelope{Op: OpTo, Name: name, Conn: conn, Frames: [][]byte{f.Payload()}})
	f.Release()
}

// ownerName returns the node a room's requests go to ("" for this node).
func (r *Room) ownerName() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owner
}

// claimLocked takes over the room, once, when this node became its owner:
// the seq continues from the highest any node has seen, history comes from
// the node that has the most, and the member list from every node's
// members. r.mu must be held; it is held across the claim, so requests for
// the room wait for it.
func (r *Room) claimLocked() { r.claimAfterLocked(false) }

// claimAfterLocked is claimLocked; failover says the old owner died, so
// the other nodes send it the messages the dead owner never acknowledged.
func (r *Room) claimAfterLocked(failover bool) {
	if r.claimed || r.owner != "" || r.hub.cfg.Cluster == nil {
		return
	}
	r.claimed = true
	res := r.hub.cfg.Cluster.Claim(r.name, failover)
	// The member list starts over from this node's members and the answers;
	// members this node knew of that no live node has are gone.
	known := r.names.Clone()
	r.countLocalLocked()
	r.remotes = nil
	best := ""
	for node, rep := range res {
		if rep.Seq > r.seq && (best == "" || rep.Seq > res[best].Seq) {
			best = node
		}
		for _, name := range rep.Names {
			r.addRemoteLocked(node, name)
		}
	}
	if best != "" {
		rep := res[best]
		if len(rep.Hist) > 0 && rep.Hist[len(rep.Hist)-1].Seq == rep.Seq && (r.hist.n == 0 || rep.Hist[0].Seq <= r.hist.next()) {
			r.hist.clear()
			for _, e := range rep.Hist {
				r.hist.add(protocol.NewFrame(protocol.OpText, e.Payload), e.Seq, e.TS)
			}
		}
		r.seq = rep.Seq
		r.durable = r.seq
		r.claimedUpTo = r.seq
	}
	r.synced = true
	r.joining = nil
	r.held = nil
	r.resyncing = false
	r.count.Store(int32(r.total))
	known.Ascend(func(name string) bool {
		if !r.names.Has(name) {
			r.presenceLocked(name, nil, protocol.EventLeave)
		}
		return true
	})
}

// Relinquish hands the room called name to claimant: this node answers
// with what it knows and from now on forwards the room's requests to
// claimant and mirrors its messages.
func (h *Hub) Relinquish(name, claimant string, failover bool) ClaimReply {
	r := h.Find([]byte(name))
	if r == nil {
		return h.storedClaimReply(name)
	}
	// Messages numbered but not yet stored must be shown first, or the
	// new owner would number them again.
	deadline := time.Now().Add(time.Second)
	r.mu.Lock()
	for len(r.pending) > 0 && time.Now().Before(deadline) {
		r.mu.Unlock()
		time.Sleep(time.Millisecond)
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	rep := ClaimReply{Seq: r.durable}
	if r.owner != "" {
		rep.Seq = r.seq
	}
	for _, m := range r.members {
		rep.Names = append(rep.Names, m.Name())
	}
	for s := r.hist.first; r.hist.n > 0 && s < r.hist.next(); s++ {
		e := r.hist.at(s)
		// A copy: the reply is encoded after the lock is let go, when the
		// frame may be gone.
		rep.Hist = append(rep.Hist, HistEntry{Seq: s, TS: e.ts, Payload: clone(e.f.Payload())})
	}
	if r.owner == "" {
		// From owner to mirror: members elsewhere are the new owner's now.
		r.countLocalLocked()
		r.remotes = nil
		r.count.Store(int32(r.total))
		r.seq = r.durable
		r.synced = true
		r.ids = nil
	}
	oldOwner := r.owner
	r.owner = claimant
	r.claimed = false
	if oldOwner != "" && (failover || (oldOwner != claimant && !h.cfg.Cluster.Alive(oldOwner))) {
		// The dead owner never showed what it did not acknowledge (it
		// sends a message before its ack): the new owner numbers it. Also
		// when this node already sent it to the claimant, having noticed
		// the death first: the claimant, not knowing yet, passed it on to
		// the dead owner. The claimant drops what it has by id.
		for i := range r.inflight {
			_ = h.cfg.Cluster.Send(claimant, &r.inflight[i])
		}
	}
	if r.resyncing {
		// The old owner will not answer: ask the new one.
		r.resyncing = false
		r.resyncLocked()
	}
	return rep
}

// storedClaimReply answers a claim for a room not in memory: one this
// node owned and let go of when it emptied (RoomTTL) has its seq and
// history in the store.
func (h *Hub) storedClaimReply(name string) ClaimReply {
	if h.cfg.Store == nil {
		return ClaimReply{}
	}
	seq, entries, err := h.cfg.Store.Load("r/"+name, max(h.cfg.HistorySize, 0))
	if err != nil {
		h.cfg.Logger.Error("loading history for a claim", "room", name, "err", err)
	}
	rep := ClaimReply{Seq: seq}
	for _, e := range entries {
		rep.Hist = append(rep.Hist, HistEntry{Seq: e.Seq, TS: e.TS, Payload: e.Payload})
	}
	return rep
}

// RestoreOwned brings back into memory the stored rooms this node owns
// that left it when they emptied, so that a node leaving the cluster hands
// them over with the rest (see Rehome).
func (h *Hub) RestoreOwned() {
	c, st := h.cfg.Cluster, h.cfg.Store
	if c == nil || st == nil {
		return
	}
	h.leaving.Store(true) // and none leaves memory again before it is handed over
	keys, err := st.Streams("r/")
	if err != nil {
		h.cfg.Logger.Error("listing stored rooms", "err", err)
	}
	for _, key := range keys {
		name := strings.TrimPrefix(key, "r/")
		if c.RoomOwner(name) != "" {
			continue
		}
		if r, created := roomFor(h, name); created {
			// Its last owner was this node, and everything it numbered is
			// in the store it came from: nothing to claim.
			r.mu.Lock()
			r.claimed = true
			r.mu.Unlock()
		}
	}
}

// addRemoteLocked records name as a member on node. It reports whether the
// user is new to the room: not on node already, nor here or on another
// node.
func (r *Room) addRemoteLocked(node, name string) bool {
	if r.remotes == nil {
		r.remotes = make(map[string]map[string]*remoteMember)
	}
	set := r.remotes[node]
	if set == nil {
		set = make(map[string]*remoteMember)
		r.remotes[node] = set
	}
	if _, ok := set[name]; ok {
		return false
	}
	set[name] = &remoteMember{h: r.hub, node: node, name: name}
	if _, had := r.names.ReplaceOrInsert(name); had {
		r.addExtraLocked(name)
		return false
	}
	r.total++
	r.count.Store(int32(r.total))
	return true
}

func (r *Room) remoteMember(node, name string) *remoteMember {
	return r.remotes[node][name]
}

func (r *Room) joinRemoteLocked(e *Envelope) {
	h := r.hub
	if e.Since > int64(r.durable) {
		h.errorTo(e.Node, e.Name, e.Conn, e.Ref, errSinceAhead)
		return
	}
	if r.addRemoteLocked(e.Node, e.Name) {
		r.presenceLocked(e.Name, nil, protocol.EventJoin)
	}
	col := collector{name: e.Name}
	rec := protocol.RecoveryNone
	if e.Since >= 0 {
		rec = protocol.RecoveryPartial
		if r.hist.covers(uint64(e.Since), r.durable) {
			rec = protocol.RecoveryFull
		}
	}
	col.Send(protocol.Joined(e.Ref, r.name, r.total, r.firstNames(h.cfg.JoinedNames), r.durable, rec))
	switch {
	case e.Since >= 0:
		r.hist.since(&col, uint64(e.Since))
	case h.cfg.JoinHistory > 0:
		r.hist.latest(&col, h.cfg.JoinHistory)
	}
	reply := Envelope{Op: OpJoined, Room: r.name, Name: e.Name, Conn: e.Conn, Seq: r.durable, Frames: col.payloads()}
	if r.total <= h.cfg.PresenceLimit {
		// The whole member list, which the mirror keeps up to date from
		// presence, so that a new owner can tell who vanished with a dead one.
		var b []byte
		r.names.Ascend(func(name string) bool {
			b = append(append(b, name...), '\n')
			return true
		})
		reply.Text = b
	}
	h.cfg.Cluster.Deliver(e.Node, &reply)
	col.release()
}

// leaveRemoteLocked drops name, a member on node.
func (r *Room) leaveRemoteLocked(node, name string) {
	set := r.remotes[node]
	if _, ok := set[name]; !ok {
		return
	}
	delete(set, name)
	if len(set) == 0 {
		delete(r.remotes, node)
	}
	if r.dropExtraLocked(name) {
		return // the user is still here, or on another node
	}
	r.names.Delete(name)
	r.total--
	r.count.Store(int32(r.total))
	if r.total > 0 {
		r.presenceLocked(name, nil, protocol.EventLeave)
	} else if r.hist.n == 0 && len(r.pending) == 0 {
		r.gone.Store(true)
		go r.hub.remove(r)
	}
}

func (r *Room) publishRemoteLocked(e *Envelope) {
	m := r.remoteMember(e.Node, e.Name)
	if m == nil {
		r.hub.errorTo(e.Node, e.Name, e.Conn, e.ID, errNotMember)
		return
	}
	if seq, dup := r.recall(e.Name, e.ID); dup {
		if seq <= r.durable {
			m.Acked(r.name, e.ID, seq)
		}
		return
	}
	r.publishLocked(m, e.Text, e.ID, time.Now().UnixMilli())
	r.hub.messages.Add(1)
}

// recall and remember dedupe resent messages at the owner, whichever node
// the sender came through.
func (r *Room) recall(name string, id []byte) (uint64, bool) {
	if id == nil || r.ids == nil {
		return 0, false
	}
	ring := r.ids[name]
	if ring == nil {
		return 0, false
	}
	return ring.find(idHash(r.name, id))
}

func (r *Room) remember(name string, id []byte, seq uint64) {
	if id == nil || r.hub.cfg.Cluster == nil {
		return
	}
	if r.ids == nil {
		r.ids = make(map[string]*idRing)
	}
	ring := r.ids[name]
	if ring == nil {
		if len(r.ids) >= maxRemembered {
			clear(r.ids)
		}
		ring = new(idRing)
		r.ids[name] = ring
	}
	ring.add(idHash(r.name, id), seq)
}

// maxHeld caps the messages a mirror holds back while it waits for the
// owner to fill a gap.
const maxHeld = 10000

// maxRemembered caps the senders a clustered room keeps message ids for.
const maxRemembered = 4096

// HandleNode applies a delivery from an owner node.
func (h *Hub) HandleNode(e *Envelope) {
	switch e.Op {
	case OpFrame, OpJoined, OpResynced:
		if r := h.Find([]byte(e.Room)); r != nil {
			r.mirror(e)
		} else if e.Op == OpJoined {
			// The member left before the owner answered.
			_ = h.cfg.Cluster.Send(e.Node, &Envelope{Op: OpLeave, Room: e.Room, Name: e.Name})
		}
	case OpTo:
		if u := h.local(e.Name); u != nil {
			u.mu.Lock()
			for _, p := range e.Frames {
				u.toLocalLocked(protocol.NewFrame(protocol.OpText, p), e.Conn)
			}
			u.mu.Unlock()
		}
	case OpProbe:
		if u := h.local(e.Name); u != nil {
			u.mu.Lock()
			u.probeSessions()
			u.mu.Unlock()
		}
	case OpAck:
		var from Member
		if r := h.Find([]byte(e.Room)); r != nil {
			from = r.acked(e.Name, e.ID)
		}
		if from == nil {
			if u := h.local(e.Name); u != nil {
				from = u.localMember()
			}
		}
		if a, ok := from.(Acker); ok {
			a.Acked(e.Room, e.ID, e.Seq)
		}
	}
}

// mirror applies the owner's stream to this node's copy of the room.
func (r *Room) mirror(e *Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owner == "" {
		// Another node acts as the room's owner too (their views of the
		// cluster disagreed when both claimed it): the owner by our view
		// claims it again from everyone. Until then this frame is dropped;
		// the claim takes the highest seq, and members who miss messages
		// are told by a gap.
		if e.Op == OpFrame && e.Seq > 0 {
			if owner := r.hub.cfg.Cluster.RoomOwner(r.name); owner == "" {
				r.claimed = false
				r.claimLocked()
			} else {
				_ = r.hub.cfg.Cluster.Send(owner, &Envelope{Op: OpEnsure, Room: r.name, Seq: 1})
			}
		}
		return
	}
	switch e.Op {
	case OpJoined:
		m := r.joiningMember(e.Name, e.Conn)
		if m == nil {
			// A member joining again (with since) gets its replay; anyone
			// else has left meanwhile.
			for _, lm := range r.members {
				if lm.Name() == e.Name && (e.Conn == 0 || tokenOf(lm) == e.Conn) {
					for _, p := range e.Frames {
						lm.Send(protocol.NewFrame(protocol.OpText, p))
					}
					return
				}
			}
			if !r.hasLocalLocked(e.Name, nil) {
				_ = r.hub.cfg.Cluster.Send(e.Node, &Envelope{Op: OpLeave, Room: r.name, Name: e.Name})
			}
			return
		}
		delete(r.joining, m)
		r.names.Clear(false)
		for _, name := range strings.Split(string(e.Text), "\n") {
			if name != "" {
				r.names.ReplaceOrInsert(name)
			}
		}
		if !r.synced {
			r.seq, r.synced = e.Seq, true
		} else if e.Seq > r.seq {
			r.resyncLocked()
		}
		if r.addLocalLocked(m) {
			r.total = len(r.members)
			r.count.Store(int32(r.total))
		}
		for _, p := range e.Frames {
			m.Send(protocol.NewFrame(protocol.OpText, p))
		}
	case OpFrame:
		if !r.synced || len(e.Frames) != 1 {
			return
		}
		if e.Seq == 0 {
			switch e.To {
			case protocol.EventJoin:
				r.names.ReplaceOrInsert(e.Name)
			case protocol.EventLeave:
				r.names.Delete(e.Name)
			case presenceBatch:
				for name := range strings.SplitSeq(string(e.Text), "\n") {
					if name != "" {
						// A copy: a slice of the list would keep the whole
						// batch in memory while this member stays.
						r.names.ReplaceOrInsert(strings.Clone(name))
					}
				}
				for name := range strings.SplitSeq(string(e.After), "\n") {
					r.names.Delete(name)
				}
			}
			r.broadcastLocalLocked(protocol.NewFrame(protocol.OpText, e.Frames[0]), e.Name)
			return
		}
		if r.resyncing || e.Seq > r.seq+1 {
			if len(r.held) >= maxHeld {
				// The owner is not answering: show what is here, gap and all.
				r.resyncing = false
				for _, he := range r.held {
					r.showMirroredLocked(he.Seq, he.TS, he.Payload)
				}
				r.held = nil
				r.showMirroredLocked(e.Seq, e.TS, e.Frames[0])
				return
			}
			r.held = append(r.held, HistEntry{Seq: e.Seq, TS: e.TS, Payload: clone(e.Frames[0])})
			r.resyncLocked()
			return
		}
		r.showMirroredLocked(e.Seq, e.TS, e.Frames[0])
	case OpResynced:
		if !r.resyncing {
			return
		}
		r.resyncing = false
		for i, p := range e.Frames {
			r.showMirroredLocked(e.Seq+uint64(i), 0, p)
		}
		for _, he := range r.held {
			r.showMirroredLocked(he.Seq, he.TS, he.Payload)
		}
		r.held = nil
	}
}

// showMirroredLocked delivers the owner's message seq to the local members,
// once and in order; a gap the owner could not fill is reported to them.
func (r *Room) showMirroredLocked(seq uint64, ts int64, payload []byte) {
	if seq <= r.seq {
		return
	}
	if seq > r.seq+1 {
		r.broadcastLocalLocked(protocol.Err(nil, &protocol.Error{Code: protocol.CodeGap,
			Message: "messages of room " + r.name + " were lost between nodes; join again with since to recover"}), "")
		r.hist.clear()
	}
	if ts == 0 {
		ts = time.Now().UnixMilli()
	}
	r.seq, r.durable = seq, seq
	f := protocol.NewFrame(protocol.OpText, payload)
	f.Retain(1)
	r.hist.add(f, seq, ts)
	r.broadcastLocalLocked(f, "")
}

func (r *Room) resyncLocked() {
	if r.resyncing {
		return
	}
	r.resyncing = true
	if r.hub.cfg.Cluster.Send(r.owner, &Envelope{Op: OpResync, Room: r.name, Seq: r.seq}) != nil {
		r.resyncing = false
	}
}

// joiningMember returns the joining connection a joined reply is for: the
// one whose token is conn, or with conn 0 one called name.
func (r *Room) joiningMember(name string, conn uint64) Member {
	for m := range r.joining {
		if m.Name() == name && (conn == 0 || tokenOf(m) == conn) {
			return m
		}
	}
	return nil
}

// hasLocalLocked reports whether a connection here other than but, a
// member or joining, is called name. r.mu must be held.
func (r *Room) hasLocalLocked(name string, but Member) bool {
	for _, m := range r.members {
		if m != but && m.Name() == name {
			return true
		}
	}
	for m := range r.joining {
		if m != but && m.Name() == name {
			return true
		}
	}
	return false
}

// Rehome is called when the set of live nodes changes: rooms and users
// whose owner moved are handed over, and members of nodes that left are
// dropped.
func (h *Hub) Rehome(gone []string) {
	c := h.cfg.Cluster
	for _, node := range gone {
		h.nodeGone(node)
	}
	for _, r := range h.allRooms() {
		owner := c.RoomOwner(r.name)
		r.mu.Lock()
		switch {
		case r.owner == "" && owner != "":
			// Ours until the new owner claims it; tell it to.
			_ = c.Send(owner, &Envelope{Op: OpEnsure, Room: r.name, Seq: 1})
		case r.owner != "" && owner == "":
			died := slices.Contains(gone, r.owner)
			r.owner, r.claimed = "", false
			r.claimAfterLocked(died)
			if died {
				r.publishInflightLocked()
			}
		case r.owner != owner:
			died := slices.Contains(gone, r.owner)
			r.owner = owner
			_ = c.Send(owner, &Envelope{Op: OpEnsure, Room: r.name})
			if r.resyncing {
				r.resyncing = false
				r.resyncLocked()
			}
			if died {
				// Messages the dead owner never acknowledged were never
				// shown (it sends the message before the ack): send them
				// to the new owner.
				for i := range r.inflight {
					_ = c.Send(owner, &r.inflight[i])
				}
			}
		}
		r.mu.Unlock()
	}
	for i := range h.users {
		s := &h.users[i]
		s.mu.Lock()
		type adoption struct {
			name  string
			conns int
		}
		var adopt []adoption
		for name, u := range s.locals {
			if owner := c.UserOwner(name); owner != "" {
				u.mu.Lock()
				adopt = append(adopt, adoption{name, u.sessions()})
				u.mu.Unlock()
			} else if u.remote {
				h.takeOverLocked(s, u)
			}
		}
		// Users owned elsewhere now go, with their direct messages; one
		// connected here stays as a connection whose owner is elsewhere.
		var handoff []Envelope
		for name, u := range s.users {
			if owner := c.UserOwner(name); owner != "" {
				handoff = append(handoff, u.dmsFor(owner))
				delete(s.users, name)
				if s.locals[name] == u {
					u.mu.Lock()
					u.remote = true
					u.mu.Unlock()
				}
			}
		}
		s.mu.Unlock()
		// The messages first, so the new owner has them when it learns
		// where the user is.
		for i := range handoff {
			_ = c.Send(handoff[i].To, &handoff[i])
		}
		for _, a := range adopt {
			_ = c.Send(c.UserOwner(a.name), &Envelope{Op: OpAdopt, Name: a.name, Limit: a.conns})
		}
	}
}

// dmsFor packs u's direct messages for the node that owns u now.
func (u *User) dmsFor(owner string) Envelope {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := Envelope{Op: OpHandoff, Name: u.name, To: owner, Seq: u.durable, Since: int64(u.inbox.first)}
	for s := u.inbox.first; u.inbox.n > 0 && s < u.inbox.next(); s++ {
		e.Frames = append(e.Frames, clone(u.inbox.at(s).f.Payload()))
	}
	return e
}

// takeDMs installs the direct messages of a user this node owns now, unless
// it already has later ones.
func (h *Hub) takeDMs(e *Envelope) {
	s := &h.users[fnv32a(e.Name)&h.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	u := h.ownedUserLocked(s, e.Name)
	u.mu.Lock()
	defer u.mu.Unlock()
	if e.Seq <= u.durable || len(u.pending) > 0 {
		return
	}
	u.inbox.clear()
	now := time.Now().UnixMilli()
	for i, p := range e.Frames {
		u.inbox.add(protocol.NewFrame(protocol.OpText, p), uint64(e.Since)+uint64(i), now)
	}
	u.dmSeq, u.durable = e.Seq, e.Seq
}

// takeOverLocked makes u, connected here and owned elsewhere until now,
// owned here: it takes the direct messages this node kept for the name, if
// any, and from now on direct messages to it are numbered here. s.mu must
// be held.
func (h *Hub) takeOverLocked(s *userShard, u *User) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.remote = false
	if old := s.users[u.name]; old != nil && old != u {
		old.mu.Lock()
		if old.member == nil {
			u.dmSeq, u.durable, u.inbox, u.ids = old.dmSeq, old.durable, old.inbox, old.ids
			old.inbox = history{}
		}
		old.mu.Unlock()
	} else {
		u.inbox.max = max(h.cfg.DMHistory, 0)
		h.load(u.key, &u.dmSeq, &u.inbox)
		u.durable = u.dmSeq
	}
	if u.inbox.max == 0 {
		u.inbox.max = max(h.cfg.DMHistory, 0)
	}
	s.users[u.name] = u
}

// Reconnected is called when this node is back on the cluster after an
// outage: mirrored rooms ask for what they missed and unanswered joins are
// sent again.
func (h *Hub) Reconnected() {
	c := h.cfg.Cluster
	for _, r := range h.allRooms() {
		r.mu.Lock()
		if r.owner != "" {
			if r.synced {
				r.resyncing = false
				r.resyncLocked()
			}
			for m := range r.joining {
				_ = c.Send(r.owner, &Envelope{Op: OpJoin, Room: r.name, Name: m.Name(), Conn: tokenOf(m), Since: -1})
			}
			// The owner drops a resent message it already has, by id.
			for i := range r.inflight {
				_ = c.Send(r.owner, &r.inflight[i])
			}
		}
		r.mu.Unlock()
	}
}

// nodeGone drops the members and names a dead node held here.
func (h *Hub) nodeGone(node string) {
	for _, r := range h.allRooms() {
		r.mu.Lock()
		for name := range r.remotes[node] {
			r.leaveRemoteLocked(node, name)
		}
		r.mu.Unlock()
	}
	for i := range h.users {
		s := &h.users[i]
		s.mu.Lock()
		for _, u := range s.users {
			u.mu.Lock()
			if rm := u.remoteSession(node); rm != nil {
				u.dropSession(rm)
				if u.member == nil {
					u.offlineAt = time.Now().UnixMilli()
				}
			}
			u.mu.Unlock()
		}
		s.mu.Unlock()
	}
}

// OwnedRooms counts the rooms this node orders.
func (h *Hub) OwnedRooms() int {
	n := 0
	for _, r := range h.allRooms() {
		r.mu.Lock()
		if r.owner == "" && !r.gone.Load() {
			n++
		}
		r.mu.Unlock()
	}
	return n
}

// joinViaOwnerLocked asks the owner to add m; m becomes a member here when
// the owner's answer arrives, in order with the room's messages. r.mu must
// be held.
func (r *Room) joinViaOwnerLocked(m Member, ref []byte, since int64) *protocol.Error {
	if _, ok := r.find(m); !ok {
		if r.joining == nil {
			r.joining = make(map[Member]struct{})
		}
		r.joining[m] = struct{}{}
	}
	if r.hub.cfg.Cluster.Send(r.owner, &Envelope{Op: OpJoin, Room: r.name, Name: m.Name(), Conn: tokenOf(m), Ref: ref, Since: since}) != nil {
		delete(r.joining, m)
		return errUnavailable
	}
	return nil
}

// removeMirroredLocked drops a local member of a mirrored room and tells
// the owner; it unlocks r.mu. It reports whether m was a member or joining.
func (r *Room) removeMirroredLocked(m Member) bool {
	_, joining := r.joining[m]
	delete(r.joining, m)
	ok := r.dropLocalLocked(m)
	if ok {
		r.total = len(r.members)
		r.count.Store(int32(r.total))
	}
	if (ok || joining) && !r.hasLocalLocked(m.Name(), m) {
		// The owner knows the user on this node, not its connections.
		_ = r.hub.cfg.Cluster.Send(r.owner, &Envelope{Op: OpLeave, Room: r.name, Name: m.Name()})
	}
	gone := len(r.members) == 0 && len(r.joining) == 0
	if gone {
		r.gone.Store(true)
	}
	r.mu.Unlock()
	if gone {
		r.hub.remove(r)
	}
	return ok || joining
}

// maxInflight caps the forwarded messages a mirrored room keeps until the
// owner acknowledges them.
const maxInflight = 4096

// forwardLocked sends a member's message to the owner and, if it has an id,
// keeps it until acknowledged, to send again after a NATS outage.
func (r *Room) forwardLocked(e *Envelope) error {
	if e.ID != nil {
		if len(r.inflight) >= maxInflight {
			r.inflight = r.inflight[:copy(r.inflight, r.inflight[1:])]
		}
		r.inflight = append(r.inflight, Envelope{Op: OpPublish, Room: e.Room, Name: e.Name, Conn: e.Conn, Text: clone(e.Text), ID: clone(e.ID), from: e.from})
	}
	if err := r.hub.cfg.Cluster.Send(r.owner, e); err != nil {
		if e.ID != nil {
			r.inflight = r.inflight[:len(r.inflight)-1]
		}
		return err
	}
	return nil
}

// publishInflightLocked numbers the messages this node forwarded to an owner
// that died before acknowledging them, now that this node owns the room.
func (r *Room) publishInflightLocked() {
	for _, e := range r.inflight {
		m := e.from
		if _, ok := r.find(m); !ok {
			m = nil
			for _, x := range r.members {
				if x.Name() == e.Name {
					m = x
					break
				}
			}
		}
		if m == nil {
			continue
		}
		if _, dup := r.recall(e.Name, e.ID); !dup {
			r.publishLocked(m, e.Text, e.ID, time.Now().UnixMilli())
			r.hub.messages.Add(1)
		}
	}
	r.inflight = nil
}

// acked forgets a forwarded message once the owner has it.
func (r *Room) acked(name string, id []byte) Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.inflight {
		if e := &r.inflight[i]; e.Name == name && string(e.ID) == string(id) {
			from := e.from
			r.inflight = append(r.inflight[:i], r.inflight[i+1:]...)
			return from
		}
	}
	return nil
}
