package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// mountTmpfs mounts a small tmpfs at dir (root only) for the life of the test.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs and must run as root (make test runs as root)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
}

// TestFullOrReadOnlyCertDir: renewing into a full or read-only certificate
// directory fails with the file system's error and leaves every file as it was.
func TestFullOrReadOnlyCertDir(t *testing.T) {
	for _, tc := range []struct {
		name     string
		breakDir func(t *testing.T, n *node)
		want     string
	}{
		{"full", func(t *testing.T, n *node) {
			// Fill the tmpfs: the write stops at ENOSPC.
			f, err := os.Create(filepath.Join(n.certDir, "filler"))
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			for {
				if _, err := f.Write(buf); err != nil {
					break
				}
			}
			f.Close()
		}, "no space left on device"},
		{"read-only", func(t *testing.T, n *node) {
			if out, err := exec.Command("mount", "-o", "remount,ro", n.certDir).CombinedOutput(); err != nil {
				t.Fatalf("remount ro: %v\n%s", err, out)
			}
		}, "read-only file system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
			n.writeConfig("serving:\n  enabled: false\n")
			mountTmpfs(t, n.certDir, "1m")
			if code, out := n.runOnce("--serving=false"); code != 0 {
				t.Fatalf("bootstrap: exit %d\n%s", code, out)
			}
			tc.breakDir(t, n)
			before := n.snapshot()
			args := n.args("--force")
			args[0] = "renew"
			p := n.launch(nil, args...)
			start := time.Now()
			if code := p.wait(t, time.Minute); code == 0 {
				t.Fatalf("renew into a %s directory exited 0:\n%s", tc.name, p.out.String())
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %s: a one-shot reports a local file error at once (the daemon is what retries it), it must not retry until the timeout", took)
			}
			if !strings.Contains(p.out.String(), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, p.out.String())
			}
			assertUnchanged(t, before, n.snapshot())
			if who, err := n.whoAmI(); err != nil || who != "system:node:"+n.name {
				t.Errorf("kubelet.conf after the failed renewal: %q, %v", who, err)
			}
		})
	}
}

// TestEndurance: the API server is stopped and started ten times while
// renewals (every ~10 s) are due. Afterwards the agent renews again, its
// goroutines and open file descriptors are back to their baseline, and the
// CSRs it made are bounded by the renewals that happened.
func TestEndurance(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig(shortLived + "serving:\n  enabled: false\n")
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	addr := p.httpAddr(t)
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
	t.Cleanup(func() {
		if t.Failed() {
			out := p.out.String()
			t.Logf("certagent's log (last 8 kB):\n%s", out[max(0, len(out)-8192):])
		}
	})
	sample := func() (goroutines, fds int, body string) {
		_, body = httpGet(t, "http://"+addr+"/metrics")
		// A missing or garbled series must fail the test, not read as 0 and
		// make the leak check below vacuous.
		var err error
		if goroutines, err = strconv.Atoi(metric(body, "go_goroutines")); err != nil || goroutines < 1 {
			t.Fatalf("go_goroutines: %q (%v)\n%s", metric(body, "go_goroutines"), err, body)
		}
		if fds, err = strconv.Atoi(metric(body, "process_open_fds")); err != nil || fds < 1 {
			t.Fatalf("process_open_fds: %q (%v)\n%s", metric(body, "process_open_fds"), err, body)
		}
		return goroutines, fds, body
	}
	// Baseline after the first renewal (a minute after issue), in the steady state.
	waitRenewals(t, n, 1, 2*time.Minute)
	time.Sleep(time.Second)
	g0, f0, _ := sample()
	start := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			_ = cp.StartAPIServer(context.Background())
		}
	}()
	for i := 0; i < 10; i++ {
		if err := cp.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		restarted = false
		time.Sleep(3 * time.Second)
		if err := cp.StartAPIServer(context.Background()); err != nil {
			t.Fatal(err)
		}
		restarted = true
		time.Sleep(2 * time.Second)
	}
	elapsed := time.Since(start)
	// Healthy: a renewal after the last outage. The bound is the agent's
	// longest transient back-off (2 minutes plus 20 %, if attempts kept
	// landing in outages) plus the controller-manager's own reconnection
	// after ten restarts (a CSR posted just after one can wait tens of
	// seconds to be signed): two minutes was not enough in one CI run.
	renewedBefore := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName))
	waitRenewals(t, n, renewedBefore, 4*time.Minute) // one more issued than there were CSRs
	// The renewal just seen may still be being stored and proven (its CSR
	// shows the certificate first): ready again within seconds.
	code := 0
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if code, _ = httpGet(t, "http://"+addr+"/readyz"); code == 200 {
			break
		}
	}
	if code != 200 {
		t.Errorf("/readyz = %d after the outages", code)
	}
	if who, err := n.whoAmI(); err != nil || who != "system:node:"+n.name {
		t.Fatalf("kubelet.conf after the outages: %q, %v", who, err)
	}
	// Resources back to the baseline (idle HTTP/2 connections may differ by a few goroutines).
	var g1, f1 int
	var body string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		if g1, f1, body = sample(); (g1 <= g0+4 && f1 <= f0+2) || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("goroutines %d -> %d, open fds %d -> %d over %s of outages", g0, g1, f0, f1, elapsed.Round(time.Second))
	if g1 > g0+4 || f1 > f0+2 {
		t.Errorf("goroutines %d -> %d or open fds %d -> %d: a leak across outages\n%s", g0, g1, f0, f1, body)
	}
	total := time.Since(start) + time.Minute
	csrs := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName))
	if limit := 2 + int(total/(9*time.Second)); csrs > limit {
		t.Errorf("%d client CSRs in %s, more than one per renewal interval (%d)", csrs, total.Round(time.Second), limit)
	}
	t.Logf("%d client CSRs in all", csrs)
}

// waitRenewals waits until the node has at least want client CSRs, all issued.
func waitRenewals(t *testing.T, n *node, want int, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		csrs := n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)
		issued := 0
		for _, c := range csrs {
			if len(c.Status.Certificate) > 0 {
				issued++
			}
		}
		if issued >= want+1 { // +1: the bootstrap CSR
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d issued client CSRs after %s, want %d renewals", issued, timeout, want)
		}
	}
}
