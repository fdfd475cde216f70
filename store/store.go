// Package store keeps rooms' and users' messages on disk, so history,
// recovery and seq numbers survive a restart or a crash.
//
// It uses go.etcd.io/bbolt: one file, a B+tree per stream keyed by seq, so
// appends go to the end of a tree and "the last N" or "after seq S" are
// range scans. Appends are group-committed: one goroutine takes every
// record queued while the previous transaction was being written and
// commits them in one transaction with one fsync, so throughput grows with
// load while each message waits at most about one commit gap (10 ms).
// A stream is told a record is durable only after its transaction is
// synced; only then does the server show and acknowledge the message.
// Each stream keeps its last messages (trim) and, through Expire, none older
// than the history age; its last seq outlives them.
package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"nbchat/protocol"
)

// Stream is a sequence of messages: a room's, or a user's direct messages.
type Stream interface {
	// Key names the stream on disk.
	Key() string
	// Durable is told, in seq order, that every record of the stream up to
	// seq is on disk. It runs on the store's committer goroutine.
	Durable(seq uint64)
}

// Record is one message appended to a stream. The store takes over one
// reference to Frame and stores its payload.
type Record struct {
	Stream Stream
	Seq    uint64
	TS     int64 // milliseconds since the epoch
	Frame  *protocol.Frame
}

// Entry is a stored message.
type Entry struct {
	Seq     uint64
	TS      int64
	Payload []byte
}

// Store is an open message store.
type Store struct {
	db   *bolt.DB
	keep int
	log  *slog.Logger

	in        chan Record
	done      chan struct{}
	closeOnce sync.Once

	// expireFrom is the stream the next Expire starts at (nil: the first).
	expireFrom []byte
}

var (
	bucketStreams = []byte("streams") // stream key -> bucket of seq -> ts+payload
	bucketSeqs    = []byte("seqs")    // stream key -> last seq given out
)

// queueSize bounds records waiting for a commit; past it, appending waits,
// which slows senders rather than growing memory.
const queueSize = 1 << 14

// maxBatch bounds one transaction.
const maxBatch = 8192

// commitGap is the least time from one commit's start to the next. Under a
// trickle of messages a commit would otherwise hold one or two records and
// cost a page rewrite and an fdatasync each; waiting lets records gather,
// for at most commitGap of extra latency, and only under load (a message
// that comes after a quiet gap is committed at once). rooms19k (1,000
// messages a second over 1,000 rooms), two or three runs each: 3 ms 26.7-27.5
// s of server CPU per million deliveries, p50 3.5 ms; 6 ms 24.3-25.6 s, 5.7
// ms; 10 ms 21.6-23.1 s, 8.5 ms; p99 22-32 ms with each.
const commitGap = 10 * time.Millisecond

// Open opens (creating if needed) the store in dir, keeping the last keep
// messages of each stream.
func Open(dir string, keep int, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "nbchat.db"), 0o600, &bolt.Options{
		Timeout:        time.Second, // another process holds the file
		NoFreelistSync: true,        // rebuilt on open; halves the writes per commit
	})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketStreams); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketSeqs)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Store{db: db, keep: max(keep, 1), log: log, in: make(chan Record, queueSize), done: make(chan struct{})}
	go s.run()
	return s, nil
}

// Append queues r for the next commit. Records of one stream must be
// appended in seq order.
func (s *Store) Append(r Record) { s.in <- r }

// Close commits what is queued and closes the file. Append must not be
// called after Close.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.in) })
	<-s.done
	return s.db.Close()
}

// Load returns a stream's last seq and its last n stored messages, oldest
// first.
func (s *Store) Load(key string, n int) (uint64, []Entry, error) {
	var seq uint64
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketSeqs).Get([]byte(key)); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		b := tx.Bucket(bucketStreams).Bucket([]byte(key))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
			if len(k) != 8 || len(v) < 8 {
				return errors.New("store: corrupt entry")
			}
			out = append(out, Entry{
				Seq:     binary.BigEndian.Uint64(k),
				TS:      int64(binary.BigEndian.Uint64(v)),
				Payload: append([]byte(nil), v[8:]...),
			})
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return seq, out, err
}

// Streams returns the keys of the stored streams that start with prefix.
func (s *Store) Streams(prefix string) ([]string, error) {
	var keys []string
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSeqs).Cursor()
		for k, _ := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, _ = c.Next() {
			keys = append(keys, string(k))
		}
		return nil
	})
	return keys, err
}

