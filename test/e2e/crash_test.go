package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/test/controlplane"
)

var (
	failpointBinOnce sync.Once
	failpointBin     string
	failpointErr     error
)

// buildFailpointBinary builds certagent with -tags failpoints (internal/failpoint).
func buildFailpointBinary(t *testing.T) string {
	t.Helper()
	failpointBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "certagent-failpoints-")
		if err != nil {
			failpointErr = err
			return
		}
		failpointBin = filepath.Join(dir, "certagent")
		cmd := exec.Command("go", "build", "-tags", "failpoints", "-o", failpointBin, "./cmd/certagent")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			failpointErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if failpointErr != nil {
		t.Fatal(failpointErr)
	}
	return failpointBin
}

// crashPoint is the n-th time a failpoint is reached in a run.
type crashPoint struct {
	name string
	n    int
}

func (p crashPoint) String() string { return fmt.Sprintf("%s:%d", p.name, p.n) }

// runWith runs bin with args and env for the node and returns whether it was
// killed by SIGKILL, its exit code otherwise, and its output.
func (n *node) runWith(bin string, env []string, args ...string) (killed bool, code int, out string) {
	n.t.Helper()
	// Bounded: a run that hangs is a failure, and must not outlive the test.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		n.t.Fatalf("%s %v did not finish in 2 minutes\n%s", bin, args, b)
	}
	n.assertNoSecrets(string(b))
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true, -1, string(b)
		}
		return false, ee.ExitCode(), string(b)
	}
	if err != nil {
		n.t.Fatalf("%s: %v", bin, err)
	}
	return false, 0, string(b)
}

// approveServing approves this node's pending serving CSRs until ctx ends.
func (n *node) approveServing(ctx context.Context) { n.approver(ctx) }

// checkConsistent asserts what must hold after any crash: kubelet.conf absent
// or loadable with its client certificate, every *-current.pem a matching
// certificate and key, and at most one new CSR per certificate since before
// (one logical request each), accounted for by the certificate it produced
// or by the pending key that will reuse it.
func (n *node) checkConsistent(when string, before map[string]bool) {
	n.t.Helper()
	if _, err := os.Stat(n.kubeconf); err == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", n.kubeconf)
		if err != nil {
			n.t.Fatalf("%s: kubelet.conf does not load: %v", when, err)
		}
		if _, err := tls.LoadX509KeyPair(rc.CertFile, rc.KeyFile); err != nil {
			n.t.Fatalf("%s: kubelet.conf's client certificate does not load: %v", when, err)
		}
	}
	for _, kind := range []string{"client", "server"} {
		cur := filepath.Join(n.certDir, "kubelet-"+kind+"-current.pem")
		if _, err := os.Lstat(cur); err != nil {
			continue
		}
		data, err := os.ReadFile(cur)
		if err != nil {
			n.t.Fatalf("%s: %s dangles: %v", when, cur, err)
		}
		if _, err := tls.X509KeyPair(data, data); err != nil {
			n.t.Fatalf("%s: %s is not a complete certificate and key: %v", when, cur, err)
		}
	}
	for _, signer := range []string{certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName} {
		kind := "client"
		if signer == certificatesv1.KubeletServingSignerName {
			kind = "server"
		}
		onDisk := n.publicKeys(kind)
		var fresh []string
		for _, c := range n.csrs(signer) {
			if before[c.Name] {
				continue
			}
			fresh = append(fresh, c.Name)
			b, _ := pem.Decode(c.Spec.Request)
			req, err := x509.ParseCertificateRequest(b.Bytes)
			if err != nil || !onDisk[string(req.RawSubjectPublicKeyInfo)] {
				n.t.Fatalf("%s: %s CSR %s belongs to no key on disk: the request was orphaned", when, kind, c.Name)
			}
		}
		if len(fresh) > 1 {
			n.t.Fatalf("%s: %d new %s CSRs %v for one request", when, len(fresh), kind, fresh)
		}
	}
}

// publicKeys are the public keys of kind on disk: stored certificates and the pending key.
func (n *node) publicKeys(kind string) map[string]bool {
	pub := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(n.certDir, "kubelet-"+kind+"-*.pem"))
	for _, f := range append(files, filepath.Join(n.certDir, "kubelet-"+kind+"-pending.key")) {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for rest := data; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			switch {
			case b.Type == "CERTIFICATE":
				if c, err := x509.ParseCertificate(b.Bytes); err == nil {
					pub[string(c.RawSubjectPublicKeyInfo)] = true
				}
			case strings.HasSuffix(b.Type, "PRIVATE KEY"):
				if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
					der, _ := x509.MarshalPKIXPublicKey(k.Public())
					pub[string(der)] = true
				}
			}
		}
	}
	return pub
}

// csrNames is the set of the node's CSR names now.
func (n *node) csrNames() map[string]bool {
	out := map[string]bool{}
	for _, signer := range []string{certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName} {
		for _, c := range n.csrs(signer) {
			out[c.Name] = true
		}
	}
	return out
}

