package fleet

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/bootstrap/tpm"
	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/protocol/attestation"
	"github.com/certagent/certagent/test/clusterside"
	"github.com/certagent/certagent/test/controlplane"
)

var flagAttest = flag.Bool("fleet.attest", os.Getenv("FLEET_ATTEST") == "1",
	"run TestAttestationScaleUp: N nodes, each with its own swtpm, join by TPM attestation, then N by token (default $FLEET_ATTEST=1; make fleet-attest)")

// Who made a request, as the attestation comparison counts them.
const (
	identityNode    = "the node's own"
	identitySA      = "the service account's"
	identityToken   = "the bootstrap token's"
	pathAttestation = "attestation"
	pathToken       = "bootstrap token"
)

// attestCluster is the control plane of the attestation comparison with the
// cluster side installed as docs/attestation.md has an operator do it.
type attestCluster struct {
	*cluster
	side *clusterside.Cluster
	svc  *clusterside.Service
	url  string
	// enrolled counts the TPMEnrollments applied so far.
	enrolled int
}

// TestAttestationScaleUp starts N certagent daemons at once that join by TPM
// attestation only (each with its own swtpm, enrolled by its EK hash; no
// bootstrap kubeconfig on the node) against certagent-cluster serve run as
// in the cluster (the shipped RBAC, a service-account kubeconfig), then N
// that join by the bootstrap token, on the same control plane (alternating
// the order over -fleet.rounds). Both with the serving certificate off:
// the client certificate is what the two ways differ in. Every node must
// end with a working kubelet.conf and exactly one client CSR, requested by
// the service account for an attested node and by the token otherwise.
func TestAttestationScaleUp(t *testing.T) {
	if !*flagAttest {
		t.Skip("the attestation fleet runs only when asked: FLEET_ATTEST=1 or -fleet.attest (make fleet-attest, FLEET_ATTEST_N nodes)")
	}
	ac := startAttestCluster(t)
	for round := 1; round <= *flagRounds; round++ {
		order := []string{pathAttestation, pathToken}
		if round%2 == 0 {
			order = []string{pathToken, pathAttestation}
		}
		for _, p := range order {
			joinRun(t, ac, p, round)
		}
	}
}

