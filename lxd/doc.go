// Package lxd is berth's own, focused client for the LXD REST API (/1.0).
//
// The canonical Go client (github.com/canonical/lxd/client) is not available
// to this module, so this package speaks LXD's documented REST API directly,
// over the local unix socket or over HTTPS with a TLS client certificate. It
// covers what berth needs and nothing more: instances (list, get, create,
// update, patch, state changes, delete, snapshots), files in instances,
// exec (batch commands, commands whose output tail is kept, and a net.Conn
// stream for tunnelling `docker system dial-stdio`), images (import, list,
// aliases), profiles, server config and certificates.
//
// # Responses and errors
//
// LXD answers with an envelope of type "sync" (HTTP 200), "async" (HTTP 202,
// an operation to wait on) or "error" (4xx/5xx). Errors are returned as
// *StatusError and match ErrNotFound (404), ErrConflict (409),
// ErrPreconditionFailed (412, a stale ETag) and ErrForbidden (403) with
// errors.Is. Many failures only show up in the final state of an operation,
// which LXD returns with HTTP 200 and status_code 400 (e.g. creating an
// instance that already exists); those are *OperationError. Any error saying
// "already exists" matches ErrConflict, whatever its code (LXD 5.0.2 answers
// a duplicate profile with 500).
//
// Every call takes a context and every HTTP request is bound by it; nothing
// waits forever. Operations are awaited with /1.0/operations/<id>/wait in
// bounded slices (a wait that times out is a 200 with status_code 103, not an
// error); when the context ends first, the operation is cancelled on the
// server if it allows that.
//
// # Projects and targets
//
// With Config.Project set, every project-scoped request carries ?project=.
// Operation URLs never do: operations are global. Config.Target adds
// ?target= to instance creation only (LXD rejects it with 400 on a server
// that is not clustered).
//
// # Read-modify-write and ETags
//
// GetInstance, GetProfile and GetServer return the object's ETag. Pass it back
// to UpdateInstance/PatchInstance/UpdateProfile/UpdateServerConfig: it is sent
// as If-Match, and a concurrent change makes the write fail with
// ErrPreconditionFailed instead of silently overwriting. An empty ETag skips
// the check. Note that LXD's instance ETag covers the local config including
// volatile.* keys, which change when the instance starts or stops.
//
// # Exec
//
// Exec runs a command non-interactively: LXD then gives separate, binary-safe
// websockets for stdin, stdout and stderr plus a control socket
// (interactive mode would use a PTY, merging the streams). All four must be
// connected within 5 seconds or LXD fails the operation. Data travels in
// binary frames and an empty text frame marks end of stream. Every socket
// keeps a reader because gorilla/websocket answers LXD's 10-second pings
// only while reading. Closing the control socket makes LXD SIGKILL the
// command. The exit code comes from the final operation's metadata.return;
// a non-zero exit is still a successful operation.
//
// The two output streams are mirrored independently, so their order
// against each other is lost (ExecOutput interleaves them as they arrive).
// LXD reports exit codes 126 and 127 as a failed operation ("Command not
// executable", "Command not found"), whether the command could not be
// started or exited so itself.
//
// # Files
//
// PushFile writes a file through /1.0/instances/<name>/files, creating
// missing parents. LXD 5.0 keeps an existing file's owner and mode on an
// overwrite (the instances_files_modify_permissions extension came later),
// so PushFile replaces a file whose owner or mode must change. The body
// must not be sent as a form: LXD parses it and writes an empty file.
//
// DialExec wraps the same mechanism as a net.Conn (ExecConn), for tunnelling
// `docker system dial-stdio` through LXD to a Docker daemon in an instance.
//
// # Counting requests
//
// Client.OnRequest and Client.RequestCounts let callers (and tests) observe
// every request made, e.g. to assert that a dry run made zero writes.
package lxd
