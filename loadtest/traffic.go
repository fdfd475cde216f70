package main

import (
	"sync"
	"time"
)

// trafficResult is what a process reports when its senders stop.
type trafficResult struct {
	Sent     int64   `json:"sent"`
	SentRoom []int64 `json:"sent_room"`
	Late     int64   `json:"late_skipped"`
}

// traffic runs the senders (and churn) of this process for -duration.
// members holds the reading static members per room over all processes:
// the number of deliveries each room message must cause.
func (g *gen) traffic(members []int64) trafficResult {
	g.mu.Lock()
	g.members = append([]int64(nil), members...)
	g.mu.Unlock()
	start := time.Now()
	stop := start.Add(g.cfg.Duration)
	var wg sync.WaitGroup
	if g.cfg.Scenario == "churn" && g.cfg.ChurnRate > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); g.churn(start, stop) }()
	}
	if g.cfg.Scenario == "storm" {
		wg.Add(1)
		go func() { defer wg.Done(); g.storm(start, stop) }()
	}
	res := g.send(start, stop)
	wg.Wait()
	return res
}

// sendBufs are the sender's reused buffers: nothing is allocated per message.
type sendBufs struct {
	text, payload, frame []byte
	rnd                  maskRand
}

// send paces every local sender at -msg-rate, spread evenly over the
// interval, from one goroutine; nbio's Write never blocks.
func (g *gen) send(start, stop time.Time) trafficResult {
	cfg := g.cfg
	var res trafficResult
	res.SentRoom = make([]int64, len(g.sentRoom))
	var senders []*client
	for _, c := range g.clients {
		if c == nil || !isSender(cfg, int(c.id)) || !c.joinedOK.Load() || !c.open.Load() {
			continue
		}
		if cfg.Scenario == "dm" {
			// A DM to a partner who never connected is only an error frame.
			if p := g.client(int(c.id ^ 1)); p == nil || !p.joinedOK.Load() {
				continue
			}
		}
		senders = append(senders, c)
	}
	if len(senders) == 0 || cfg.MsgRate <= 0 {
		time.Sleep(time.Until(stop))
		return res
	}
	interval := time.Duration(float64(time.Second) / cfg.MsgRate)
	next := make([]time.Time, len(senders))
	for j := range next {
		next[j] = start.Add(time.Duration(j) * interval / time.Duration(len(senders)))
	}
	b := &sendBufs{rnd: maskRand{s: uint64(start.UnixNano()) | 1}}
	for now := time.Now(); now.Before(stop); now = time.Now() {
		for j, c := range senders {
			if now.Sub(next[j]) > 2*time.Second {
				// Far behind (a stalled process): skip instead of bursting
				// past the server's rate limit.
				missed := int64(now.Sub(next[j]) / interval)
				res.Late += missed
				next[j] = next[j].Add(time.Duration(missed) * interval)
			}
			for !next[j].After(now) && next[j].Before(stop) {
				if g.sendOne(c, b) && c.room >= 0 {
					res.SentRoom[c.room]++
				}
				next[j] = next[j].Add(interval)
			}
		}
		time.Sleep(time.Millisecond)
	}
	res.Sent = g.sent.Load()
	g.mu.Lock()
	copy(g.sentRoom, res.SentRoom)
	g.mu.Unlock()
	return res
}

// sendOne builds one masked frame in b and writes it. The expected delivery
// count is raised before the write, so a fast echo can never be counted
// ahead of its expectation.
func (g *gen) sendOne(c *client, b *sendBufs) bool {
	nc := c.conn.Load()
	if nc == nil || !c.open.Load() {
		return false
	}
	cfg := g.cfg
	b.text = appendText(b.text[:0], time.Now().UnixNano(), int(c.id), int(c.sentN), cfg.Size)
	p := b.payload[:0]
	switch {
	case cfg.Proto == "raw":
		p = append(p, b.text...)
	case cfg.Scenario == "dm":
		p = append(p, `{"type":"dm","to":"`...)
		p = append(p, g.cfg.RunID...)
		p = append(p, '-')
		p = appendInt(p, int64(c.id^1))
		p = append(p, `","text":"`...)
		p = append(p, b.text...)
		p = append(p, `"}`...)
	default:
		p = append(p, `{"type":"msg","room":"`...)
		p = append(p, g.cfg.RunID...)
		p = append(p, "-r"...)
		p = appendInt(p, int64(c.room))
		p = append(p, `","text":"`...)
		p = append(p, b.text...)
		if cfg.IDs {
			p = append(p, `","id":"`...)
			p = appendInt(p, int64(c.sentN))
		}
		p = append(p, `"}`...)
	}
	b.payload = p
	b.frame = appendMasked(b.frame[:0], opText, p, b.rnd.next())
	g.mu.Lock()
	per := g.perMsgLocked(c)
	g.mu.Unlock()
	g.expected.Add(per)
	if _, err := nc.Write(b.frame); err != nil {
		g.expected.Add(-per)
		return false
	}
	c.sentN++
	g.sent.Add(1)
	return true
}

func appendInt(b []byte, v int64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// churn opens -churn-rate connections per second (this process's share),
// each into a room round-robin, and closes each after -churn-life. Churn
// clients are checked for seq order but not counted in expected deliveries:
// their membership edges race with messages in flight.
func (g *gen) churn(start, stop time.Time) {
	cfg := g.cfg
	maxN := int(g.plan.ChurnRate*cfg.Duration.Seconds()) + 1
	jobs := make(chan *client, 64)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := maskRand{s: seed}
			for c := range jobs {
				g.dial(c, &r)
			}
		}(uint64(start.UnixNano()) + uint64(w))
	}
	var live []*client
	opened := 0
	for now := time.Now(); now.Before(stop) && opened < maxN; now = time.Now() {
		want := min(maxN, int(now.Sub(start).Seconds()*g.plan.ChurnRate)+1)
		for ; opened < want; opened++ {
			id := g.plan.ChurnBase + opened
			room := -1
			if cfg.Rooms > 0 {
				room = opened % cfg.Rooms
			}
			c := &client{g: g, id: int32(id), room: int32(room), kind: kindChurn, nextSeq: -1, born: now.UnixNano()}
			live = append(live, c)
			g.churnDialed.Add(1)
			jobs <- c
		}
		// live is in dial order, so the expired ones are a prefix.
		k := 0
		for ; k < len(live) && now.UnixNano()-live[k].born > int64(cfg.ChurnLife); k++ {
			g.closeClient(live[k])
		}
		live = live[k:]
		time.Sleep(5 * time.Millisecond)
	}
	close(jobs)
	wg.Wait()
	g.mu.Lock()
	g.churnLive = live
	g.mu.Unlock()
}

// closeChurn sends close frames to the churn clients still open.
func (g *gen) closeChurn() {
	g.mu.Lock()
	live := g.churnLive
	g.mu.Unlock()
	for _, c := range live {
		g.closeClient(c)
	}
}

func (g *gen) closeChurnForce() {
	g.mu.Lock()
	live := g.churnLive
	g.mu.Unlock()
	for _, c := range live {
		if nc := c.conn.Load(); nc != nil && c.open.Load() {
			g.forcedCloses.Add(1)
			_ = nc.Close()
		}
	}
}
