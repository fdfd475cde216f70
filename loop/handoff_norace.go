//go:build !race

package loop

import (
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// watchHandoff and handoffSeen are needed only under the race detector;
// see handoff_race.go.
func watchHandoff(*nbhttp.Engine) {}

func handoffSeen(*nbio.Conn) {}
