package fleet

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/test/controlplane"
)

// cluster is a control plane with kubeadm's auto-approval of client CSRs, one
// shared bootstrap token (as a kubeadm cluster often has), and an approver
// that approves every kubelet serving CSR as it appears, as
// kubelet-csr-approver would.
type cluster struct {
	*controlplane.ControlPlane
	label string // "default limit (QPS 20, burst 30)" or the raised one
	token string
	// client is admin's, not rate-limited here: the approver must not be
	// what paces the fleet. A CA rotation replaces it (refreshClient).
	client atomic.Pointer[kubernetes.Clientset]
	stop   func()
}

var (
	sharedMu sync.Mutex
	shared   *cluster
)

// sharedCluster is the control plane with the raised controller-manager
// limit that the tests after the default-limit scale-up share; TestMain
// stops it.
func sharedCluster(t *testing.T) *cluster {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil {
		shared = startCluster(t, "raised", controlplane.Options{ControllerManagerQPS: float32(*flagQPS), ControllerManagerBurst: 2 * int(*flagQPS)})
	}
	return shared
}

func stopSharedCluster() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.stop()
		shared = nil
	}
}

// startCluster starts a control plane with opts (the controller-manager's
// client rate limit, 0 for its defaults; the API server's concurrency) and
// the test's approver.
func startCluster(t *testing.T, name string, opts controlplane.Options) *cluster {
	t.Helper()
	return startClusterWith(t, name, opts, true)
}

// startClusterWith starts a control plane with opts, and the test's
// approver inside the test process if adhoc (else none).
func startClusterWith(t *testing.T, name string, opts controlplane.Options, adhoc bool) *cluster {
	t.Helper()
	setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	opts.Dir, opts.Logf = filepath.Join(work, "cp-"+name), t.Logf
	cp, err := controlplane.Start(ctx, cpBins, opts)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{ControlPlane: cp, label: limitLabel(opts.ControllerManagerQPS, opts.ControllerManagerBurst)}
	t.Logf("control plane %s with the controller-manager's %s up in %s", cpBins.Version, c.label, time.Since(start).Round(time.Millisecond))
	if err := c.refreshClient(); err != nil {
		cp.Stop()
		t.Fatal(err)
	}
	if c.token, err = cp.CreateBootstrapToken(ctx, controlplane.TokenOptions{AutoApprove: true}); err != nil {
		cp.Stop()
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if adhoc {
			approveServing(actx, c.api)
		}
	}()
	c.stop = func() { acancel(); <-done; cp.Stop() }
	return c
}

// api is the admin client.
func (c *cluster) api() kubernetes.Interface { return c.client.Load() }

// refreshClient builds the admin client from the control plane's admin
// configuration as it is now (a CA rotation's phases replace it).
func (c *cluster) refreshClient() error {
	cfg := rest.CopyConfig(c.AdminConfig)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit
	cfg.UserAgent = "fleet-approver"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	c.client.Store(cs)
	return nil
}

func limitLabel(qps float32, burst int) string {
	if qps == 0 {
		return "default limit (QPS 20, burst 30)"
	}
	return fmt.Sprintf("raised limit (QPS %g, burst %d)", qps, burst)
}

// approveServing approves every pending kubelet serving CSR, learning of them
// by watch (one list, then a watch from its resource version, again after a
// watch ends), with a few workers so that approvals are not serialized
// behind one round trip each.
// api gives the client to use now (a CA rotation replaces the admin's).
func approveServing(ctx context.Context, api func() kubernetes.Interface) {
	todo := make(chan certificatesv1.CertificateSigningRequest, 4096)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for csr := range todo {
				approve(ctx, api(), &csr)
			}
		}()
	}
	defer func() { close(todo); wg.Wait() }()
	offer := func(csr *certificatesv1.CertificateSigningRequest) {
		if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName && len(csr.Status.Conditions) == 0 {
			todo <- *csr
		}
	}
	for ctx.Err() == nil {
		csrs := api().CertificatesV1().CertificateSigningRequests()
		list, err := csrs.List(ctx, metav1.ListOptions{})
		if err != nil {
			sleepCtx(ctx, time.Second) // the API server may be down (the outage)
			continue
		}
		for i := range list.Items {
			offer(&list.Items[i])
		}
		w, err := csrs.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true})
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		for ev := range w.ResultChan() {
			if csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				offer(csr)
			}
		}
		w.Stop()
	}
}

