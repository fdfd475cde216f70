//go:build race

package protocol_test

// raceEnabled is true when the race detector is on.
const raceEnabled = true
