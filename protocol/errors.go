package protocol

// Code is a machine-readable error code carried by an error message.
type Code string

// Error codes.
const (
	CodeBadRequest  Code = "bad_request"
	CodeUnknownType Code = "unknown_type"
	CodeBadName     Code = "bad_name"
	CodeNotMember   Code = "not_member"
	CodeNoSuchUser  Code = "no_such_user"
	CodeTooLarge    Code = "too_large"
	CodeRateLimited Code = "rate_limited"
	CodeTooMany     Code = "too_many_rooms"
	CodeForbidden   Code = "forbidden"
	CodeInternal    Code = "internal"
	CodeUnavailable Code = "unavailable" // a cluster node the request needs is unreachable; retry
	CodeGap         Code = "gap"         // messages were lost between nodes; rejoin with since
)

// Error is a request the server refuses; it is answered with an error
// message and the connection stays open.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return "protocol: " + string(e.Code) + ": " + e.Message }

var _ error = (*Error)(nil)

// Errors from decoding. They are values, so refusing a request allocates
// nothing.
var (
	errNotObject       = &Error{CodeBadRequest, "request must be a JSON object"}
	errBadJSON         = &Error{CodeBadRequest, "malformed JSON"}
	errNoType          = &Error{CodeBadRequest, "missing type"}
	errBadType         = &Error{CodeBadRequest, "type must be a string"}
	errUnknownType     = &Error{CodeUnknownType, "unknown type"}
	errDupField        = &Error{CodeBadRequest, "a field is given twice"}
	errBadID           = &Error{CodeBadRequest, "id must be a string of at most 64 bytes or a number"}
	errBadLimit        = &Error{CodeBadRequest, "limit must be an integer from 1 to 1000"}
	errBadSince        = &Error{CodeBadRequest, "since must be a non-negative integer seq"}
	errBadBefore       = &Error{CodeBadRequest, "before must be a positive integer seq"}
	errBadHistoryLimit = &Error{CodeBadRequest, "limit must be an integer from 1 to 200"}
	errNoRoom          = &Error{CodeBadRequest, "missing room"}
	errBadRoom         = &Error{CodeBadName, "room must be 1-32 letters, digits, '_', '-' or '.'"}
	errNoTo            = &Error{CodeBadRequest, "missing to"}
	errTypingWhere     = &Error{CodeBadRequest, "typing needs room or to"}
	errTypingBoth      = &Error{CodeBadRequest, "typing takes room or to, not both"}
	errBadTo           = &Error{CodeBadName, "to must be 1-32 letters, digits, '_', '-' or '.'"}
	errBadAfter        = &Error{CodeBadName, "after must be a name"}
	errNoText          = &Error{CodeBadRequest, "missing text"}
	errEmptyText       = &Error{CodeBadRequest, "text is empty"}
	errTooLarge        = &Error{CodeTooLarge, "text is over the size limit"}

	// ErrBinary refuses binary messages: the protocol is JSON text.
	ErrBinary = &Error{CodeBadRequest, "binary messages are not supported"}
)
