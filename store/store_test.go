package store

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"nbchat/protocol"
)

// stream records what the store reports durable.
type stream struct {
	key string
	mu  sync.Mutex
	got []uint64
}

func (s *stream) Key() string { return s.key }
func (s *stream) Durable(seq uint64) {
	s.mu.Lock()
	s.got = append(s.got, seq)
	s.mu.Unlock()
}

func appendN(st *Store, s *stream, from, to uint64) {
	for seq := from; seq <= to; seq++ {
		st.Append(Record{Stream: s, Seq: seq, TS: int64(seq), Frame: protocol.NewFrame(protocol.OpText, fmt.Appendf(nil, `{"n":%d}`, seq))})
	}
}

func TestAppendIsDurableInOrderAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := &stream{key: "r/a"}, &stream{key: "r/b"}
	appendN(st, a, 1, 50)
	appendN(st, b, 1, 3)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	want := make([]uint64, 50)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if !slices.Equal(a.got, want) {
		t.Fatalf("durable order %v", a.got)
	}

	st, err = Open(dir, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	seq, entries, err := st.Load("r/a", 10)
	if err != nil || seq != 50 || len(entries) != 10 || entries[0].Seq != 41 || entries[9].Seq != 50 {
		t.Fatalf("Load = %d, %+v, %v; want seq 50 and entries 41..50", seq, entries, err)
	}
	if string(entries[9].Payload) != `{"n":50}` || entries[9].TS != 50 {
		t.Fatalf("entry %+v", entries[9])
	}
	if seq, entries, _ := st.Load("r/none", 10); seq != 0 || len(entries) != 0 {
		t.Fatalf("unknown stream: %d, %v", seq, entries)
	}
}

func TestOldEntriesAreTrimmedButSeqIsKept(t *testing.T) {
	st, err := Open(t.TempDir(), 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &stream{key: "u/x"}
	appendN(st, s, 1, 200)
	st.Append(Record{Stream: s, Seq: 201, Frame: protocol.NewFrame(protocol.OpText, []byte("{}"))})
	// Wait for the queue by appending to a sync stream and loading.
	done := &stream{key: "sync"}
	appendN(st, done, 1, 1)
	for {
		done.mu.Lock()
		n := len(done.got)
		done.mu.Unlock()
		if n == 1 {
			break
		}
	}
	seq, entries, err := st.Load("u/x", 1000)
	if err != nil || seq != 201 {
		t.Fatalf("seq %d, err %v", seq, err)
	}
	if len(entries) > 10+64 || entries[len(entries)-1].Seq != 201 {
		t.Fatalf("%d entries kept (first %d), want about the last 10", len(entries), entries[0].Seq)
	}
}

func TestOpenFailsWhileAnotherProcessHoldsTheStore(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := Open(dir, 10, nil); err == nil {
		t.Fatal("opened a store that is in use")
	}
}

func TestStreamsListsKeysByPrefix(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"r/b", "u/alice", "r/a", "rx"} {
		appendN(st, &stream{key: key}, 1, 1)
	}
	if err := st.Close(); err != nil { // commits what is queued
		t.Fatal(err)
	}
	st, err = Open(dir, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got, err := st.Streams("r/"); err != nil || !slices.Equal(got, []string{"r/a", "r/b"}) {
		t.Fatalf(`Streams("r/") = %v, %v; want [r/a r/b]`, got, err)
	}
}

// TestExpireDropsOldMessagesAndKeepsSeqs: messages older than the cutoff
// go from disk, a stream left empty goes but keeps its last seq, and calls
// with a small limit cover every stream in turn.
func TestExpireDropsOldMessagesAndKeepsSeqs(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	// appendN stamps seq n at n ms: with the cutoff at 6, 1..5 are old.
	old, mixed, fresh := &stream{key: "r/old"}, &stream{key: "r/mixed"}, &stream{key: "u/fresh"}
	appendN(st, old, 1, 5)
	appendN(st, mixed, 1, 10)
	st.Append(Record{Stream: fresh, Seq: 1, TS: 100, Frame: protocol.NewFrame(protocol.OpText, []byte("{}"))})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = Open(dir, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for range 3 { // one stream per call
		if err := st.Expire(6, 1); err != nil {
			t.Fatal(err)
		}
	}
	if seq, entries, err := st.Load("r/old", 10); err != nil || seq != 5 || len(entries) != 0 {
		t.Fatalf("old stream: seq %d, %d entries, %v; want seq 5 and none", seq, len(entries), err)
	}
	if seq, entries, err := st.Load("r/mixed", 10); err != nil || seq != 10 || len(entries) != 5 || entries[0].Seq != 6 {
		t.Fatalf("mixed stream: seq %d, %+v, %v; want seq 10 and 6..10", seq, entries, err)
	}
	if _, entries, _ := st.Load("u/fresh", 10); len(entries) != 1 {
		t.Fatalf("fresh stream lost its message: %+v", entries)
	}
	if keys, _ := st.Streams("r/"); !slices.Equal(keys, []string{"r/mixed", "r/old"}) {
		t.Fatalf("streams after expiry %v: every stream keeps its seq", keys)
	}
	var buckets []string
	_ = st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStreams).ForEach(func(k, _ []byte) error {
			buckets = append(buckets, string(k))
			return nil
		})
	})
	if !slices.Equal(buckets, []string{"r/mixed", "u/fresh"}) {
		t.Fatalf("message buckets %v, want the emptied one gone", buckets)
	}
}

// BenchmarkExpireScan is one sweep's look at 1,000 of 10,000 streams when
// nothing has expired: what retention costs every sweep in steady state.
func BenchmarkExpireScan(b *testing.B) {
	st, err := Open(b.TempDir(), 100, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for i := range 10000 {
		appendN(st, &stream{key: fmt.Sprintf("r/%05d", i)}, 1, 3)
	}
	for len(st.in) > 0 {
		time.Sleep(time.Millisecond) // let the committer catch up
	}
	time.Sleep(50 * time.Millisecond) // and commit the last batch
	b.ReportAllocs()
	for b.Loop() {
		if err := st.Expire(0, 1000); err != nil {
			b.Fatal(err)
		}
	}
}
