package room

import "time"

// queuePresence schedules r's coalesced presence for the next tick.
func (h *Hub) queuePresence(r *Room) {
	h.pmu.Lock()
	h.pending = append(h.pending, r)
	h.pmu.Unlock()
}

// presenceLoop sends coalesced presence once per interval. One goroutine
// serves every room, so big rooms cost no goroutine of their own.
func (h *Hub) presenceLoop() {
	defer close(h.done)
	t := time.NewTicker(h.cfg.PresenceInterval)
	defer t.Stop()
	var batch []*Room
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.pmu.Lock()
		batch, h.pending = h.pending, batch[:0]
		h.pmu.Unlock()
		for i, r := range batch {
			r.flushPresence()
			batch[i] = nil
		}
	}
}
