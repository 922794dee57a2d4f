package fleet

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/test/controlplane"
)

var (
	flagCARotation = flag.Bool("fleet.carotation", os.Getenv("FLEET_CAROT") == "1",
		"run the CA rotation fleet, TestCARotationFleet (default $FLEET_CAROT=1; make fleet-carotation)")
	flagReissueSpread = flag.Duration("fleet.reissue-spread", 2*time.Minute, "the fleet's trust.reissueSpread in TestCARotationFleet")
)

// TestCARotationFleet rotates the cluster CA, phase by phase as
// docs/ca-rotation.md says, under -fleet.n certagent daemons that follow the
// published trust, and reports how long each phase took to reach every node
// and the peak of re-issue CSRs per 10 s. Every daemon keeps running, makes
// one re-issue CSR per certificate, and ends on the new CA alone.
func TestCARotationFleet(t *testing.T) {
	if !*flagCARotation {
		t.Skip("the CA rotation fleet runs only when asked: FLEET_CAROT=1 or -fleet.carotation (make fleet-carotation)")
	}
	c := startCluster(t, "carot", controlplane.Options{PublishServingTrust: true,
		ControllerManagerQPS: float32(*flagQPS), ControllerManagerBurst: 2 * int(*flagQPS)})
	t.Cleanup(c.stop)
	applyTrustRBAC(t, c)
	f := newFleet(t, c, certagentPath, "rot", *flagN, fmt.Sprintf("trust:\n  follow: true\n  reissueSpread: %s\n", *flagReissueSpread))
	f.run(t)
	f.waitAll(t, "a serving certificate", 10*time.Minute, hasServing)
	r := &rotationRun{t: t, c: c, f: f}
	r.phase("1. trust the new CA", c.AddCA, func(m *member) bool { return caFileHolds(m, 2) }, 5*time.Minute)
	newCA := parseOne(t, c.NewCACertPEM())
	r.phase("2. serve from the new CA", c.SwitchServing, nil, 0)
	signed := r.phase("3. sign from the new CA", c.SwitchSigners, func(m *member) bool { return onCA(m, newCA) }, *flagReissueSpread+5*time.Minute)
	r.phase("4. call kubelets as the new CA", c.SwitchKubeletClient, nil, 0)
	r.phase("5. drop the old CA", c.RemoveOldCA, func(m *member) bool { return caFileHolds(m, 1) && onCA(m, newCA) }, 5*time.Minute)
	peak, perNode := reissues(c.census(t), signed)
	total := 0
	for _, m := range f.members {
		total += perNode[m.name]
		if m.restarts != 0 || m.exited {
			t.Errorf("%s: certagent exited during the rotation", m.name)
		}
		if n := perNode[m.name]; n != 2 {
			t.Errorf("%s: %d CSRs after phase 3, want 2 (the client and serving re-issue)", m.name, n)
		}
	}
	md := fmt.Sprintf("## A CA rotation under %d certagent nodes (trust.reissueSpread %s)\n\n"+
		"| phase | the operator's step took | every node had followed after |\n|---|---|---|\n%s\n\n"+
		"CSRs after phase 3: %d (%.2f per node); the most in any 10 s: %d.\n",
		len(f.members), *flagReissueSpread, strings.Join(r.rows, "\n"), total, float64(total)/float64(len(f.members)), peak)
	t.Log("\n" + md)
	if *flagOut != "" {
		if err := os.WriteFile(filepath.Join(*flagOut, "carotation.md"), []byte(md), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// rotationRun times the phases of one rotation.
type rotationRun struct {
	t    *testing.T
	c    *cluster
	f    *fleet
	rows []string
}

// phase runs the operator's step do, then waits until until holds for every
// node (if set), and records both times; it returns when the step began.
func (r *rotationRun) phase(name string, do func(context.Context) error, until func(*member) bool, timeout time.Duration) time.Time {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := do(ctx); err != nil {
		r.t.Fatalf("%s: %v", name, err)
	}
	stepped := time.Since(start)
	if err := r.c.refreshClient(); err != nil {
		r.t.Fatal(err)
	}
	followed := "—"
	if until != nil {
		followed = r.f.waitAll(r.t, name, timeout, until).Sub(start).Round(100 * time.Millisecond).String()
	}
	r.rows = append(r.rows, fmt.Sprintf("| %s | %s | %s |", name, stepped.Round(100*time.Millisecond), followed))
	return start
}

// applyTrustRBAC lets the nodes read the published trust, as the runbook says.
func applyTrustRBAC(t *testing.T, c *cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kubectl, err := controlplane.EnsureKubectl(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", c.AdminKubeconfig, "apply", "-f", "../../packaging/cluster/trust/rbac.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply: %v: %s", err, out)
	}
}

// caFileHolds: m's kubelet.conf CA file holds n CAs.
func caFileHolds(m *member, n int) bool {
	data, err := os.ReadFile(filepath.Join(m.certDir, "kube-apiserver-ca.crt"))
	if err != nil {
		return false
	}
	certs, err := controlplane.ParseCerts(data)
	return err == nil && len(certs) == n
}

// onCA: both of m's certificates were signed by ca.
func onCA(m *member, ca *x509.Certificate) bool {
	for _, prefix := range []string{"kubelet-client", "kubelet-server"} {
		data, err := os.ReadFile(filepath.Join(m.certDir, prefix+"-current.pem"))
		if err != nil {
			return false
		}
		certs, err := controlplane.ParseCerts(data)
		if err != nil || len(certs) == 0 || certs[0].CheckSignatureFrom(ca) != nil {
			return false
		}
	}
	return true
}

func parseOne(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	certs, err := controlplane.ParseCerts(data)
	if err != nil || len(certs) != 1 {
		t.Fatalf("want one certificate: %v (%d)", err, len(certs))
	}
	return certs[0]
}

// reissues counts the CSRs created since since, per node, and the most in
// any 10 s (by creation time).
func reissues(census []csrInfo, since time.Time) (peak int, perNode map[string]int) {
	perNode = map[string]int{}
	bins := map[int64]int{}
	for _, c := range census {
		if c.created.Before(since.Truncate(time.Second)) {
			continue
		}
		perNode[c.node]++
		bins[c.created.Unix()/10]++
	}
	for _, n := range bins {
		peak = max(peak, n)
	}
	return peak, perNode
}
