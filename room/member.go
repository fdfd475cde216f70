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
