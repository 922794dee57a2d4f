package carotation

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Before 1.36 the kubelet reads kubelet.conf's CA file and its
// clientCAFile only at start, and before 1.31 its tlsCertFile too, so the
// node restarts it from certagent's hooks.postTrust and, for the serving
// certificate, hooks.postRenew (docs/ca-rotation.md). The hooks here append
// the files certagent names to restartRequests and the test, standing in
// for systemd, restarts the kubelet it runs (`systemctl try-restart
// kubelet`: nothing before the kubelet runs).

// restartHooks is the node's hooks, %q the requests file (twice). The
// postRenew hook runs for the serving certificate alone (kinds): a request
// naming the client certificate fails checkRestarts.
const restartHooks = `hooks:
  postTrust:
  - command: ["/bin/sh", "-c", "echo \"$CERTAGENT_TRUST_FILES\" >> \"$0\"", %q]
  postRenew:
  - command: ["/bin/sh", "-c", "echo \"$CERTAGENT_CERT_FILE\" >> \"$0\"", %q]
    kinds: [server]
`

// maxRestarts bounds the kubelet's restarts in a rotation: one per phase
// that changes the trust files (AddCA, RemoveOldCA), two if certagent wrote
// the two files in separate passes, and one for the serving certificate's
// re-issue (SwitchSigners).
const maxRestarts = 5

// restart is one restart of the kubelet, asked for by a hook.
type restart struct {
	phase, files string
	at           time.Time     // when the test began the restart: the new kubelet reads its files after it
	down         time.Duration // from the request to the new kubelet serving
	pid          int
}

// restartedSince: a kubelet restarted in phase after stored reads the
// client certificate stored then. A restart in the same phase but before
// it (for the serving certificate, re-issued first) left the kubelet on the
// old one.
func restartedSince(restarts []restart, phase string, stored time.Time) bool {
	return slices.ContainsFunc(restarts, func(rs restart) bool {
		return rs.pid != 0 && rs.phase == phase && rs.at.After(stored)
	})
}

func (n *node) restartRequests() string { return filepath.Join(n.dir, "restart-requests") }

// noPostTrustEnv set to "1" leaves the hooks out on a kubelet that needs
// them: the test then shows what the kubelet does without the restarts.
const noPostTrustEnv = "CERTAGENT_CAROT_NO_POSTTRUST"

// restartsKubelet: the node's kubelet needs the restarts (the control
// planes tested are 1.37, which needs none, and 1.30, which needs both).
func restartsKubelet() bool { return cp.TrustInConfigMaps() }

// withPostTrust: the node restarts its kubelet from its hooks.
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
		at := time.Now()
		down, err := r.k.Restart(ctx, r.t)
		if err != nil {
			r.fatal("restarting the kubelet for a hook (%s): %v", files, err)
		}
		r.restarts = append(r.restarts, restart{phase: r.phase, files: files, at: at, down: down, pid: r.k.Cmd.Process.Pid})
	}
}

