package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as a worker process, because the
// multi-process test re-executes os.Executable(), which is this binary.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

func TestMaskRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70000} {
		payload := bytes.Repeat([]byte("abcdefghij"), n/10+1)[:n]
		key := uint32(0xA1B2C3D4)
		f := appendMasked(nil, opText, payload, key)
		if f[0] != 0x81 || f[1]&0x80 == 0 {
			t.Fatalf("n=%d: header %x: want FIN+text and the mask bit", n, f[:2])
		}
		// Unmask by the RFC's byte-wise definition, independent of maskBytes.
		got, used, err := parseFrame(append([]byte(nil), f...))
		if err != nil || used != len(f) || !bytes.Equal(got.payload, payload) {
			t.Fatalf("n=%d: round trip failed: used %d of %d, err %v", n, used, len(f), err)
		}
		hl := len(f) - n
		var k [4]byte
		binary.BigEndian.PutUint32(k[:], key)
		if !bytes.Equal(f[hl-4:hl], k[:]) {
			t.Fatalf("n=%d: mask key not on the wire", n)
		}
		for i := 0; i < n; i++ {
			if f[hl+i]^k[i%4] != payload[i] {
				t.Fatalf("n=%d: byte %d masked wrongly", n, i)
			}
		}
	}
}

func serverFrame(op byte, p []byte) []byte {
	h := []byte{0x80 | op}
	switch {
	case len(p) < 126:
		h = append(h, byte(len(p)))
	case len(p) <= 0xFFFF:
		h = append(h, 126, byte(len(p)>>8), byte(len(p)))
	default:
		h = binary.BigEndian.AppendUint64(append(h, 127), uint64(len(p)))
	}
	return append(h, p...)
}

func TestParseFrameSplit(t *testing.T) {
	p := bytes.Repeat([]byte{'x'}, 300)
	f := serverFrame(opText, p)
	for i := 0; i < len(f); i++ {
		if _, n, err := parseFrame(f[:i]); n != 0 || err != nil {
			t.Fatalf("prefix %d: n=%d err=%v, want incomplete", i, n, err)
		}
	}
	if got, n, _ := parseFrame(f); n != len(f) || !bytes.Equal(got.payload, p) {
		t.Fatal("whole frame not parsed")
	}
}

const msgJSON = `{"type":"msg","room":"ltabc-r3","from":"ltabc-7","text":"1763770000123456789 7 42 xxxx","seq":17,"ts":1763770000123}`

func TestScanJSON(t *testing.T) {
	var f fields
	if !scanJSON([]byte(msgJSON), &f) {
		t.Fatal("scan failed")
	}
	if string(f.typ) != "msg" || string(f.room) != "ltabc-r3" || string(f.from) != "ltabc-7" || f.seq != 17 || !f.hasSeq {
		t.Fatalf("bad fields: %+v", f)
	}
	if roomIndex(f.room) != 3 {
		t.Fatalf("room index %d", roomIndex(f.room))
	}
	ts, s, n, ok := parseText(f.text)
	if !ok || ts != 1763770000123456789 || s != 7 || n != 42 {
		t.Fatalf("text: %d %d %d %v", ts, s, n, ok)
	}
	// Values we skip may hold anything JSON allows; key order is free.
	odd := `{ "members":["a","b\"}]"],"x":{"y":[1,{"z":"}"}]},"seq": 5 ,"type":"joined","room":"r\"q","count":2}`
	if !scanJSON([]byte(odd), &f) || string(f.typ) != "joined" || f.seq != 5 || f.count != 2 || string(f.room) != `r\"q` {
		t.Fatalf("odd: %+v", f)
	}
	for _, bad := range []string{``, `[]`, `{"type":"msg"`, `{"type":msg}x`, `{"a":"unterminated}`} {
		if scanJSON([]byte(bad), &f) && bad != `{"type":msg}x` {
			t.Errorf("%q: scanned as valid", bad)
		}
	}
}

func TestScanAllocs(t *testing.T) {
	b := []byte(msgJSON)
	var f fields
	allocs := testing.AllocsPerRun(1000, func() {
		scanJSON(b, &f)
		parseText(f.text)
	})
	if allocs != 0 {
		t.Fatalf("scanJSON+parseText allocate %v times per msg frame", allocs)
	}
}

// testClient is a client wired to a minimal gen, without sockets.
func testClient() *client {
	g := &gen{cfg: &Config{Proto: "chat", Scenario: "rooms", RunID: "ltabc"}}
	for i := range g.shards {
		g.shards[i].hist, g.shards[i].win = newHist(), newHist()
	}
	return &client{g: g, id: 1, room: 3, nextSeq: 1}
}

