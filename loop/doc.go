// Package loop is nbchat's network layer: one nbio reactor serving the chat
// page, the WebSocket endpoint, /healthz and /metrics on one port, with no
// goroutine per connection.
//
// # Goroutines
//
//   - nbhttp's accept goroutine runs guardedListener.Accept, which registers
//     each plain connection with a poller itself (reuse.go: a reused fd
//     number first waits, on a goroutine of its own, for its poller to
//     finish older event batches), holding it to nbhttp's MaxLoad but
//     without nbhttp's parser, which a connection gets only if its first
//     read is not a plain upgrade.
//   - nbio's pollers (one per two CPUs by default) read sockets. A plain
//     upgrade request is answered on the poller from the first read
//     (fastupgrade.go); other HTTP requests go to nbhttp's executor. For an
//     upgraded connection the poller calls conn.Parse, which decodes frames
//     with loop's own strict decoder and handles each request inline:
//     requests only enqueue frames, they never block.
//   - Flushers (one per two CPUs by default) write queued frames: a
//     connection that has frames queued is put on its flusher's list once;
//     the flusher copies all its queued frames into one buffer and makes one
//     write, so under load the batch grows instead of the number of system
//     calls.
//   - One janitor sends pings, closes idle connections, finishes closes
//     whose peer never answered, and closes a connection that did not
//     answer the ping another connection's claim to its name set off
//     (conn.Probe).
//
// # Buffers
//
// Payloads passed to the decoder's callbacks point into nbio's read buffer
// (or the decoder's reassembly buffer) and are invalid once Parse returns;
// the request decoder unescapes strings in place. Anything kept — a name,
// a room name — is copied. Outbound frames are pooled and reference-counted
// (protocol.Frame); a connection's queue holds references until its flusher
// has handed the bytes to nbio, which copies whatever the kernel does not
// take at once.
//
// # Closing
//
// A close the server starts (protocol error, slow consumer, idle, shutdown)
// queues a close frame, stops accepting frames for the connection, and
// closes the socket when the peer answers or after a grace period. A close
// the peer starts is answered with a close frame and the socket is closed
// once it is written.
//
// # Locks
//
// conn.hmu serializes request handling with the close path; it is taken
// before any room lock. conn.qmu guards the outbound queue and is innermost:
// rooms take it (through Send) while holding their own lock.
package loop
