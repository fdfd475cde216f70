package room

import "time"

// queuePresence schedules r's coalesced presence for the next tick.
func (h *Hub) queuePresence(r *Room) {
	h.pmu.Lock()
	h.pending = append(h.pending, r)
	h.pmu.Unlock()
}

// presenceLoop sends coalesced presence once per interval, and sweeps. One
// goroutine serves every room, so big rooms cost no goroutine of their own.
func (h *Hub) presenceLoop() {
	defer close(h.done)
	t := time.NewTicker(h.cfg.PresenceInterval)
	defer t.Stop()
	var batch []*Room
	sweepEvery := max(1, int(h.cfg.SweepInterval/h.cfg.PresenceInterval))
	for tick := 1; ; tick++ {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		if tick%sweepEvery == 0 {
			now := time.Now().UnixMilli()
			h.sweepRooms(now)
			h.sweepUsers(now)
			h.expireStored(now)
		}
		h.presenceTick.Add(1)
		h.pmu.Lock()
		batch, h.pending = h.pending, batch[:0]
		h.pmu.Unlock()
		for i, r := range batch {
			r.flushPresence()
			batch[i] = nil
		}
	}
}