// checkRestarts records a problem unless the kubelet was restarted only
// for what needs it: a trust file in the phases that change them, the
// serving certificate when SwitchSigners re-issued it; at least once for
// each, at most maxRestarts times; or, on a kubelet that reloads them,
// never.
func (r *rotation) checkRestarts() {
	if !restartsKubelet() {
		if len(r.restarts) > 0 || r.k.Cmd.Process.Pid != r.pid {
			r.problem("the kubelet was restarted (PID %d, now %d; hook requests %v)", r.pid, r.k.Cmd.Process.Pid, r.restarts)
		}
		return
	}
	serving := filepath.Join(r.n.certDir, "kubelet-server-current.pem")
	per := map[string]int{}
	n := 0
	for _, rs := range r.restarts {
		if rs.pid == 0 {
			continue
		}
		n++
		switch {
		case rs.files == serving:
			per[phaseSwitchSigners]++
			if rs.phase != phaseSwitchSigners {
				r.problem("the kubelet was restarted for its serving certificate in phase %s, which re-issues none", rs.phase)
			}
		case strings.Contains(rs.files, r.n.caFile()) || strings.Contains(rs.files, r.n.clientCA):
			per[rs.phase]++
			if rs.phase != phaseAddCA && rs.phase != phaseRemoveOldCA {
				r.problem("the kubelet was restarted in phase %s, which changes no trust file (files %q)", rs.phase, rs.files)
			}
		default:
			r.problem("a restart in phase %s names no trust file and not the serving certificate: %q", rs.phase, rs.files)
		}
	}
	if per[phaseAddCA] == 0 || per[phaseSwitchSigners] == 0 || per[phaseRemoveOldCA] == 0 || n > maxRestarts {
		r.problem("restarts per phase %v (%d in all): want at least one in %s, %s (the serving certificate) and %s, at most %d in all",
			per, n, phaseAddCA, phaseSwitchSigners, phaseRemoveOldCA, maxRestarts)
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
	return fmt.Sprintf("%d restart requests (postTrust, postRenew): %s", len(parts), strings.Join(parts, "; "))
}

func TestRestartedSince(t *testing.T) {
	stored := time.Date(2026, 12, 5, 1, 43, 1, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		restarts []restart
		want     bool
	}{
		{"no restart", nil, false},
		{"restarted after the store", []restart{{phase: "3 SwitchSigners", pid: 7, at: stored.Add(time.Second)}}, true},
		// CI of c0cf2ca: the serving certificate's restart 6 s before the client certificate was stored.
		{"restarted before the store", []restart{{phase: "3 SwitchSigners", pid: 7, at: stored.Add(-6 * time.Second)}}, false},
		{"restarted after, in another phase", []restart{{phase: "1 AddCA", pid: 7, at: stored.Add(time.Second)}}, false},
		{"nothing restarted (no kubelet yet)", []restart{{phase: "3 SwitchSigners", at: stored.Add(time.Second)}}, false},
	} {
		if got := restartedSince(tc.restarts, "3 SwitchSigners", stored); got != tc.want {
			t.Errorf("%s: restartedSince = %t, want %t", tc.name, got, tc.want)
		}
	}
}

func TestClientTakenUp(t *testing.T) {
	stored := time.Date(2026, 12, 5, 2, 54, 30, 401e6, time.UTC)
	// What CI of efd4078 most likely met: the serving certificate's hook
	// ran 0.44 s before the client certificate was stored; a restart takes
	// 1.4 s to serve.
	straddling := []restart{{phase: "3 SwitchSigners", pid: 7, at: stored.Add(-400 * time.Millisecond), down: 1400 * time.Millisecond}}
	before := []restart{{phase: "3 SwitchSigners", pid: 7, at: stored.Add(-3 * time.Second), down: 1400 * time.Millisecond}}
	for _, tc := range []struct {
		name     string
		restarts []restart
		logged   bool
		now      time.Time
		want     string // a prefix
	}{
		{"nothing yet", nil, false, stored.Add(time.Minute), ""},
		{"switch logged", nil, true, stored.Add(5 * time.Minute), "switch logged"},
		{"restarted after the store", []restart{{phase: "3 SwitchSigners", pid: 7, at: stored.Add(time.Second)}}, false, stored.Add(2 * time.Second), "restarted since"},
		{"a restart under way at the store: not known within a re-read", straddling, false, stored.Add(5 * time.Minute), ""},
		{"a restart under way at the store: no switch logged in a re-read", straddling, false, stored.Add(kubeletClientReread), "read as it started"},
		{"a restart under way at the store, then the switch logged", straddling, true, stored.Add(5 * time.Minute), "switch logged"},
		{"restarted and serving before the store: it must log the switch", before, false, stored.Add(10 * time.Minute), ""},
		{"under way at the store, in another phase", []restart{{phase: "1 AddCA", pid: 7, at: stored.Add(-400 * time.Millisecond), down: time.Second}}, false, stored.Add(10 * time.Minute), ""},
	} {
		got := clientTakenUp(tc.restarts, "3 SwitchSigners", stored, tc.logged, tc.now)
		if (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: clientTakenUp = %q, want %q…", tc.name, got, tc.want)
		}
	}
}
