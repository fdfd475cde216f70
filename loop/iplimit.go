package loop

import (
	"hash/maphash"
	"net/netip"
	"sync"
)

// ipConns counts open WebSocket connections per remote IP address, for
// Config.MaxConnsPerIP. It is sharded so that upgrades and closes from
// different addresses rarely share a lock.
type ipConns struct {
	seed   maphash.Seed
	shards [32]ipShard
}

type ipShard struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

func newIPConns() *ipConns { return &ipConns{seed: maphash.MakeSeed()} }

func (l *ipConns) shard(ip netip.Addr) *ipShard {
	return &l.shards[maphash.Comparable(l.seed, ip)%uint64(len(l.shards))]
}

// acquire counts a connection from ip unless ip already has limit; the
// zero Addr (limit off) is always allowed and not counted.
func (l *ipConns) acquire(ip netip.Addr, limit int) bool {
	if !ip.IsValid() {
		return true
	}
	sh := l.shard(ip)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.n[ip] >= limit {
		return false
	}
	if sh.n == nil {
		sh.n = make(map[netip.Addr]int)
	}
	sh.n[ip]++
	return true
}

// release undoes acquire; the zero Addr is a no-op.
func (l *ipConns) release(ip netip.Addr) {
	if !ip.IsValid() {
		return
	}
	sh := l.shard(ip)
	sh.mu.Lock()
	if sh.n[ip] <= 1 {
		delete(sh.n, ip) // keep the map to the addresses connected now
	} else {
		sh.n[ip]--
	}
	sh.mu.Unlock()
}

// count returns the connections counted for ip.
func (l *ipConns) count(ip netip.Addr) int {
	sh := l.shard(ip)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.n[ip]
}

// addrOf returns the key a host:port peer's connections are counted under
// with -max-conns-per-ip (see limitKey). The socket's peer is used, not
// X-Forwarded-For, which any client can set; behind a proxy every client
// shares the proxy's address, so leave the limit off there.
func addrOf(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return limitKey(ap.Addr())
}

// limitKey is what a peer address is counted under: an IPv4 address
// itself, an IPv6 address its /64, the block one subscriber gets, so that
// a client cannot pass the limit by picking new addresses in its own
// network.
func limitKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