// approve adds the Approved condition as `kubectl certificate approve` does,
// from the object the watch delivered (one write); on a conflict it reads
// the CSR again.
func approve(ctx context.Context, api kubernetes.Interface, csr *certificatesv1.CertificateSigningRequest) {
	csrs := api.CertificatesV1().CertificateSigningRequests()
	for range 5 {
		for _, cond := range csr.Status.Conditions {
			if cond.Type == certificatesv1.CertificateApproved || cond.Type == certificatesv1.CertificateDenied {
				return
			}
		}
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
			Reason: "FleetApprove", Message: "approved by the fleet test's approver", LastUpdateTime: metav1.Now(),
		})
		_, err := csrs.UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{})
		if err == nil || ctx.Err() != nil {
			return
		}
		sleepCtx(ctx, 200*time.Millisecond)
		if csr, err = csrs.Get(ctx, csr.Name, metav1.GetOptions{}); err != nil {
			continue
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// csrInfo is one CSR as the tests count it.
type csrInfo struct {
	name, node, signer, username string
	created                      time.Time
	issued                       bool
}

// census lists every CSR with the node its subject names.
func (c *cluster) census(t *testing.T) []csrInfo {
	t.Helper()
	list, err := c.api().CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []csrInfo
	for _, csr := range list.Items {
		info := csrInfo{name: csr.Name, signer: csr.Spec.SignerName, username: csr.Spec.Username,
			created: csr.CreationTimestamp.Time, issued: len(csr.Status.Certificate) > 0}
		if block, _ := pem.Decode(csr.Spec.Request); block != nil {
			if req, err := x509.ParseCertificateRequest(block.Bytes); err == nil {
				info.node = strings.TrimPrefix(req.Subject.CommonName, "system:node:")
			}
		}
		out = append(out, info)
	}
	return out
}

// deleteCSRs removes every CSR, so the next fleet starts on a clean slate.
func (c *cluster) deleteCSRs(t *testing.T) {
	t.Helper()
	err := c.api().CertificatesV1().CertificateSigningRequests().DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// procStats reads a process's CPU time (utime+stime) and a field of its
// /proc status (VmRSS, VmHWM) in KiB.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after its ')' are fixed.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

func statusKiB(pid int, field string) (int64, error) { return procKiB(pid, "status", field) }

// smapsRollupKiB reads a field of /proc/PID/smaps_rollup (Pss, Anonymous) in KiB.
func smapsRollupKiB(pid int, field string) (int64, error) { return procKiB(pid, "smaps_rollup", field) }

// procKiB reads the "field: N kB" line of /proc/PID/file.
func procKiB(pid int, file, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/%s has no %s", pid, file, field)
}

// resetPeak makes VmHWM start again from the current RSS (clear_refs 5).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200)
}

// meter measures a control-plane process's work over a phase: CPU seconds
// and the peak RSS above what it held at the start.
type meter struct {
	pid    int
	cpu0   float64
	rss0   int64
	cpu    float64 // seconds, after stop
	peakUp int64   // KiB above rss0, after stop
}

func startMeter(t *testing.T, pid int) *meter {
	t.Helper()
	m := &meter{pid: pid}
	var err error
	if err = resetPeak(m.pid); err == nil {
		if m.rss0, err = statusKiB(m.pid, "VmRSS"); err == nil {
			m.cpu0, err = cpuSeconds(m.pid)
		}
	}
	if err != nil {
		t.Fatalf("reading process %d: %v", pid, err)
	}
	return m
}

func (m *meter) stop(t *testing.T) {
	t.Helper()
	cpu, err := cpuSeconds(m.pid)
	if err != nil {
		t.Fatal(err)
	}
	hwm, err := statusKiB(m.pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	m.cpu, m.peakUp = cpu-m.cpu0, hwm-m.rss0
}
