package room

import (
	"fmt"
	"testing"

	"nbchat/protocol"
)

// BenchmarkBroadcast publishes into rooms of counting members. The timer
// covers encoding the message once and enqueueing it to every member (a
// Retain, a Send and the member's Release); socket writes are not part of
// it. ns/recipient is the time per op spread over the members.
func BenchmarkBroadcast(b *testing.B) {
	text := []byte("a typical chat line of some sixty bytes, give or take a few.")
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			h := newHub(b, Config{})
			r, ms := fill(h, "bench", n)
			// The joins' coalesced presence is not part of a broadcast.
			waitFlushed(b, r)
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				publish(r, ms[0], text)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/recipient")
		})
	}
}

// BenchmarkJoinLeave joins a room and leaves it again. With others=0 the
// room is created and removed every time; otherwise the others get a
// presence event for each join and each leave, or, as a storm past
// -presence-burst, one coalesced message a second.
func BenchmarkJoinLeave(b *testing.B) {
	for _, tc := range []struct {
		n     int
		burst int
		name  string
	}{{0, 0, "others=0"}, {100, 1 << 30, "others=100"}, {100, 0, "others=100/coalesced"}} {
		n := tc.n
		b.Run(tc.name, func(b *testing.B) {
			h := newHub(b, Config{JoinedNames: 20, PresenceBurst: tc.burst})
			fill(h, "bench", n)
			m := &countMember{name: "joiner"}
			name := []byte("bench")
			b.ReportAllocs()
			for b.Loop() {
				mustJoin(h, m, name, nil).Leave(m, nil)
			}
		})
	}
}

// BenchmarkDM sends a direct message to another member; the timer covers
// the lookup, encoding and enqueueing to both target and sender.
func BenchmarkDM(b *testing.B) {
	h := newHub(b, Config{})
	from, to := &countMember{name: "alice"}, &countMember{name: "bob"}
	register(h, from.name, from)
	register(h, to.name, to)
	target, text := []byte("bob"), []byte("see you at eight")
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if err := dm(h, from, target, text); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHistoryCompact is the sweep's cost per kept message moved out of
// its pooled buffer (done once per message, off the send path).
func BenchmarkHistoryCompact(b *testing.B) {
	text := []byte("a typical chat line of some sixty bytes, give or take a few.")
	var hist history
	hist.max = 1000
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s := uint64(i + 1)
		hist.add(protocol.Msg("bench", "alice", text, s, 1763770000123), s, 0)
		hist.compact()
	}
	hist.clear()
}
