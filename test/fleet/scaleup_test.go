package fleet

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// scaleUpTimeout bounds a scale-up: 500 nodes take about 75 s with the
// controller-manager's default limit (three of its writes per node).
const scaleUpTimeout = 15 * time.Minute

// What an idle daemon may hold on average (a daemon on every node pays its
// memory once per node): its anonymous memory, what the node pays for it
// alone, and its PSS, which adds its share of the binary's pages (a
// five-hundredth of them with 500 daemons of one binary, a twentieth with 20).
const (
	idleAnonLimitMiB = 5.0
	idlePSSLimitMiB  = 7.0
)

// The fleets a scale-up compares: certagent as it runs (client and serving
// certificate), certagent with serving.enabled: false (the same work as
// the kubelet's path), and the kubelet's LoadClientCert.
const (
	variantFull       = "certagent"
	variantClientOnly = "certagent, client only"
	variantKubelet    = "kubelet"
)

// scaleUp runs one fleet of N of the variant to completion, checks it and
// records its figures; place (in the order of fleets) keeps a repeated
// variant's nodes apart, and round counts the variant's runs under limit.
func scaleUp(t *testing.T, c *cluster, limit, variant string, place, round int) {
	n := *flagN
	kind, prefix, extra := certagentPath, "ca", ""
	switch variant {
	case variantClientOnly:
		prefix, extra = "cc", "serving:\n  enabled: false\n"
	case variantKubelet:
		kind, prefix = kubeletPath, "kl"
	}
	serving := variant == variantFull
	f := newFleet(t, c, kind, fmt.Sprintf("%s-%s%d", prefix, limit, place), n, extra)
	apiserver, kcm := startMeter(t, c.APIServerPID()), startMeter(t, c.ControllerManagerPID())
	f.run(t)
	done := hasKubeconfig
	if serving {
		done = hasServing
	}
	f.waitAll(t, "their certificates", scaleUpTimeout, done)

	s := &ScaleUp{Limit: limit, LimitText: c.label, Path: variant, Round: round, N: n, Spawn: f.spawned.Sub(f.start)}
	var written, proven, served []time.Duration
	var last time.Time
	for _, m := range f.members {
		w := mtime(m.kubeconf)
		written = append(written, w.Sub(f.start))
		last = later(last, w)
		if kind != certagentPath {
			continue
		}
		p := m.first(func(l logLine) bool { return l.Msg == "kubelet.conf works" })
		if p.IsZero() {
			t.Fatalf("%s: no %q line in its log:\n%s", m.name, "kubelet.conf works", tailFile(m.log, 20))
		}
		proven, last = append(proven, p.Sub(f.start)), later(last, p)
		if !serving {
			continue
		}
		sv := m.servingStored()
		if sv.IsZero() {
			t.Fatalf("%s: no serving %q line in its log:\n%s", m.name, "certificate stored", tailFile(m.log, 20))
		}
		served, last = append(served, sv.Sub(f.start)), later(last, sv)
	}
	s.Written, s.Proven, s.Serving = NewDist(written), NewDist(proven), NewDist(served)

	// The window the figures cover: the fleet's start to 10 s after the last
	// node was done, or to the last of certagent's Events if that is later
	// (a node that waited long holds its CertificateIssued back).
	end := last.Add(10 * time.Second)
	if kind == certagentPath {
		want := n
		if serving {
			want = 2 * n
		}
		end = later(end, f.eventsWritten(t, want, last.Add(eventsWithin)).Add(time.Second))
	}
	time.Sleep(time.Until(end))
	apiserver.stop(t)
	kcm.stop(t)
	s.APIServerCPU, s.APIServerPeakKiB = apiserver.cpu/float64(n), float64(apiserver.peakUp)/float64(n)
	s.ControllerManagerCPU = kcm.cpu / float64(n)
	s.NodeCPU = f.cpuSeconds() / float64(n)
	s.Requests, s.TokenRequests, s.Throttled = f.requests(t, f.start, end)
	for _, m := range f.members {
		m.mu.Lock()
		s.Restarts += m.restarts
		m.mu.Unlock()
	}

	// Exactly one client and one serving CSR per node.
	perNode := f.csrsPerNode(t)
	wantServing := 0
	if serving {
		wantServing = 1
	}
	s.ClientCSRs, s.ServingCSRs, s.Exact = 1, wantServing, true
	for _, m := range f.members {
		got := perNode[m.name]
		if got[certificatesv1.KubeAPIServerClientKubeletSignerName] != 1 || got[certificatesv1.KubeletServingSignerName] != wantServing {
			s.Exact = false
			t.Errorf("%s: %d client and %d serving CSRs, want 1 and %d", m.name,
				got[certificatesv1.KubeAPIServerClientKubeletSignerName], got[certificatesv1.KubeletServingSignerName], wantServing)
		}
	}

	if serving {
		// Idle: 30 s after the last node was done, and 10 s after the
		// fleet's last Event (a daemon closes its idle connections 2 s
		// after its last work).
		time.Sleep(time.Until(later(last.Add(30*time.Second), end.Add(10*time.Second))))
		s.Idle = f.memory(t)
		checkIdleMemory(t, s.Idle, "since the last node was done")
	}
	f.stop()

	// Every node's kubelet.conf works (asked after the window) and its
	// files hold this node's certificates.
	if err := f.parallel(func(m *member) error {
		if who, err := whoAmI(m); err != nil || who != "system:node:"+m.name {
			return fmt.Errorf("kubelet.conf: the API server says %q, %v", who, err)
		}
		if serving {
			return checkServing(m)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	report.ScaleUps = append(report.ScaleUps, s)
	t.Logf("%s, %d nodes, controller-manager %s: processes started in %s", variant, n, c.label, secs(s.Spawn))
	t.Logf("  kubelet.conf written (p50 / p99 / max): %s", s.Written)
	if kind == certagentPath {
		t.Logf("  kubelet.conf accepted by the API server: %s", s.Proven)
	}
	if serving {
		t.Logf("  serving certificate stored:               %s", s.Serving)
		t.Logf("  idle daemons' memory, mean / max: %s", s.Idle)
	}
	t.Logf("  CPU of the node processes: %.1f ms per node", 1000*s.NodeCPU)
	t.Logf("  API requests per node: %s total, %s with the bootstrap token; %s; 429s per node %s",
		num(sum(s.Requests)), num(s.TokenRequests), requestsText(s.Requests), num(s.Throttled))
	t.Logf("  CSRs per node: %d client + %d serving (every node: %v); kubelet restarts %d", s.ClientCSRs, s.ServingCSRs, s.Exact, s.Restarts)
	t.Logf("  kube-apiserver: %.1f ms CPU and %.0f KiB peak RSS growth per node (%.1f s, %.0f MiB in all)",
		1000*s.APIServerCPU, s.APIServerPeakKiB, apiserver.cpu, float64(apiserver.peakUp)/1024)
	t.Logf("  kube-controller-manager: %.1f ms CPU per node", 1000*s.ControllerManagerCPU)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// isFleetUser reports whether an audit event was made by one of f's nodes:
// the shared bootstrap token or a node identity <prefix>-….
func (f *fleet) isFleetUser(ev controlplane.AuditEvent) bool {
	id, _, _ := strings.Cut(f.c.token, ".")
	u := ev.User.Username
	return u == "system:bootstrap:"+id || strings.HasPrefix(u, "system:node:"+f.prefix+"-")
}

// requests counts the fleet's requests received in [from, to) per node: by
// verb and resource, those made with the bootstrap token, and the 429
// answers.
func (f *fleet) requests(t *testing.T, from, to time.Time) (byKind map[string]float64, token, throttled float64) {
	t.Helper()
	evs, err := f.c.AuditEvents(from, to, f.isFleetUser)
	if err != nil {
		t.Fatal(err)
	}
	n := float64(len(f.members))
	byKind = map[string]float64{}
	for _, ev := range evs {
		byKind[requestKey(ev)] += 1 / n
		if strings.HasPrefix(ev.User.Username, "system:bootstrap:") {
			token += 1 / n
		}
		if ev.ResponseStatus != nil && ev.ResponseStatus.Code == 429 {
			throttled += 1 / n
		}
	}
	return byKind, token, throttled
}

// eventsWithin bounds how long after the last node was done its Events may
// come: a node writes them when they happen, but under load a write takes a
// while.
const eventsWithin = time.Minute

// eventsWritten waits until f's nodes have created want Events (or until
// deadline, which fails the test) and returns when the API server received
// the last of them.
func (f *fleet) eventsWritten(t *testing.T, want int, deadline time.Time) time.Time {
	t.Helper()
	for {
		evs, err := f.c.AuditEvents(f.start, time.Now().Add(time.Minute), func(ev controlplane.AuditEvent) bool {
			return f.isFleetUser(ev) && ev.Verb == "create" && ev.ObjectRef != nil && ev.ObjectRef.Resource == "events"
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) >= want {
			var at time.Time
			for _, ev := range evs {
				at = later(at, ev.RequestReceivedTimestamp)
			}
			return at
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Events created by the fleet's nodes by %s, want %d", len(evs), deadline.Format(time.TimeOnly), want)
		}
		time.Sleep(time.Second)
	}
}

// requestKey is "verb resource[/subresource]", or "verb /path" for a
// non-resource request.
func requestKey(ev controlplane.AuditEvent) string {
	if r := ev.ObjectRef; r != nil && r.Resource != "" {
		res := r.Resource
		if r.Subresource != "" {
			res += "/" + r.Subresource
		}
		return ev.Verb + " " + res
	}
	path, _, _ := strings.Cut(ev.RequestURI, "?")
	return ev.Verb + " " + path
}

func requestsText(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %s", k, num(v)))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// csrsPerNode counts the CSRs of f's nodes by node and signer.
func (f *fleet) csrsPerNode(t *testing.T) map[string]map[string]int {
	t.Helper()
	out := map[string]map[string]int{}
	for _, c := range f.c.census(t) {
		if !strings.HasPrefix(c.node, f.prefix+"-") {
			continue
		}
		if out[c.node] == nil {
			out[c.node] = map[string]int{}
		}
		out[c.node][c.signer]++
	}
	return out
}

// checkServing requires m's serving certificate to be for m: its subject
// and its DNS name.
func checkServing(m *member) error {
	data, err := os.ReadFile(filepath.Join(m.certDir, "kubelet-server-current.pem"))
	if err != nil {
		return err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return fmt.Errorf("kubelet-server-current.pem holds no certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	if c.Subject.CommonName != "system:node:"+m.name || len(c.DNSNames) == 0 || c.DNSNames[0] != m.name {
		return fmt.Errorf("serving certificate for %q, DNS names %v", c.Subject.CommonName, c.DNSNames)
	}
	if time.Now().After(c.NotAfter) {
		return fmt.Errorf("serving certificate expired at %s", c.NotAfter)
	}
	return nil
}
