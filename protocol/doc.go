// Package protocol is nbchat's wire format: JSON text messages carried one
// per WebSocket frame. It is a leaf package (standard library only) shared by
// the server and the load generator.
//
// # Client to server
//
// Every request is a flat JSON object with a "type"; "id" (a string or a
// number) is optional and comes back as "ref" on the reply to the requester.
//
//	{"type":"join","room":"lobby"}
//	{"type":"leave","room":"lobby"}
//	{"type":"msg","room":"lobby","text":"hi"}
//	{"type":"dm","to":"bob","text":"hi"}
//	{"type":"join","room":"lobby","since":16}
//	{"type":"members","room":"lobby","after":"bob","limit":100}
//	{"type":"history","room":"lobby","before":17,"limit":50}
//	{"type":"typing","room":"lobby"}
//	{"type":"typing","to":"bob"}
//	{"type":"rooms"}
//	{"type":"ping"}
//
// # Server to client
//
//	{"type":"welcome","name":"alice","version":1}
//	{"type":"joined","room":"lobby","count":2,"members":["alice","bob"],"seq":16}
//	{"type":"left","room":"lobby"}
//	{"type":"msg","room":"lobby","from":"alice","text":"hi","seq":17,"ts":1763770000123}
//	{"type":"dm","from":"alice","to":"bob","text":"hi","ts":1763770000123}
//	{"type":"ack","to":"bob","ref":"d1"}
//	{"type":"typing","room":"lobby","from":"alice"}
//	{"type":"typing","from":"alice","to":"bob"}
//	{"type":"presence","room":"lobby","event":"join","name":"carol","count":3}
//	{"type":"presence","room":"lobby","joined":["carol"],"left":[],"count":3}
//	{"type":"members","room":"lobby","count":3,"members":["carol"]}
//	{"type":"rooms","rooms":[{"name":"lobby","count":3}]}
//	{"type":"pong"}
//	{"type":"error","code":"not_member","message":"not a member of lobby"}
//
// Decoding is strict: a request that is not a JSON object, has an unknown
// type, lacks a field, carries a bad name or too long a text yields an
// [*Error] whose Code is sent back in an error message; the connection stays
// open. Only WebSocket-level violations close a connection.
//
// Encoding produces a complete, unmasked WebSocket frame (header and payload)
// in a pooled, reference-counted [Frame], so a broadcast is encoded once and
// the same bytes go to every recipient.
package protocol

// Version is the protocol version; it changes only on incompatible changes.
const Version = 1

// Limits of the wire format.
const (
	// MaxNameLen is the longest user or room name, in bytes.
	MaxNameLen = 32
	// DefaultMaxText is the default limit on a message's text, in bytes.
	DefaultMaxText = 4096
	// MaxMembersPage is the largest page a members request may ask for.
	MaxMembersPage = 1000
	// DefaultMembersPage is the page size when a members request names none.
	DefaultMembersPage = 100
	// MaxHistoryPage is the largest page a history request may ask for.
	MaxHistoryPage = 200
	// DefaultHistoryPage is the page size when a history request names none.
	DefaultHistoryPage = 50
)