// TestParseAllocs covers the whole receive path of a delivery: frame
// header, JSON scan, seq check, latency, shard accounting.
func TestParseAllocs(t *testing.T) {
	c := testClient()
	frames := make([][]byte, 200)
	for i := range frames {
		j := strings.Replace(msgJSON, `"seq":17`, `"seq":`+itoa(i+1), 1)
		j = strings.Replace(j, "1763770000123456789", itoa(int(time.Now().UnixNano())), 1)
		frames[i] = serverFrame(opText, []byte(j))
	}
	k := 0
	allocs := testing.AllocsPerRun(100, func() {
		_ = c.Parse(frames[k])
		k++
	})
	if allocs != 0 {
		t.Fatalf("Parse allocates %v times per delivery", allocs)
	}
	if s := c.g.shards[1].c; s.Deliv != int64(k) || s.Gaps+s.Dups+s.Reorders != 0 {
		t.Fatalf("counts %+v after %d frames", s, k)
	}
}

func itoa(i int) string { return string(appendInt(nil, int64(i))) }

func TestSeqChecker(t *testing.T) {
	cases := []struct {
		seqs                 []int64
		gaps, dups, reorders int64
	}{
		{[]int64{1, 2, 3, 4}, 0, 0, 0},
		{[]int64{1, 3, 4}, 1, 0, 0},
		{[]int64{1, 5}, 3, 0, 0},
		{[]int64{1, 2, 2, 3}, 0, 1, 0},
		{[]int64{1, 3, 2, 4}, 0, 0, 1},
		{[]int64{1, 4, 3, 3}, 1, 1, 1},
	}
	for _, tc := range cases {
		c := testClient()
		var b batch
		for _, s := range tc.seqs {
			c.checkSeq(s, true, &b)
		}
		if b.Gaps != tc.gaps || b.Dups != tc.dups || b.Reorders != tc.reorders {
			t.Errorf("%v: gaps %d dups %d reorders %d, want %d %d %d", tc.seqs, b.Gaps, b.Dups, b.Reorders, tc.gaps, tc.dups, tc.reorders)
		}
	}
	// A joined without seq makes the first message the base.
	c := testClient()
	c.nextSeq = -1
	var b batch
	for _, s := range []int64{40, 41, 42} {
		c.checkSeq(s, true, &b)
	}
	if b.Gaps+b.Dups+b.Reorders != 0 {
		t.Fatalf("first message as base: %+v", b.counts)
	}
}

func TestHistMerge(t *testing.T) {
	a, b, all := newHist(), newHist(), newHist()
	for i := int64(1); i < 200000; i += 7 {
		v := i*i%9_000_000 + 1
		_ = all.RecordValue(v)
		if i%3 == 0 {
			_ = a.RecordValue(v)
		} else {
			_ = b.RecordValue(v)
		}
	}
	// Through the wire format, as between processes.
	m := newHist()
	for _, h := range []*histJSON{ptr(exportHist(a)), ptr(exportHist(b))} {
		j, _ := json.Marshal(h)
		var back histJSON
		_ = json.Unmarshal(j, &back)
		m.Merge(importHist(back))
	}
	if !m.Equals(all) || m.TotalCount() != all.TotalCount() || m.ValueAtQuantile(99.9) != all.ValueAtQuantile(99.9) {
		t.Fatalf("merge differs: %d vs %d values, p99.9 %d vs %d", m.TotalCount(), all.TotalCount(), m.ValueAtQuantile(99.9), all.ValueAtQuantile(99.9))
	}
}

func ptr[T any](v T) *T { return &v }

func TestParseMetrics(t *testing.T) {
	in := "# HELP x\nprocess_resident_memory_bytes 1.5e+07\ngo_goroutines 9\nnbchat_deliveries_total{room=\"a\"} 10\nnbchat_deliveries_total{room=\"b\"} 5 1700000000\n"
	s := parseMetrics(strings.NewReader(in))
	if s.RSS != 1.5e7 || s.Goroutines != 9 || s.Deliveries != 15 {
		t.Fatalf("%+v", s)
	}
}

// smokeConfig is a small run against a fake server.
func smokeConfig(t *testing.T, url string) *Config {
	cfg, err := parseFlags([]string{"-url", url, "-conns", "200", "-rooms", "10", "-senders", "10", "-msg-rate", "5",
		"-duration", "2s", "-hold", "0s", "-drain-timeout", "5s", "-close-timeout", "3s", "-progress", "off",
		"-out", t.TempDir()}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func readReport(t *testing.T, dir string) *Report {
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "report.html")); err != nil {
		t.Fatal(err)
	}
	return &r
}

func runAndRead(t *testing.T, cfg *Config) (int, *Report, string) {
	var out bytes.Buffer
	code := run(cfg, &out, os.Stderr)
	t.Log("\n" + out.String())
	return code, readReport(t, cfg.Out), out.String()
}

