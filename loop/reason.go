package loop

import (
	"errors"
	"io"

	"github.com/lesismal/nbio"
)

// closeReason says why a connection closed: the close code and reason sent
// to the peer, and the label it is counted under in /metrics.
type closeReason struct {
	code   int
	reason string
	label  string
}

// CloseSlowConsumer is sent to a connection whose unsent output went over
// Config.MaxPending: it did not read fast enough (private-use code,
// RFC 6455 section 7.4.2).
const CloseSlowConsumer = 4008

var (
	reasonSlowConsumer = closeReason{CloseSlowConsumer, "slow consumer", "slow_consumer"}
	reasonFlood        = closeReason{ClosePolicy, "message rate limit exceeded", "rate_limit"}
	reasonIdle         = closeReason{CloseGoingAway, "idle timeout", "idle"}
	reasonShutdown     = closeReason{CloseGoingAway, "server shutting down", "shutdown"}
	reasonPeer         = closeReason{CloseNormal, "", "peer"}
	reasonInternal     = closeReason{CloseInternalError, "internal error", "internal"}
)

func (r closeReason) String() string { return r.reason }

// protocolReason is a close for a WebSocket protocol violation.
func protocolReason(code int, reason string) closeReason {
	label := "protocol_error"
	switch code {
	case CloseInvalidPayload:
		label = "invalid_payload"
	case CloseTooBig:
		label = "too_big"
	}
	return closeReason{code, reason, label}
}

// reasonFromError labels a close that the socket, not a close handshake,
// ended.
func reasonFromError(err error) closeReason {
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return closeReason{label: "eof"}
	case errors.Is(err, nbio.ErrOverflow):
		return closeReason{label: "slow_consumer"}
	default:
		return closeReason{label: "error"}
	}
}
