package carotation

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/test/kubelettest"
)

// rotation is the test's view of the node through the rotation.
type rotation struct {
	t           *testing.T
	n           *node
	k           *kubelettest.Kubelet
	agent       *daemon
	pid         int    // the kubelet's
	metricsAddr string // certagent's
	strict      bool   // the node side's failures fail the test
	lastProxy   time.Time
	took        []string      // each phase and how long it took
	reissued    time.Duration // from SwitchSigners to both certificates on the new CA
	// clientSwitched is how long after the re-issued client certificate
	// was stored the kubelet was known to use it, and how it is known
	// (client-go re-reads the file every 5 minutes).
	clientSwitched string
	phase          string    // the phase under way, for postTrust restarts
	phase4         string    // what the first requests after SwitchKubeletClient met
	restarts       []restart // postTrust restarts (before 1.36)
	requestsSeen   int       // postTrust requests served
	problems       []string
	nodeSide       []string // the node side's failures when not strict
}

// watch observes the kubelet every 2 s (and reaches it through the API
// server every 10 s) for d or until done holds; it reports whether done
// held. The kubelet or certagent exiting ends the test.
func (r *rotation) watch(ctx context.Context, d time.Duration, done func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if restartsKubelet() {
			r.serveRestarts(ctx)
		}
		r.k.Watch.Observe(ctx)
		if time.Since(r.lastProxy) >= 10*time.Second {
			r.k.Watch.ThroughAPIServer(ctx)
			r.lastProxy = time.Now()
		}
		if done != nil && done() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case err := <-r.k.Exited:
			r.fatal("the kubelet (PID %d) exited: %v", r.k.Cmd.Process.Pid, err)
		case err := <-r.agent.done:
			r.fatal("certagent exited: %v", err)
		case <-time.After(2 * time.Second):
		}
	}
}

// checkAlive records a problem unless the kubelet and certagent both run.
func (r *rotation) checkAlive() {
	if pid := r.k.Cmd.Process.Pid; syscall.Kill(pid, 0) != nil {
		r.problem("the kubelet's PID %d is gone", pid)
	}
	select {
	case err := <-r.agent.done:
		r.problem("certagent exited: %v", err)
	default:
	}
}

func (r *rotation) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// nodeProblem is a failure of certagent's node side: a problem, or only
// logged when the node side is not enforced.
func (r *rotation) nodeProblem(format string, args ...any) {
	if r.strict {
		r.problem(format, args...)
		return
	}
	r.nodeSide = append(r.nodeSide, fmt.Sprintf(format, args...))
}

// fatal ends the test with the kubelet's and certagent's logs.
func (r *rotation) fatal(format string, args ...any) {
	r.t.Helper()
	log := "(not started)"
	if r.k != nil {
		log = r.k.Watch.Log + ", last lines:\n" + kubelettest.TailFile(r.k.Watch.Log, 40)
	}
	r.t.Fatalf(format+"\nkubelet log %s\ncertagent:\n%s", append(args, log, r.agent.out.String())...)
}

// waitForKubeletFiles waits for what the kubelet starts on: certagent's
// serving certificate and the client CA file it keeps, and the postTrust
// hooks of their first writing done.
func (r *rotation) waitForKubeletFiles(ctx context.Context) {
	for deadline := time.Now().Add(time.Minute); ; {
		if kubelettest.CurrentLeaf(r.n.certDir, "kubelet-server") != nil && exists(r.n.clientCA) && exists(r.n.caFile()) &&
			!exists(filepath.Join(r.n.certDir, ".trust-hooks-due")) {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.fatal("no serving certificate, %s or %s a minute after READY", r.n.clientCA, r.n.caFile())
		}
		select {
		case err := <-r.agent.done:
			r.fatal("certagent exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
