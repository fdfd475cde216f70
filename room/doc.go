// Package room holds rooms, their members and the user registry, and fans
// messages out. It knows nothing of sockets: a connection is a [Member]
// whose Send queues a frame without blocking.
//
// # Sharding
//
// Rooms and users live in shards chosen by an FNV-1a hash of the name; the
// shard count is a power of two. A shard is a mutex and a map; it is held
// only to find, create or remove an entry, never while a room does work.
//
// # Locks
//
// The order is shard -> room. A room's lock covers its members, its seq and
// the enqueueing of each broadcast to every member, so all members see a
// room's messages in seq order. Member.Send only appends to the member's
// queue; the socket write happens later on the connection's flusher, so no
// room or shard lock is ever held across a system call.
//
// # Fan-out
//
// A broadcast is encoded once into a pooled [protocol.Frame]; the room
// retains it once per member and each Send takes ownership of one reference.
// Nothing is allocated per recipient.
//
// # Memory over time
//
// Kept messages move from their pooled buffers into ones of their own size
// once no queue holds them (the sweep, every Config.SweepInterval). With a
// Store, a room empty for Config.RoomTTL whose messages are all on disk
// leaves memory and is read back by the next join, users go after
// Config.OfflineTTL, and messages older than Config.HistoryAge leave the
// disk as well as memory; each stream keeps its last seq.
//
// # Presence
//
// In rooms up to Config.PresenceLimit members, each join and leave is sent
// to the other members at once. In bigger rooms, joins and leaves are
// coalesced and sent at most once per Config.PresenceInterval, with at most
// Config.PresenceNames names in each list, so a join storm costs about one
// delivery per member per interval.
//
// # Cluster
//
// With Config.Cluster set, every room and user has an owner node (see
// cluster.go and package cluster). An owned room is the one described above
// plus, per other node with members, a set of names; each broadcast also goes
// once to each such node (Room.deliverRemotesLocked), under the room's lock,
// so the nodes get the room's messages in seq order. A mirrored room holds
// this node's members of a room owned elsewhere: requests go to the owner
// (Cluster.Send) and the owner's frames come back through Hub.HandleNode.
// Claims, which move a room to a new owner, run under the room's lock and
// wait on the network, bounded by the cluster's timeout.
//
// # Names
//
// A name is held by one connection at a time. A connection asking for a
// held name is refused, and the holder is asked to prove it is alive
// ([Prober]; in a cluster through the name's owner, which sends OpProbe to
// the holder's node), so a holder whose client vanished without closing
// goes away in seconds and the name comes free.
package room
