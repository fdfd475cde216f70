package loop

import (
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
)

// upgradeRate admits at most rate upgrades a second, with bursts of one
// second's worth (GCRA: one atomic timestamp, no lock). After a restart
// every client reconnects at once; past the rate they get 503 with a
// Retry-After spread over a few seconds, so the storm comes back flattened
// instead of all at once.
type upgradeRate struct {
	interval int64 // ns between upgrades at the rate
	burst    int64 // ns of credit a quiet spell may save up
	tat      atomic.Int64
}

func newUpgradeRate(rate float64) *upgradeRate {
	if rate <= 0 {
		return nil
	}
	interval := int64(float64(time.Second) / rate)
	return &upgradeRate{interval: max(interval, 1), burst: max(int64(time.Second), interval)}
}

// allow takes one upgrade's credit at now (ns), if there is any.
func (u *upgradeRate) allow(now int64) bool {
	if u == nil {
		return true
	}
	for {
		tat := u.tat.Load()
		next := max(tat, now) + u.interval
		if next-now > u.burst {
			return false
		}
		if u.tat.CompareAndSwap(tat, next) {
			return true
		}
	}
}

// refund gives back the credit of an upgrade refused after allow.
func (u *upgradeRate) refund() {
	if u != nil {
		u.tat.Add(-u.interval)
	}
}

// retryAfterSpread is the Retry-After, 1-5 seconds at random, given to
// upgrades refused for rate.
func retryAfterSpread() string { return strconv.Itoa(1 + rand.IntN(5)) }
