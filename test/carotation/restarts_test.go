package carotation

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Before 1.36 the kubelet reads kubelet.conf's CA file and its
// clientCAFile only at start, so the node restarts it from certagent's
// hooks.postTrust (docs/ca-rotation.md). The hook here appends the files
// certagent names to restartRequests and the test, standing in for systemd,
// restarts the kubelet it runs (`systemctl try-restart kubelet`: nothing
// before the kubelet runs).

// postTrustHook is the node's hooks.postTrust, %q the requests file.
const postTrustHook = `hooks:
  postTrust:
  - command: ["/bin/sh", "-c", "echo \"$CERTAGENT_TRUST_FILES\" >> \"$0\"", %q]
`

// maxRestarts bounds the postTrust restarts of a rotation: one per phase
// that changes the trust files (AddCA, RemoveOldCA), two if certagent wrote
// the two files in separate passes.
const maxRestarts = 4

// restart is one postTrust restart of the kubelet.
type restart struct {
	phase, files string
	down         time.Duration // from the request to the new kubelet serving
	pid          int
}

func (n *node) restartRequests() string { return filepath.Join(n.dir, "restart-requests") }

// noPostTrustEnv set to "1" leaves the hook out on a kubelet that needs
// it: the test then shows what the kubelet does without the restart.
const noPostTrustEnv = "CERTAGENT_CAROT_NO_POSTTRUST"

// restartsKubelet: the node's kubelet needs the postTrust restart (before
// 1.36; the control planes tested are 1.37 and 1.30).
func restartsKubelet() bool { return cp.TrustInConfigMaps() }

// withPostTrust: the node restarts its kubelet from hooks.postTrust.
func withPostTrust() bool { return restartsKubelet() && os.Getenv(noPostTrustEnv) != "1" }

// serveRestarts restarts the kubelet once per request certagent's hook
// made since the last call, recording each; it fails the test if a restart
// does not bring the kubelet back.
func (r *rotation) serveRestarts(ctx context.Context) {
	data, _ := os.ReadFile(r.n.restartRequests())
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(data) == 0 {
		lines = nil
	}
	for ; r.requestsSeen < len(lines); r.requestsSeen++ {
		files := lines[r.requestsSeen]
		if r.k == nil {
			r.restarts = append(r.restarts, restart{phase: "before the kubelet ran (nothing to restart)", files: files})
			continue
		}
		down, err := r.k.Restart(ctx, r.t)
		if err != nil {
			r.fatal("restarting the kubelet for postTrust (%s): %v", files, err)
		}
		r.restarts = append(r.restarts, restart{phase: r.phase, files: files, down: down, pid: r.k.Cmd.Process.Pid})
	}
}

// checkRestarts records a problem unless the kubelet was restarted only in
// the phases that change the trust files, for a trust file, at least once
// in each and at most maxRestarts times; or, on a kubelet that reloads
// them, never.
func (r *rotation) checkRestarts() {
	if !restartsKubelet() {
		if len(r.restarts) > 0 || r.k.Cmd.Process.Pid != r.pid {
			r.problem("the kubelet was restarted (PID %d, now %d; postTrust requests %v)", r.pid, r.k.Cmd.Process.Pid, r.restarts)
		}
		return
	}
	per := map[string]int{}
	n := 0
	for _, rs := range r.restarts {
		if rs.pid == 0 {
			continue
		}
		n++
		per[rs.phase]++
		if rs.phase != phaseAddCA && rs.phase != phaseRemoveOldCA {
			r.problem("the kubelet was restarted in phase %s, which changes no trust file (files %q)", rs.phase, rs.files)
		}
		if !strings.Contains(rs.files, r.n.caFile()) && !strings.Contains(rs.files, r.n.clientCA) {
			r.problem("a postTrust restart in phase %s names no trust file: %q", rs.phase, rs.files)
		}
	}
	if per[phaseAddCA] == 0 || per[phaseRemoveOldCA] == 0 || n > maxRestarts {
		r.problem("postTrust restarts per phase %v (%d in all): want at least one in %s and in %s, at most %d in all",
			per, n, phaseAddCA, phaseRemoveOldCA, maxRestarts)
	}
}

// restartsReport is the restarts, for the figures.
func (r *rotation) restartsReport() string {
	var parts []string
	for _, rs := range r.restarts {
		if rs.pid == 0 {
			parts = append(parts, fmt.Sprintf("%s [%s]", rs.phase, rs.files))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: PID %d serving %s after the request [%s]", rs.phase, rs.pid, rs.down.Round(100*time.Millisecond), rs.files))
	}
	return fmt.Sprintf("%d postTrust requests: %s", len(parts), strings.Join(parts, "; "))
}
