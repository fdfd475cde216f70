package cluster

import (
	"reflect"
	"testing"

	"nbchat/room"
)

func sampleEnvelope() *room.Envelope {
	return &room.Envelope{
		Op: room.OpPublish, Hops: 1, Node: "n1", Room: "lobby", Name: "alice", To: "bob",
		Ref: []byte("r1"), ID: []byte{}, Text: []byte("hello \x00 world"), After: nil,
		Seq: 1 << 40, TS: -5, Since: -1, Before: 17, Limit: 200,
		Frames: [][]byte{[]byte(`{"type":"msg"}`), {}, nil},
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	want := sampleEnvelope()
	var got room.Envelope
	if err := decodeEnvelope(appendEnvelope(nil, want), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, want) {
		t.Fatalf("decoded %+v\nwant    %+v", got, *want)
	}
	// An absent id and an empty one differ: only a message with an id is
	// acknowledged.
	if got.ID == nil || got.After != nil {
		t.Fatalf("nil and empty byte fields mixed up: ID %v After %v", got.ID, got.After)
	}
}

func TestEnvelopeTruncatedIsAnError(t *testing.T) {
	b := appendEnvelope(nil, sampleEnvelope())
	for n := range len(b) {
		var e room.Envelope
		if err := decodeEnvelope(b[:n], &e); err == nil {
			t.Fatalf("%d of %d bytes decoded without error", n, len(b))
		}
	}
	var e room.Envelope
	other := append([]byte{wireVersion + 1}, b[1:]...)
	if err := decodeEnvelope(other, &e); err == nil {
		t.Fatal("a message from another wire version decoded")
	}
}

func TestClaimReplyRoundTrip(t *testing.T) {
	want := room.ClaimReply{Seq: 42, Names: []string{"alice", "bob"},
		Hist: []room.HistEntry{{Seq: 41, TS: 1000, Payload: []byte("a")}, {Seq: 42, TS: 1001, Payload: []byte("b")}}}
	got, err := decodeClaimReply(appendClaimReply(nil, &want))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	b := appendClaimReply(nil, &want)
	for n := range len(b) {
		if _, err := decodeClaimReply(b[:n]); err == nil {
			t.Fatalf("%d of %d bytes decoded without error", n, len(b))
		}
	}
}

// FuzzDecodeEnvelope: whatever arrives from NATS, decoding returns an
// error or an envelope that encodes back to the same bytes; it never
// panics or allocates without bound.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(appendEnvelope(nil, sampleEnvelope()))
	f.Add([]byte{wireVersion})
	f.Add([]byte{wireVersion, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e room.Envelope
		if err := decodeEnvelope(b, &e); err != nil {
			return
		}
		var again room.Envelope
		if err := decodeEnvelope(appendEnvelope(nil, &e), &again); err != nil {
			t.Fatalf("re-encoding a decoded envelope fails: %v", err)
		}
		_, _ = decodeClaimReply(b)
	})
}
