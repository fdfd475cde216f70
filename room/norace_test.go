//go:build !race

package room

// raceEnabled is set when the race detector is on: sync.Pool then drops
// some Puts on purpose, so allocation counts mean nothing.
const raceEnabled = false