// Expire drops the stored messages older than cutoff (milliseconds since
// the epoch) of up to limit streams, going on from where the previous call
// stopped, so that calls made now and then cover every stream in turn
// without one long transaction. A stream left with no message keeps its
// last seq, so numbering never goes back. It must not be called
// concurrently with itself.
func (s *Store) Expire(cutoff int64, limit int) error {
	var stale [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		streams := tx.Bucket(bucketStreams)
		c := streams.Cursor()
		k, _ := c.Seek(s.expireFrom)
		for n := 0; k != nil && n < limit; k, _ = c.Next() {
			n++
			if b := streams.Bucket(k); b != nil {
				if _, v := b.Cursor().First(); v == nil || entryTS(v) < cutoff {
					stale = append(stale, bytes.Clone(k))
				}
			}
		}
		s.expireFrom = bytes.Clone(k) // nil at the end: start over
		return nil
	})
	if err != nil || len(stale) == 0 {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		streams := tx.Bucket(bucketStreams)
		for _, key := range stale {
			b := streams.Bucket(key)
			if b == nil {
				continue
			}
			c := b.Cursor()
			k, v := c.First()
			for ; k != nil && entryTS(v) < cutoff; k, v = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
			if k == nil {
				if err := streams.DeleteBucket(key); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// entryTS is the time a stored message was sent, in milliseconds since the
// epoch; a value too short to hold it counts as expired.
func entryTS(v []byte) int64 {
	if len(v) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// run is the committer: one transaction per batch of queued records.
func (s *Store) run() {
	defer close(s.done)
	var batch []Record
	var arena []byte
	for {
		r, ok := <-s.in
		if !ok {
			return
		}
		batch = append(batch[:0], r)
	gather:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.in:
				if !ok {
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		start := time.Now()
		arena = s.commit(batch, arena[:0])
		for i, r := range batch {
			r.Frame.Release()
			batch[i] = Record{}
		}
		if d := time.Since(start); d < commitGap && len(s.in) < maxBatch {
			time.Sleep(commitGap - d)
		}
	}
}

// commit writes batch in one transaction, retrying until it succeeds (a
// message is never reported durable unless it is), then tells each stream.
func (s *Store) commit(batch []Record, arena []byte) []byte {
	// bbolt keeps key and value slices until the transaction ends, so they
	// are cut from one arena sized up front.
	size := 0
	for _, r := range batch {
		size += 16 + len(r.Frame.Payload())
	}
	if cap(arena) < size {
		arena = make([]byte, 0, size)
	}
	for attempt := 0; ; attempt++ {
		err := s.db.Update(func(tx *bolt.Tx) error {
			streams, seqs := tx.Bucket(bucketStreams), tx.Bucket(bucketSeqs)
			a := arena[:0]
			for i, r := range batch {
				key := []byte(r.Stream.Key())
				b, err := streams.CreateBucketIfNotExists(key)
				if err != nil {
					return err
				}
				a = binary.BigEndian.AppendUint64(a, r.Seq)
				k := a[len(a)-8:]
				a = binary.BigEndian.AppendUint64(a, uint64(r.TS))
				a = append(a, r.Frame.Payload()...)
				v := a[len(a)-8-len(r.Frame.Payload()):]
				if err := b.Put(k, v); err != nil {
					return err
				}
				if i+1 == len(batch) || batch[i+1].Stream != r.Stream {
					if err := seqs.Put(key, k); err != nil {
						return err
					}
					if err := s.trim(b, r.Seq); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err == nil {
			break
		}
		s.log.Error("store: commit failed; retrying", "err", err, "attempt", attempt)
		time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
	}
	for _, r := range batch {
		r.Stream.Durable(r.Seq)
	}
	return arena
}

// trimSlack lets a stream grow this far past keep before it is trimmed, so
// deletes come in runs rather than one per append.
const trimSlack = 64

// trim drops a stream's entries older than its last keep.
func (s *Store) trim(b *bolt.Bucket, last uint64) error {
	if last <= uint64(s.keep+trimSlack) {
		return nil
	}
	c := b.Cursor()
	k, _ := c.First()
	if k == nil || binary.BigEndian.Uint64(k) > last-uint64(s.keep+trimSlack) {
		return nil
	}
	var limit [8]byte
	binary.BigEndian.PutUint64(limit[:], last-uint64(s.keep))
	for ; k != nil && string(k) <= string(limit[:]); k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}
