package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, 1 µs to 10 min, 3 significant
// digits: exact enough for p99.9 and mergeable bucket for bucket.
const (
	histMin  = 1
	histMax  = 600_000_000
	histSigs = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSigs) }

// newWinHist is for the per-tick p99 only: 2 digits keep it 8x smaller.
func newWinHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, 2) }

// batch accumulates what one Parse call saw, so the shared shard is locked
// once per read(2) instead of once per frame.
type batch struct {
	now int64
	counts
	lat   [256]int64
	nlat  int
	sh    *recvShard
	notes []string
	slot  int32 // 1 + the client's index in recvShard.roomNode; 0: not counted there
}

// counts are the receive-side counters, summed per shard, process and run.
type counts struct {
	Deliv      int64 `json:"deliveries"`
	ChurnDeliv int64 `json:"churn_deliveries"`
	Presence   int64 `json:"presence"`
	Other      int64 `json:"other_frames"`
	ProtoErr   int64 `json:"protocol_errors"`
	Misrouted  int64 `json:"misrouted"`
	NoStamp    int64 `json:"no_timestamp"`
	NoSeq      int64 `json:"no_seq"`
	Gaps       int64 `json:"gaps"`
	Dups       int64 `json:"duplicates"`
	ChurnDups  int64 `json:"churn_duplicates"` // of Dups, seen by churn clients
	Reorders   int64 `json:"reorders"`
	Replayed   int64 `json:"history_replayed"` // history after a joined reply, not deliveries
	// Storm: deliveries that came as history after a rejoin with since
	// (in Deliv, not in the latency), and rejoins the server could not
	// recover from history.
	Recovered   int64 `json:"recovered"`
	Unrecovered int64 `json:"rejoins_not_recovered"`
}

func (c *counts) add(o *counts) {
	c.Deliv += o.Deliv
	c.ChurnDeliv += o.ChurnDeliv
	c.Presence += o.Presence
	c.Other += o.Other
	c.ProtoErr += o.ProtoErr
	c.Misrouted += o.Misrouted
	c.NoStamp += o.NoStamp
	c.NoSeq += o.NoSeq
	c.Gaps += o.Gaps
	c.Dups += o.Dups
	c.ChurnDups += o.ChurnDups
	c.Reorders += o.Reorders
	c.Replayed += o.Replayed
	c.Recovered += o.Recovered
	c.Unrecovered += o.Unrecovered
}

// addLatency records one latency (µs), flushing when the batch is full.
func (b *batch) addLatency(us int64) {
	if b.nlat == len(b.lat) {
		b.sh.flushLat(b)
	}
	b.lat[b.nlat] = us
	b.nlat++
}

// note keeps a human-readable example of a semantic problem (rare path).
func (b *batch) note(format string, args ...any) {
	if len(b.notes) < 4 {
		b.notes = append(b.notes, fmt.Sprintf(format, args...))
	}
}

// recvShard is one of a few lock-striped receive accumulators; a connection
// always uses the same one.
type recvShard struct {
	mu    sync.Mutex
	c     counts
	hist  *hdrhistogram.Histogram // every delivery to a static, reading client
	win   *hdrhistogram.Histogram // the same since the last tick
	notes []string
	// roomNode counts unique deliveries per (room, node) with several -url
	// nodes: index room*nodes + node; nil otherwise.
	roomNode []int64
	_        [64]byte // keep shards on separate cache lines
}

func (s *recvShard) flushLat(b *batch) {
	s.mu.Lock()
	s.recordLocked(b)
	s.mu.Unlock()
}

func (s *recvShard) recordLocked(b *batch) {
	for _, v := range b.lat[:b.nlat] {
		_ = s.hist.RecordValue(v) // values over histMax are dropped; max stays 10 min
		_ = s.win.RecordValue(v)
	}
	b.nlat = 0
}

func (s *recvShard) flush(b *batch) {
	if b.counts == (counts{}) && b.nlat == 0 && b.notes == nil {
		return
	}
	s.mu.Lock()
	s.recordLocked(b)
	s.c.add(&b.counts)
	if b.slot > 0 && s.roomNode != nil {
		s.roomNode[b.slot-1] += b.Deliv - b.Dups
	}
	if len(s.notes) < 10 {
		s.notes = append(s.notes, b.notes...)
	}
	s.mu.Unlock()
}

// histJSON is an HDR histogram on the wire between processes: sparse
// (index, count) pairs, since almost every bucket is empty.
type histJSON struct {
	Lo, Hi int64
	Sig    int64
	Len    int
	Idx    []int32
	Cnt    []int64
}

func exportHist(h *hdrhistogram.Histogram) histJSON {
	s := h.Export()
	j := histJSON{Lo: s.LowestTrackableValue, Hi: s.HighestTrackableValue, Sig: s.SignificantFigures, Len: len(s.Counts)}
	for i, c := range s.Counts {
		if c != 0 {
			j.Idx = append(j.Idx, int32(i))
			j.Cnt = append(j.Cnt, c)
		}
	}
	return j
}

func importHist(j histJSON) *hdrhistogram.Histogram {
	if j.Len == 0 {
		return newHist()
	}
	counts := make([]int64, j.Len)
	for k, i := range j.Idx {
		if int(i) < len(counts) && k < len(j.Cnt) {
			counts[i] = j.Cnt[k]
		}
	}
	return hdrhistogram.Import(&hdrhistogram.Snapshot{
		LowestTrackableValue: j.Lo, HighestTrackableValue: j.Hi, SignificantFigures: j.Sig, Counts: counts,
	})
}

// latSummary is the usual percentile line, in microseconds.
type latSummary struct {
	Count int64   `json:"count"`
	Min   int64   `json:"min_us"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P99   int64   `json:"p99_us"`
	P999  int64   `json:"p99_9_us"`
	Max   int64   `json:"max_us"`
	Mean  float64 `json:"mean_us"`
}

func summarize(h *hdrhistogram.Histogram) latSummary {
	if h.TotalCount() == 0 {
		return latSummary{}
	}
	return latSummary{
		Count: h.TotalCount(), Min: h.Min(), Max: h.Max(), Mean: h.Mean(),
		P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90), P99: h.ValueAtQuantile(99), P999: h.ValueAtQuantile(99.9),
	}
}

// percentileCurve samples the histogram for the latency distribution chart
// (x = percentile, plotted on a 1/(1-p) scale).
func percentileCurve(h *hdrhistogram.Histogram) [][2]float64 {
	if h.TotalCount() == 0 {
		return nil
	}
	var out [][2]float64
	for _, p := range []float64{0, 10, 25, 50, 75, 90, 95, 97.5, 99, 99.5, 99.75, 99.9, 99.95, 99.99, 99.995, 99.999, 100} {
		out = append(out, [2]float64{p, float64(h.ValueAtQuantile(p))})
	}
	return out
}

// addMap adds counts by name.
func addMap(dst map[string]int64, src map[string]int64) {
	for k, v := range src {
		dst[k] += v
	}
}

// settledRSS is the resident memory after a GC that returns freed pages:
// what the sockets cost, not the garbage the handshakes left behind.
func settledRSS() int64 {
	debug.FreeOSMemory()
	rss, _ := procSelf()
	return rss
}

// procSelf reads this process's resident memory and CPU seconds.
func procSelf() (rss int64, cpu float64) {
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		f := strings.Fields(string(b))
		if len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			rss = pages * int64(os.Getpagesize())
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu = float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	}
	return rss, cpu
}