func TestSmokeRooms(t *testing.T) {
	fs := startFake(t, 0, false)
	code, r, _ := runAndRead(t, smokeConfig(t, fs.URL))
	d := r.Deliveries
	if code != 0 || d.Lost != 0 || d.Expected == 0 || d.Received != d.Expected || r.Connect.Joined != 200 {
		t.Fatalf("exit %d, joined %d, expected %d, received %d, lost %d", code, r.Connect.Joined, d.Expected, d.Received, d.Lost)
	}
	if r.Latency.Count != d.Received || !r.Server.Available || len(r.Series) == 0 {
		t.Fatalf("latency samples %d, server metrics %v, series %d", r.Latency.Count, r.Server.Available, len(r.Series))
	}
}

func TestInjectedGapFails(t *testing.T) {
	fs := startFake(t, 3, false) // every room skips seq 3
	code, r, out := runAndRead(t, smokeConfig(t, fs.URL))
	if code != 1 || r.Deliveries.Gaps == 0 || r.Verdict.OK || !strings.Contains(out, "FAIL: gaps:") {
		t.Fatalf("exit %d, gaps %d: an injected gap must fail the run", code, r.Deliveries.Gaps)
	}
}

func TestWorkersAndDM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	fs := startFake(t, 0, false)
	cfg := smokeConfig(t, fs.URL)
	cfg.Scenario, cfg.PerProc, cfg.Senders = "dm", 100, 40
	code, r, _ := runAndRead(t, cfg)
	if code != 0 || r.Processes != 2 || r.Deliveries.Lost != 0 || r.Deliveries.Received == 0 {
		t.Fatalf("exit %d, processes %d, received %d, lost %d", code, r.Processes, r.Deliveries.Received, r.Deliveries.Lost)
	}
}

// stormConfig drops every reader a third into the traffic.
func stormConfig(t *testing.T, url string) *Config {
	cfg := smokeConfig(t, url)
	cfg.Scenario = "storm"
	cfg.StormAt = cfg.Duration / 3
	return cfg
}

func TestStormRejoinsWithSince(t *testing.T) {
	fs := startFake(t, 0, false)
	fs.refuseEvery = 4
	code, r, _ := runAndRead(t, stormConfig(t, fs.URL))
	st, d := r.Storm, r.Deliveries
	if st == nil {
		t.Fatal("no storm in the report")
	}
	// 190 readers (200 minus 10 senders), every fourth rejoin refused once.
	if code != 0 || st.Dropped != 190 || st.Rejoined != 190 || st.Refused["http_503"] == 0 || st.Attempts != 190+sumMap(st.Refused) {
		t.Fatalf("exit %d, dropped %d, rejoined %d, attempts %d, refused %v", code, st.Dropped, st.Rejoined, st.Attempts, st.Refused)
	}
	if d.Lost != 0 || d.Gaps != 0 || d.Dups != 0 || d.Recovered == 0 || d.Received != d.Expected {
		t.Fatalf("lost %d, gaps %d, dups %d, recovered %d, received %d of %d", d.Lost, d.Gaps, d.Dups, d.Recovered, d.Received, d.Expected)
	}
	// Retry-After 1 s was waited out.
	if st.Rejoin.Max < 1_000_000 {
		t.Fatalf("the last rejoin came %d us after the drop: a 503's Retry-After was not obeyed", st.Rejoin.Max)
	}
}

// TestStormRetriesARejoinClosedEarly: a rejoin whose socket closes before
// its joined reply is tried again, as a client would, and counted among
// the refusals; nothing is lost.
func TestStormRetriesARejoinClosedEarly(t *testing.T) {
	fs := startFake(t, 0, false)
	fs.closeEvery = 10
	code, r, _ := runAndRead(t, stormConfig(t, fs.URL))
	st, d := r.Storm, r.Deliveries
	if code != 0 || st == nil || st.Rejoined != st.Dropped || st.Refused["closed_before_joined"] == 0 {
		t.Fatalf("exit %d, storm %+v: want every reader back and the early closes counted", code, st)
	}
	if d.Lost != 0 || d.Dups != 0 || d.Received != d.Expected {
		t.Fatalf("lost %d, dups %d, received %d of %d", d.Lost, d.Dups, d.Received, d.Expected)
	}
}

func TestStormMissedReplayFails(t *testing.T) {
	fs := startFake(t, 0, false)
	fs.replayGap = true // each replay after since leaves its first message out
	code, r, out := runAndRead(t, stormConfig(t, fs.URL))
	if code != 1 || r.Deliveries.Gaps == 0 || r.Deliveries.Lost == 0 || !strings.Contains(out, "FAIL: loss:") {
		t.Fatalf("exit %d, gaps %d, lost %d: a message missing from the recovery must fail the run", code, r.Deliveries.Gaps, r.Deliveries.Lost)
	}
}

