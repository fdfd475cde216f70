package room

import "nbchat/protocol"

// Member is a connection as rooms see it.
type Member interface {
	// Name is the member's user name; it never changes.
	Name() string
	// Send queues f for the member and takes ownership of one reference to
	// it: the member Releases it once written or dropped. Send must not
	// block and must not call back into the room.
	Send(f *protocol.Frame)
}

// Prober is a Member that can be asked whether its peer is still there.
// The hub asks when another connection wants the name it holds: a client
// that vanished without closing its socket (a phone that changed networks,
// a NAT that forgot the flow) would otherwise hold its place until the idle
// timeout, and, where names are exclusive, lock its own reconnect out.
// Probe must not block and must not call back into the hub; a member
// whose peer does not answer goes away on its own, freeing its place.
type Prober interface {
	Probe()
}

// probe asks m to check its peer, if it can.
func probe(m Member) {
	if p, ok := m.(Prober); ok {
		p.Probe()
	}
}