// assertNoTemp: no temporary files of atomic writes are left.
func (n *node) assertNoTemp(when string) {
	n.t.Helper()
	for _, d := range []string{n.certDir, filepath.Dir(n.kubeconf)} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp-certagent-") {
				n.t.Fatalf("%s: stray temporary file %s", when, filepath.Join(d, e.Name()))
			}
		}
	}
}

// discoverPoints runs one clean bootstrap and one forced renewal with the
// failpoint log on and returns the points each reaches, in order.
func discoverPoints(t *testing.T, bin string) (boot, renew []crashPoint) {
	t.Helper()
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.approveServing(ctx)
	read := func(args ...string) []crashPoint {
		log := filepath.Join(n.dir, "points.log")
		_ = os.Remove(log)
		if killed, code, out := n.runWith(bin, []string{"CERTAGENT_FAILPOINT_LOG=" + log}, args...); killed || code != 0 {
			t.Fatalf("discovery run %v: exit %d\n%s", args, code, out)
		}
		data, _ := os.ReadFile(log)
		seen := map[string]int{}
		var points []crashPoint
		for _, name := range strings.Fields(string(data)) {
			seen[name]++
			points = append(points, crashPoint{name, seen[name]})
		}
		return points
	}
	boot = read(n.args("--once")...)
	args := n.args()
	args[0] = "renew"
	renew = read(append(args, "--force")...)
	return boot, renew
}

// TestCrashConsistency kills certagent with SIGKILL at every failpoint of a
// bootstrap and of a forced renewal of both certificates, then at random ones
// (seeded: CERTAGENT_CRASH_SEED, CERTAGENT_CRASH_TRIALS), and after each kill
// and after the restart checks the invariants above.
func TestCrashConsistency(t *testing.T) {
	bin := buildFailpointBinary(t)
	seed := uint64(1)
	if v := os.Getenv("CERTAGENT_CRASH_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("CERTAGENT_CRASH_SEED=%q: %v", v, err)
		}
	}
	trials := 200
	if v := os.Getenv("CERTAGENT_CRASH_TRIALS"); v != "" {
		var err error
		if trials, err = strconv.Atoi(v); err != nil || trials < 1 {
			t.Fatalf("CERTAGENT_CRASH_TRIALS=%q: want a positive number (%v)", v, err)
		}
	}
	bootPoints, renewPoints := discoverPoints(t, bin)
	t.Logf("seed %d: %d failpoints in a bootstrap, %d in a forced renewal", seed, len(bootPoints), len(renewPoints))
	if len(bootPoints) < 20 || len(renewPoints) < 15 {
		t.Fatalf("too few failpoints reached: %v / %v", bootPoints, renewPoints)
	}
	type trial struct {
		renewal bool
		point   crashPoint
	}
	var plan []trial
	for _, p := range bootPoints {
		plan = append(plan, trial{false, p})
	}
	for _, p := range renewPoints {
		plan = append(plan, trial{true, p})
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for len(plan) < trials {
		if rng.IntN(2) == 0 {
			plan = append(plan, trial{false, bootPoints[rng.IntN(len(bootPoints))]})
		} else {
			plan = append(plan, trial{true, renewPoints[rng.IntN(len(renewPoints))]})
		}
	}
	kills := 0
	start := time.Now()
	for i, tr := range plan {
		scenario := "bootstrap"
		if tr.renewal {
			scenario = "renewal"
		}
		ok := t.Run(fmt.Sprintf("%03d-%s-%s", i, scenario, tr.point), func(t *testing.T) {
			n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go n.approveServing(ctx)
			args := n.args("--once")
			if tr.renewal {
				if killed, code, out := n.runWith(certagentBin, nil, args...); killed || code != 0 {
					t.Fatalf("initial bootstrap: exit %d\n%s", code, out)
				}
				args = n.args("--force")
				args[0] = "renew"
			}
			before := n.csrNames()
			killed, code, out := n.runWith(bin, []string{"CERTAGENT_FAILPOINT=" + tr.point.String()}, args...)
			if !killed {
				t.Fatalf("not killed at %s (exit %d)\n%s", tr.point, code, out)
			}
			kills++
			n.checkConsistent("after the kill", before)
			// Restart: a plain run completes a bootstrap (nothing valid yet)
			// and leaves a valid pair alone; either way it cleans up.
			if killed, code, out := n.runWith(certagentBin, nil, n.args("--once")...); killed || code != 0 {
				t.Fatalf("restart: exit %d\n%s", code, out)
			}
			n.checkConsistent("after the restart", before)
			n.assertNoTemp("after the restart")
			if !tr.renewal {
				for _, signer := range []string{certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName} {
					if got := len(n.csrs(signer)); got != 1 {
						t.Fatalf("%d %s CSRs after a crash and restart of one bootstrap, want 1", got, signer)
					}
				}
				if exists(n.bootstrap) {
					t.Fatal("bootstrap kubeconfig still there after the restart completed")
				}
			}
		})
		if !ok {
			t.Fatalf("stopping after the first failed trial (seed %d, trial %d)", seed, i)
		}
	}
	t.Logf("%d trials, %d kills, in %s", len(plan), kills, time.Since(start).Round(time.Second))
}
