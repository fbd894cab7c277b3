package lxd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Operation status codes (shared/api/status_code.go). A status is final when
// it is >= 200.
const (
	StatusOperationCreated = 100
	StatusStarted          = 101
	StatusStopped          = 102
	StatusRunning          = 103
	StatusCancelling       = 104
	StatusPending          = 105
	StatusSuccess          = 200
	StatusFailure          = 400
	StatusCancelled        = 401
)

// Operation is a background task on the server (shared/api/operation.go).
type Operation struct {
	ID          string              `json:"id"`
	Class       string              `json:"class"` // task, websocket, token
	Description string              `json:"description"`
	CreatedAt   time.Time           `json:"created_at"`
	UpdatedAt   time.Time           `json:"updated_at"`
	Status      string              `json:"status"`
	StatusCode  int                 `json:"status_code"`
	Resources   map[string][]string `json:"resources"`
	Metadata    json.RawMessage     `json:"metadata"`
	MayCancel   bool                `json:"may_cancel"`
	Err         string              `json:"err"`
	Location    string              `json:"location"`
}

// DecodeMetadata decodes the operation's metadata into v.
func (op *Operation) DecodeMetadata(v any) error {
	if len(op.Metadata) == 0 || string(op.Metadata) == "null" {
		return nil
	}
	if err := json.Unmarshal(op.Metadata, v); err != nil {
		return fmt.Errorf("lxd: decoding metadata of operation %s: %w", op.ID, err)
	}
	return nil
}

// Final reports whether the operation has finished.
func (op *Operation) Final() bool { return op.StatusCode >= StatusSuccess }

func (c *Client) operationFromResponse(resp *response) (*Operation, error) {
	var op Operation
	if err := resp.decode(&op); err != nil {
		return nil, err
	}
	if op.ID == "" {
		return nil, fmt.Errorf("lxd: async response without operation (operation %q)", resp.Operation)
	}
	return &op, nil
}

// WaitOperation waits for the operation with the given ID (or
// "/1.0/operations/<id>" URL) to finish. A failed or cancelled operation is
// an *OperationError.
func (c *Client) WaitOperation(ctx context.Context, id string) (*Operation, error) {
	if u, err := url.Parse(id); err == nil {
		id = u.Path
	}
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '/' {
			id = id[i+1:]
			break
		}
	}
	return c.waitOperation(ctx, &Operation{ID: id, StatusCode: StatusRunning})
}

// waitOperation loops on GET /1.0/operations/<id>/wait?timeout=N until the
// operation is final. LXD answers a wait that timed out with HTTP 200 and the
// still running operation (status_code 103), so that is simply repeated. A
// failed operation also comes back as HTTP 200 (status_code 400) and becomes
// an *OperationError. When ctx ends first, the operation is cancelled on the
// server if it says it may be.
func (c *Client) waitOperation(ctx context.Context, op *Operation) (*Operation, error) {
	for !op.Final() {
		if err := ctx.Err(); err != nil {
			c.cancelOperation(ctx, op)
			return op, fmt.Errorf("lxd: waiting for operation %q: %w", op.Description, err)
		}
		secs := c.waitSlice
		if dl, ok := ctx.Deadline(); ok {
			// Ask the server to answer before our deadline so the last
			// state is seen instead of a cancelled request.
			left := int(math.Ceil(time.Until(dl).Seconds()))
			if left < secs {
				secs = max(left, 1)
			}
		}
		// Operation URLs never take ?project=: operations are global.
		resp, err := c.do(ctx, request{
			method: "GET",
			path:   "/1.0/operations/" + pathEscape(op.ID) + "/wait",
			query:  url.Values{"timeout": {strconv.Itoa(secs)}},
		})
		if err != nil {
			if ctx.Err() != nil {
				c.cancelOperation(ctx, op)
				return op, fmt.Errorf("lxd: waiting for operation %q: %w", op.Description, ctx.Err())
			}
			if se := (*StatusError)(nil); errors.As(err, &se) && se.Code == http.StatusNotFound {
				return op, &OperationGoneError{ID: op.ID, Description: op.Description, Err: err}
			}
			return op, err
		}
		var next Operation
		if err := resp.decode(&next); err != nil {
			return op, err
		}
		if next.ID == "" {
			return op, fmt.Errorf("lxd: wait for operation %s: empty answer", op.ID)
		}
		op = &next
	}
	if op.StatusCode != StatusSuccess {
		return op, &OperationError{ID: op.ID, Description: op.Description, StatusCode: op.StatusCode, Err: op.Err}
	}
	return op, nil
}

// cancelOperation asks LXD to cancel op (DELETE /1.0/operations/<id>) when
// the operation allows it. It uses a short context of its own because the
// caller's has ended.
func (c *Client) cancelOperation(ctx context.Context, op *Operation) {
	if !op.MayCancel {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _ = c.do(cctx, request{method: "DELETE", path: "/1.0/operations/" + pathEscape(op.ID)})
}

// InstanceOperations lists the running operations of the client's
// project that act on the instance (their resources name it), such as
// the "Stopping instance" of an `lxc stop` that is shutting it down.
func (c *Client) InstanceOperations(ctx context.Context, name string) ([]Operation, error) {
	var byStatus map[string][]Operation
	if _, err := c.query(ctx, request{method: "GET", path: "/1.0/operations", query: url.Values{"recursion": {"1"}}, project: true}, &byStatus); err != nil {
		return nil, err
	}
	var out []Operation
	for _, op := range byStatus["running"] {
		for _, r := range op.Resources["instances"] {
			u, err := url.Parse(r)
			if err == nil && (u.Path == "/1.0/instances/"+name || u.Path == name) {
				out = append(out, op)
				break
			}
		}
	}
	return out, nil
}

// InstanceStopping reports whether LXD is stopping or restarting the
// instance right now: an operation of that kind on it is running (an `lxc
// stop` waits while the instance's init shuts it down, and LXD reports it
// Running until then). LXD 5.0 names the kind only in the description.
func (c *Client) InstanceStopping(ctx context.Context, name string) (bool, error) {
	ops, err := c.InstanceOperations(ctx, name)
	if err != nil {
		return false, err
	}
	for _, op := range ops {
		if op.Description == "Stopping instance" || op.Description == "Restarting instance" {
			return true, nil
		}
	}
	return false, nil
}

// ErrOperationGone is matched by an *OperationGoneError.
var ErrOperationGone = errors.New("lxd: operation gone")

// OperationGoneError is an operation LXD no longer knows while berth waits
// for it: LXD forgets a finished operation 5 s after it ends, and on a
// loaded host berth's wait can come later than that. Its outcome is
// unknown; callers that can look at the result (an instance created,
// started, deleted) do so.
type OperationGoneError struct {
	ID, Description string
	Err             error
}

func (e *OperationGoneError) Error() string {
	return fmt.Sprintf("lxd: operation %q (%s) ended and was forgotten before its result was read: %v", e.Description, e.ID, e.Err)
}

func (e *OperationGoneError) Unwrap() error { return e.Err }

// Is matches ErrOperationGone.
func (e *OperationGoneError) Is(target error) bool { return target == ErrOperationGone }
