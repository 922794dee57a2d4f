package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/bootstrap"
)

// The control socket lets `certagent renew` (and `run --once`) ask a running
// daemon to do the work instead of writing beside it. It lives in the
// certificate directory (0700, root's), so only its owner can connect; the
// daemon also checks the peer's uid.

const socketName = ".certagent.sock"

// controlReadTimeout bounds how long a client of the control socket has to
// send its request (a line of JSON): one that connects and sends nothing
// must not hold a handler, and its connection, for the daemon's lifetime.
const controlReadTimeout = 10 * time.Second

// controlRequest asks the daemon for a step of each certificate.
type controlRequest struct {
	// Force renews even if not due.
	Force bool `json:"force"`
}

// controlResult is one certificate's outcome.
type controlResult struct {
	Certificate string    `json:"certificate"`
	Renewed     bool      `json:"renewed"`
	NotAfter    time.Time `json:"notAfter,omitzero"`
	Error       string    `json:"error,omitempty"`
}

// serveControl listens on the control socket until ctx ends.
func (a *Agent) serveControl(ctx context.Context, certDir string) (func(), error) {
	path := filepath.Join(certDir, socketName)
	if len(path) >= 108 {
		return nil, fmt.Errorf("control socket path %s is too long for a unix socket", path)
	}
	_ = os.Remove(path) // a leftover of an earlier daemon: we hold the lock
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(true)
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go a.handleControl(ctx, c)
		}
	}()
	return func() { l.Close() }, nil
}

func (a *Agent) handleControl(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	if !peerAllowed(c) {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(a.controlTimeout)) // the socket's own clock: real time
	var req controlRequest
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
		a.log.Debug("control socket: no request read", zap.Error(err))
		return
	}
	_ = c.SetReadDeadline(time.Time{}) // the steps may take as long as they take
	a.log.Info("asked to renew", zap.Bool("force", req.Force))
	_ = json.NewEncoder(c).Encode(a.RequestSteps(ctx, req.Force))
}

// peerAllowed accepts root and the daemon's own user.
func peerAllowed(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *syscall.Ucred
	_ = raw.Control(func(fd uintptr) { cred, _ = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED) })
	return cred != nil && (cred.Uid == 0 || int(cred.Uid) == os.Geteuid())
}

// RequestSteps has each enabled certificate's loop step now (renewing if due,
// or in any case with force) and returns the outcomes, client first.
func (a *Agent) RequestSteps(ctx context.Context, force bool) []controlResult {
	var out []controlResult
	for _, kind := range []bootstrap.Kind{bootstrap.Client, bootstrap.Serving} {
		if kind == bootstrap.Serving && !a.Config().ServingEnabled() {
			continue
		}
		a.mu.Lock()
		w := a.loops[kind]
		a.mu.Unlock()
		r := controlResult{Certificate: string(kind)}
		if w == nil {
			r.Error = "the daemon is still starting"
			out = append(out, r)
			continue
		}
		select {
		case o := <-w.loop.Request(ctx, force):
			r.Renewed, r.NotAfter = o.Stored, o.Cert.NotAfter
			if o.Err != nil {
				r.Error = o.Err.Error()
			}
		case <-ctx.Done():
			r.Error = ctx.Err().Error()
		}
		out = append(out, r)
	}
	return out
}

// askDaemon sends req over certDir's control socket and waits for the
// answer; errNoDaemon if nothing listens.
func askDaemon(ctx context.Context, certDir string, req controlRequest) ([]controlResult, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(certDir, socketName))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoDaemon, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, fmt.Errorf("asking the daemon: %w", err)
	}
	var res []controlResult
	if err := json.NewDecoder(c).Decode(&res); err != nil {
		return nil, fmt.Errorf("reading the daemon's answer: %w", err)
	}
	return res, nil
}

var errNoDaemon = errors.New("no certagent daemon answers")