func startAttestCluster(t *testing.T) *attestCluster {
	t.Helper()
	c := startCluster(t, "attest", controlplane.Options{ControllerManagerQPS: float32(*flagQPS), ControllerManagerBurst: 2 * int(*flagQPS)})
	t.Cleanup(c.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := filepath.Join(work, "attest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ac := &attestCluster{cluster: c}
	side, err := clusterside.Install(ctx, c.ControlPlane, dir, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := side.ServiceAccountKubeconfig(ctx, clusterside.ServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	// Logs at info, as a Deployment runs it: debug lines for every node
	// would count in the service's CPU.
	svc, err := side.StartService(ctx, "fleet", kubeconfig, freeAddr(t), freeAddr(t), "--log-level", "info")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Stop() })
	ac.side, ac.svc, ac.url = side, svc, svc.URL
	t.Logf("attestation service at %s (log %s)", ac.url, ac.svc.LogPath)
	return ac
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// startTPMs manufactures and starts one swtpm per member (in parallel,
// a worker per core and one more), stopped when the test ends.
func startTPMs(t *testing.T, ac *attestCluster, f *fleet) (tpms []*swtpm.TPM, manufacture, start time.Duration) {
	t.Helper()
	tpms = make([]*swtpm.TPM, len(f.members))
	each := func(fn func(i int) error) error {
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []string
		)
		ch := make(chan int)
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range ch {
					if err := fn(i); err != nil {
						mu.Lock()
						errs = append(errs, fmt.Sprintf("%s: %v", f.members[i].name, err))
						mu.Unlock()
					}
				}
			}()
		}
		for i := range f.members {
			ch <- i
		}
		close(ch)
		wg.Wait()
		if len(errs) > 0 {
			return fmt.Errorf("%d TPMs: %s", len(errs), strings.Join(errs, "; "))
		}
		return nil
	}
	t0 := time.Now()
	if err := each(func(i int) (err error) {
		tpms[i], err = swtpm.Manufacture(filepath.Join(f.members[i].dir, "tpm"), ac.side.Vendor)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	manufacture = time.Since(t0)
	t.Cleanup(func() {
		for _, tp := range tpms {
			if tp != nil {
				tp.Stop()
			}
		}
	})
	t0 = time.Now()
	if err := each(func(i int) error { return tpms[i].Start() }); err != nil {
		t.Fatal(err)
	}
	return tpms, manufacture, time.Since(t0)
}

// enroll reads each TPM's EK hash as `certagent attest enroll` does
// (bootstrap/tpm.Enrollment), applies every member's TPMEnrollment with one
// kubectl apply and waits until the service's cache holds them all.
func enroll(t *testing.T, ac *attestCluster, f *fleet, tpms []*swtpm.TPM) {
	t.Helper()
	docs := make([]string, len(f.members))
	if err := f.parallel(func(m *member) error {
		i := indexOf(f, m)
		info, err := tpm.Enrollment(tpms[i].Path())
		if err != nil {
			return err
		}
		doc, err := yaml.Marshal(attestation.NewTPMEnrollment(m.name, info.EKHash, info.EKCertificateIssuer))
		docs[i] = string(doc)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := ac.side.KubectlCmd(ctx, strings.Join(docs, "---\n"), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply the TPMEnrollments: %v\n%s", err, out)
	}
	want := float64(ac.enrolled + len(f.members))
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		got, err := ac.svc.Metric("certagent_attestation_enrollments")
		if err != nil {
			t.Fatal(err)
		}
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service's cache holds %v TPMEnrollments, want %v", got, want)
		}
	}
	ac.enrolled += len(f.members)
}

func indexOf(f *fleet, m *member) int {
	for i, x := range f.members {
		if x == m {
			return i
		}
	}
	panic("not a member")
}

// attestConfig is a member's certagent config for joining by attestation
// alone: the service's URL and CA hash (what init-tls printed), its TPM, the
// API server and the cluster CA; no bootstrap kubeconfig exists on the node.
func attestConfig(ac *attestCluster, tp *swtpm.TPM) string {
	return fmt.Sprintf(`apiVersion: certagent.io/v1alpha1
kind: AgentConfig
metrics:
  address: 127.0.0.1:0
serving:
  enabled: false
attestation:
  serviceURL: %s
  serviceCAHash: %s
  tpm: %s
  server: %s
  certificateAuthority: %s
`, ac.url, ac.side.CA.Hash, tp.Path(), ac.URL, ac.CAFile)
}

// joinRun runs one fleet of N joining by path, checks every node and records
// the figures.
func joinRun(t *testing.T, ac *attestCluster, path string, round int) {
	n := *flagN
	prefix := fmt.Sprintf("tk%d", round)
	if path == pathAttestation {
		prefix = fmt.Sprintf("at%d", round)
	}
	f := newFleet(t, ac.cluster, certagentPath, prefix, n, "serving:\n  enabled: false\n")
	j := &JoinRun{Path: path, Round: round, N: n}
	var tpms []*swtpm.TPM
	if path == pathAttestation {
		var manufacture, start time.Duration
		tpms, manufacture, start = startTPMs(t, ac, f)
		j.TPMManufacture, j.TPMStart = manufacture, start
		t.Logf("%d swtpm manufactured in %s, started in %s", n, secs(manufacture), secs(start))
		t0 := time.Now()
		enroll(t, ac, f, tpms)
		j.Enroll = time.Since(t0)
		for i, m := range f.members {
			if err := os.Remove(m.boot); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(m.cfg, []byte(attestConfig(ac, tpms[i])), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	attempts0 := ac.attempts(t)
	apiserver, service := startMeter(t, ac.APIServerPID()), startMeter(t, ac.svc.PID())
	tpmCPU0 := tpmCPU(t, tpms)
	f.run(t)
	j.Spawn = f.spawned.Sub(f.start)
	f.waitAll(t, "kubelet.conf", scaleUpTimeout, hasKubeconfig)

	var written []time.Duration
	var last time.Time
	for _, m := range f.members {
		w := mtime(m.kubeconf)
		written, last = append(written, w.Sub(f.start)), later(last, w)
	}
	j.Written = NewDist(written)
	// The window: the start to 10 s after the last node was done, or to the
	// fleet's last Event (CertificateIssued, one per node) if later.
	end := later(last.Add(10*time.Second), f.eventsWritten(t, n, last.Add(eventsWithin)).Add(time.Second))
	time.Sleep(time.Until(end))
	apiserver.stop(t)
	service.stop(t)
	j.APIServerCPU, j.ServiceCPU, j.NodeCPU = apiserver.cpu/float64(n), service.cpu/float64(n), f.cpuSeconds()/float64(n)
	j.TPMCPU = (tpmCPU(t, tpms) - tpmCPU0) / float64(n)
	j.Requests = ac.requestsByIdentity(t, f, f.start, end)
	for k, v := range ac.attempts(t) {
		if d := v - attempts0[k]; d != 0 {
			if j.Attempts == nil {
				j.Attempts = map[string]float64{}
			}
			j.Attempts[k] = d
		}
	}

	// Exactly one client CSR per node, requested by the service account for
	// an attested node and with the bootstrap token otherwise; no serving CSR.
	j.Exact = true
	requesters := map[string]int{}
	perNode := map[string]int{}
	for _, c := range ac.census(t) {
		if !strings.HasPrefix(c.node, prefix+"-") {
			continue
		}
		if c.signer != certificatesv1.KubeAPIServerClientKubeletSignerName {
			j.Exact = false
			t.Errorf("%s: a CSR for %s", c.node, c.signer)
			continue
		}
		perNode[c.node]++
		requesters[c.username]++
	}
	id, _, _ := strings.Cut(ac.token, ".")
	wantRequester := "system:bootstrap:" + id
	if path == pathAttestation {
		wantRequester = clusterside.SAUser
	}
	for _, m := range f.members {
		if perNode[m.name] != 1 {
			j.Exact = false
			t.Errorf("%s: %d client CSRs, want 1", m.name, perNode[m.name])
		}
	}
	for u, k := range requesters {
		if u != wantRequester {
			j.Exact = false
			t.Errorf("%d CSRs requested by %s, want %s", k, u, wantRequester)
		}
	}
	j.Requesters = requesters
	for _, m := range f.members {
		m.mu.Lock()
		if m.exited {
			j.Exited++
		}
		m.mu.Unlock()
	}
	if j.Exited > 0 {
		t.Errorf("%d daemons exited", j.Exited)
	}
	f.stop()
	if err := f.parallel(func(m *member) error {
		if who, err := whoAmI(m); err != nil || who != "system:node:"+m.name {
			return fmt.Errorf("kubelet.conf: the API server says %q, %v", who, err)
		}
		return nil
	}); err != nil {
		t.Error(err)
		j.Failures = strings.Count(err.Error(), "\n") + 1
	}

	report.Joins = append(report.Joins, j)
	t.Logf("%s, %d nodes (round %d): processes started in %s", path, n, round, secs(j.Spawn))
	if path == pathAttestation {
		t.Logf("  swtpm: manufactured in %s, started in %s (not counted); enrolled in %s", secs(j.TPMManufacture), secs(j.TPMStart), secs(j.Enroll))
	}
	t.Logf("  kubelet.conf written (p50 / p99 / max): %s", j.Written)
	for _, who := range []string{identityNode, identitySA, identityToken} {
		t.Logf("  API requests per node, %s: %s (%s)", who, num(sum(j.Requests[who])), requestsText(j.Requests[who]))
	}
	t.Logf("  client CSRs: exactly 1 per node: %v; requested by %v", j.Exact, requesters)
	t.Logf("  CPU per node: attestation service %.1f ms, kube-apiserver %.1f ms, the node's certagent %.1f ms, its swtpm %.1f ms",
		1000*j.ServiceCPU, 1000*j.APIServerCPU, 1000*j.NodeCPU, 1000*j.TPMCPU)
	t.Logf("  service attempts: %v; daemons exited %d; kubelet.conf not working %d", j.Attempts, j.Exited, j.Failures)
}

// tpmCPU is the CPU seconds of the running swtpm processes so far.
func tpmCPU(t *testing.T, tpms []*swtpm.TPM) float64 {
	t.Helper()
	total := 0.0
	for _, tp := range tpms {
		s, err := cpuSeconds(tp.PID())
		if err != nil {
			t.Fatal(err)
		}
		total += s
	}
	return total
}

// attempts is the service's certagent_attestation_attempts_total by its
// labels.
func (ac *attestCluster) attempts(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, r := range []string{"challenged", "issued", "refused"} {
		v, err := ac.svc.Metric(fmt.Sprintf(`certagent_attestation_attempts_total{reason="",result=%q}`, r))
		if err != nil {
			t.Fatal(err)
		}
		out[r] = v
	}
	return out
}

// requestsByIdentity counts, per node, the requests received in [from, to)
// by f's nodes' own identities, by the service account (all of its requests
// in the window: it works for no one else), and with the bootstrap token,
// each by verb and resource.
func (ac *attestCluster) requestsByIdentity(t *testing.T, f *fleet, from, to time.Time) map[string]map[string]float64 {
	t.Helper()
	id, _, _ := strings.Cut(ac.token, ".")
	who := func(u string) string {
		switch {
		case u == "system:bootstrap:"+id:
			return identityToken
		case u == clusterside.SAUser:
			return identitySA
		case strings.HasPrefix(u, "system:node:"+f.prefix+"-"):
			return identityNode
		}
		return ""
	}
	evs, err := ac.AuditEvents(from, to, func(ev controlplane.AuditEvent) bool { return who(ev.User.Username) != "" })
	if err != nil {
		t.Fatal(err)
	}
	n := float64(len(f.members))
	out := map[string]map[string]float64{identityNode: {}, identitySA: {}, identityToken: {}}
	for _, ev := range evs {
		out[who(ev.User.Username)][requestKey(ev)] += 1 / n
	}
	return out
}
