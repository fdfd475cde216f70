package loop

import (
	"runtime/debug"

	"nbchat/protocol"
)

// testPanicHook, set only by tests, runs before each request is handled,
// so a test can make handling panic.
var testPanicHook func(*protocol.Request)

// recoverPanic, deferred in Parse under c.hmu, turns a panic while handling
// c's data into a close of c alone with 1011. Without it nbio's own recover
// would log and carry on with the connection in an unknown state. It
// assumes the panic left no conn or room lock held other than c.hmu.
func (c *conn) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	c.srv.log.Error("panic handling a connection; closing it",
		"name", c.Name(), "panic", v, "stack", string(debug.Stack()))
	// The decoder may have stopped mid-frame: ignore the rest of the stream.
	c.dec.fail(&ProtocolError{Code: CloseInternalError, Reason: reasonInternal.reason})
	c.close(reasonInternal)
}
