package cluster

import (
	"testing"
	"time"

	"nbchat/loop"
)

// BenchmarkRoundTrip measures one message from a sender to a receiver in
// the same room, one at a time: the latency a cluster adds. ns/op is the
// time from the send to the receiver reading the message.
//
//	go test -run '^$' -bench RoundTrip -benchtime 2000x ./cluster
func BenchmarkRoundTrip(b *testing.B) {
	_, url := startNATS(b, 0)
	var nodes []*testNode
	for _, name := range []string{"n1", "n2", "n3"} {
		// History in memory: this measures the network, not the disk.
		nodes = append(nodes, startNodeWith(b, url, name, false))
	}
	for _, tn := range nodes {
		for len(tn.node.Nodes()) != 3 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	owner := roomOwnedBy(b, nodes[0], "n1")
	b.Run("cluster-owner-to-owner", func(b *testing.B) { roundTrips(b, nodes[0].addr, nodes[0].addr, owner) })
	b.Run("cluster-owner-to-mirror", func(b *testing.B) { roundTrips(b, nodes[0].addr, nodes[1].addr, owner) })
	b.Run("cluster-mirror-to-owner", func(b *testing.B) { roundTrips(b, nodes[1].addr, nodes[0].addr, owner) })
	b.Run("cluster-mirror-to-same-mirror", func(b *testing.B) { roundTrips(b, nodes[1].addr, nodes[1].addr, owner) })
	b.Run("cluster-mirror-to-other-mirror", func(b *testing.B) { roundTrips(b, nodes[1].addr, nodes[2].addr, owner) })
	b.Run("single-node", func(b *testing.B) {
		srv, err := loop.New(loop.Config{Addr: "127.0.0.1:0", Logger: quiet, RateBurst: -1})
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = srv.Shutdown(b.Context()) })
		roundTrips(b, srv.Addr(), srv.Addr(), "lobby")
	})
}

var benchSeq int

func roundTrips(b *testing.B, fromAddr, toAddr, room string) {
	benchSeq++
	from := connect(b, fromAddr, "s"+itoa(benchSeq))
	to := connect(b, toAddr, "r"+itoa(benchSeq))
	from.join(room)
	to.join(room)
	go func() {
		for range from.msgs {
		}
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from.send(`{"type":"msg","room":%q,"text":"x"}`, room)
		to.await("msg", nil)
	}
	b.StopTimer()
	from.close()
	to.close()
}

func itoa(i int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}
