//go:build !race

package loop

import "github.com/lesismal/nbio/nbhttp"

// watchHandoff is needed only under the race detector; see handoff_race.go.
func watchHandoff(*nbhttp.Engine) {}