func TestRawAndChurn(t *testing.T) {
	fs := startFake(t, 0, true)
	cfg := smokeConfig(t, fs.URL)
	cfg.Proto, cfg.Rooms, cfg.Conns, cfg.Senders = "raw", 1, 50, 2
	if code, r, _ := runAndRead(t, cfg); code != 0 || r.Deliveries.Lost != 0 || r.Deliveries.Received == 0 {
		t.Fatalf("raw: exit %d, received %d lost %d", code, r.Deliveries.Received, r.Deliveries.Lost)
	}
	fs = startFake(t, 0, false)
	cfg = smokeConfig(t, fs.URL)
	cfg.Scenario, cfg.ChurnRate, cfg.ChurnLife = "churn", 50, 500*time.Millisecond
	code, r, _ := runAndRead(t, cfg)
	if code != 0 || r.Churn.Joined < 50 || r.Deliveries.Lost != 0 {
		t.Fatalf("churn: exit %d, churn joined %d, lost %d", code, r.Churn.Joined, r.Deliveries.Lost)
	}
}

// BenchmarkReceive measures the generator's receive path per delivery: a
// 64 KiB read full of msg frames, as the poller hands it over.
func BenchmarkReceive(b *testing.B) {
	c := testClient()
	now := itoa(int(time.Now().UnixNano()))
	var buf []byte
	seq := 1
	for len(buf) < 60<<10 {
		j := strings.Replace(strings.Replace(msgJSON, `"seq":17`, `"seq":`+itoa(seq), 1), "1763770000123456789", now, 1)
		buf = append(buf, serverFrame(opText, []byte(j))...)
		seq++
	}
	perRead := seq - 1
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		c.nextSeq = 1
		_ = c.Parse(buf)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perRead), "ns/delivery")
}

func TestPlans(t *testing.T) {
	for _, tc := range []struct {
		n, per, procs int
		silent        bool
	}{{200, 19000, 1, false}, {19000, 19000, 1, false}, {19001, 19000, 2, false}, {50000, 19000, 3, false}, {201, 100, 3, false},
		// A silent storm holds two sockets per dropped reader.
		{10000, 19000, 2, true}, {9000, 19000, 1, true}} {
		cfg := &Config{Conns: tc.n, PerProc: tc.per, Rate: 1000, Scenario: "rooms"}
		if tc.silent {
			cfg.Scenario, cfg.StormSilent = "storm", true
		}
		ps := plans(cfg)
		next := 0
		for _, p := range ps {
			limit := tc.per
			if tc.silent {
				limit = tc.per / 2
			}
			if p.Lo != next || p.Hi <= p.Lo || p.Lo%2 != 0 || p.Hi-p.Lo > limit+1 {
				t.Fatalf("%+v: bad slice %+v", tc, p)
			}
			next = p.Hi
		}
		if len(ps) != tc.procs || next != tc.n {
			t.Fatalf("%+v: %d processes covering %d", tc, len(ps), next)
		}
	}
}

// TestHistoryReplayAfterJoined: the room history a join replays is neither
// a delivery nor a duplicate; a message seen twice still is one, and a
// churn client's duplicate is not taken off the static clients' count.
func TestHistoryReplayAfterJoined(t *testing.T) {
	msg := func(seq int) []byte {
		return []byte(strings.Replace(msgJSON, `"seq":17`, `"seq":`+itoa(seq), 1))
	}
	for _, kind := range []uint8{kindStatic, kindChurn} {
		c := testClient()
		c.kind = kind
		c.resolved.Store(true) // the ramp's bookkeeping is not under test
		var b batch
		b.sh = &c.g.shards[0]
		c.onMessage([]byte(`{"type":"joined","room":"ltabc-r3","count":2,"seq":17}`), &b)
		for _, seq := range []int{15, 16, 17, 18, 19} {
			c.onMessage(msg(seq), &b)
		}
		if b.Replayed != 3 || b.Dups != 0 || b.Gaps != 0 || b.Deliv+b.ChurnDeliv != 2 {
			t.Fatalf("kind %d: replayed %d, dups %d, gaps %d, deliveries %d+%d; want 3 replayed, 2 deliveries",
				kind, b.Replayed, b.Dups, b.Gaps, b.Deliv, b.ChurnDeliv)
		}
		c.onMessage(msg(16), &b)
		wantChurn := int64(0)
		if kind == kindChurn {
			wantChurn = 1
		}
		if b.Dups != 1 || b.ChurnDups != wantChurn {
			t.Fatalf("kind %d: a replayed seq again: dups %d, churn dups %d", kind, b.Dups, b.ChurnDups)
		}
	}
}
