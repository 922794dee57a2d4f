package fleet

// The tests run in this order: the scale-ups (the default-limit one on its
// own control plane, then the raised-limit one on the control plane the rest
// share), the renewal waves, and last the outage, because restarting the
// API server leaves the controller-manager's watches to reconnect with a
// back-off of up to a minute, which would delay the next fleet's CSRs.
// TestOverload (overload_test.go) runs after them on a control plane of its
// own, and stops the shared one first.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// TestScaleUp starts N certagent daemons at once, each with its own
// directories and node name and the cluster's one bootstrap token; client
// CSRs are auto-approved as kubeadm sets up, serving CSRs by an approver
// that learns of them by watch. Then N certagent daemons with the serving
// certificate turned off, and N of the kubelet's own client bootstrap
// (LoadClientCert, as a process each), the same work, at the same N on the
// same control plane. Once with the controller-manager's default client rate
// limit and once with a raised one. Every node must end with its
// certificates and exactly one client and one serving CSR (one client CSR
// where the serving certificate is off).
func TestScaleUp(t *testing.T) {
	variants, err := scaleUpVariants(*flagVariants)
	if err != nil {
		t.Fatal(err)
	}
	// One 500-node fleet against another on these two cores varies by a
	// fifth from run to run (and drifts as the control plane's state
	// grows), so the like-for-like pair alternates and the report compares
	// round by round, and the medians.
	if slices.Contains(variants, variantClientOnly) && slices.Contains(variants, variantKubelet) {
		for range *flagRounds - 1 {
			variants = append(variants, variantClientOnly, variantKubelet)
		}
	}
	for _, limit := range strings.Split(*flagLimits, ",") {
		if limit != "default" && limit != "raised" {
			t.Fatalf("-fleet.limits: %q is neither default nor raised", limit)
		}
		t.Run(limit+" limit", func(t *testing.T) {
			var c *cluster
			if limit == "default" {
				c = startCluster(t, "default", controlplane.Options{})
				defer c.stop()
			} else {
				c = sharedCluster(t)
			}
			c.deleteCSRs(t)
			rounds := map[string]int{}
			for i, v := range variants {
				rounds[v]++
				scaleUp(t, c, limit, v, i, rounds[v])
				c.deleteCSRs(t)
			}
		})
	}
}

// scaleUpVariants reads -fleet.variants.
func scaleUpVariants(list string) ([]string, error) {
	names := map[string]string{"certagent": variantFull, "client": variantClientOnly, "kubelet": variantKubelet}
	var out []string
	for _, v := range strings.Split(list, ",") {
		variant, ok := names[v]
		if !ok {
			return nil, fmt.Errorf("-fleet.variants: %q is none of certagent, client, kubelet", v)
		}
		out = append(out, variant)
	}
	return out, nil
}

// TestRenewalWave starts N daemons together with certificates of 10 minutes
// (rotation.requestedDuration: 10m, the API's minimum) and records when each
// node first renews each certificate: once with rotation.renewBefore, which
// renews every certificate the same time before its expiry, and once with
// the default point in 70–90 % of the lifetime (derived from the serial).
// Every node must renew both certificates, each with exactly one CSR.
func TestRenewalWave(t *testing.T) {
	if !*flagWave {
		t.Skip("the renewal waves take about 13 minutes whatever N: -fleet.wave or FLEET_WAVE=1 (make fleet sets it)")
	}
	c := sharedCluster(t)
	for _, p := range []struct {
		name, prefix, policy, extra string
		within                      time.Duration // from the fleet's start
	}{
		// Renewal 3 minutes after issue.
		{"renewBefore", "rb", "renewBefore 7m", "rotation:\n  requestedDuration: 10m\n  renewBefore: 7m\n", 6 * time.Minute},
		// The signer backdates NotBefore by 5 minutes: a 15-minute
		// lifetime, renewed 5.5 to 8.5 minutes after issue.
		{"default", "df", "default (70–90 % of the lifetime)", "rotation:\n  requestedDuration: 10m\n", 11 * time.Minute},
	} {
		t.Run(p.name, func(t *testing.T) {
			c.deleteCSRs(t)
			n := *flagN
			f := newFleet(t, c, certagentPath, p.prefix, n, p.extra)
			f.run(t)
			issued := f.waitAll(t, "their certificates", scaleUpTimeout, hasServing)
			first := map[*member][2]string{}
			for _, m := range f.members {
				first[m] = [2]string{serial(m, "client"), serial(m, "server")}
			}
			f.waitAll(t, "renewed certificates", time.Until(f.start.Add(p.within)), func(m *member) bool {
				return serial(m, "client") != first[m][0] && serial(m, "server") != first[m][1]
			})

			// The first renewal of each certificate: a CSR the node posted with
			// its own identity after its bootstrap (for the serving
			// certificate, every one but the first).
			type key struct{ node, signer string }
			byKey := map[key][]time.Time{}
			for _, csr := range f.fleetCSRs(t) {
				if csr.username == "system:node:"+csr.node {
					k := key{csr.node, csr.signer}
					byKey[k] = append(byKey[k], csr.created)
				}
			}
			var times []time.Duration
			for _, m := range f.members {
				for signer, skip := range map[string]int{certificatesv1.KubeAPIServerClientKubeletSignerName: 0, certificatesv1.KubeletServingSignerName: 1} {
					ts := byKey[key{m.name, signer}]
					sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
					if len(ts) != skip+1 {
						t.Errorf("%s: %d CSRs of %s by the node, want %d (one renewal)", m.name, len(ts), signer, skip+1)
					}
					if len(ts) > skip {
						times = append(times, ts[skip].Sub(f.start))
					}
				}
			}
			w := &Wave{Policy: p.policy, N: n, Issued: issued.Sub(f.start), Renewals: len(times)}
			d := NewDist(times)
			if len(times) > 0 {
				w.First, w.Last = d.Quantile(0), d.Quantile(1)
				for _, x := range d.Times {
					bin := int(x / (10 * time.Second))
					for len(w.Bins) <= bin {
						w.Bins = append(w.Bins, 0)
					}
					w.Bins[bin]++
				}
				w.PeakPer10s = peakWithin(d.Times, 10*time.Second)
			}
			report.Waves = append(report.Waves, w)
			t.Logf("%s: %d nodes issued within %s of the start; %d first renewals from %s to %s; peak %d renewals in 10 s",
				p.policy, n, secs(w.Issued), w.Renewals, secs(w.First), secs(w.Last), w.PeakPer10s)
			t.Logf("  renewals per 10 s from the start: %v", w.Bins)
			f.stop()
		})
	}
}

// TestOutage stops the API server for a minute under N running daemons whose
// certificates are valid, starts it again and measures what the fleet does:
// requests in the first 10 s after the return, the time until every
// daemon's /healthz and /readyz answer 200; the outage alone must create no
// CSR.
func TestOutage(t *testing.T) {
	c := sharedCluster(t)
	c.deleteCSRs(t)
	n := *flagN
	f := newFleet(t, c, certagentPath, "out", n, "")
	f.run(t)
	f.waitAll(t, "their certificates", scaleUpTimeout, hasServing)
	bootstrapped := time.Now()
	addrs := map[*member]string{}
	for _, m := range f.members {
		if addrs[m] = m.metricsAddr(); addrs[m] == "" {
			t.Fatalf("%s logged no metrics address:\n%s", m.name, tailFile(m.log, 10))
		}
	}
	if left := waitHealthy(f, addrs, time.Minute); left > 0 {
		t.Fatalf("%d daemons not healthy before the outage", left)
	}
	// Let the bootstrap's Events (a node that waited long holds its
	// CertificateIssued back) and watches end.
	events := f.eventsWritten(t, 2*n, time.Now().Add(eventsWithin))
	time.Sleep(time.Until(later(bootstrapped.Add(10*time.Second), events.Add(2*time.Second))))
	before := len(f.fleetCSRs(t))

	o := &Outage{N: n, CSRsBefore: before}
	stopAt := time.Now()
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(outageDown / 2)
	o.ReadyDuring = n - countNot200(f, addrs, "/readyz")
	time.Sleep(time.Until(stopAt.Add(outageDown)))
	if err := c.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	o.Down = back.Sub(stopAt)
	if left := waitHealthy(f, addrs, 5*time.Minute); left > 0 {
		t.Errorf("%d daemons not healthy 5 minutes after the API server returned", left)
	}
	o.Healthy = time.Since(back)
	time.Sleep(time.Until(back.Add(30 * time.Second)))

	first, err := c.AuditEvents(back, back.Add(10*time.Second), f.isFleetUser)
	if err != nil {
		t.Fatal(err)
	}
	o.FirstTen, o.FirstTenByKind = len(first), map[string]int{}
	for _, ev := range first {
		o.FirstTenByKind[requestKey(ev)]++
	}
	after30, err := c.AuditEvents(back, back.Add(30*time.Second), f.isFleetUser)
	if err != nil {
		t.Fatal(err)
	}
	o.RequestsAfter30 = len(after30)
	creates, err := c.AuditEvents(stopAt, back.Add(30*time.Second), func(ev controlplane.AuditEvent) bool {
		return f.isFleetUser(ev) && requestKey(ev) == "create certificatesigningrequests"
	})
	if err != nil {
		t.Fatal(err)
	}
	o.CSRCreates = len(creates)
	o.CSRsAfter = len(f.fleetCSRs(t))
	// Minutes after the bootstrap, every daemon asked for /healthz and
	// /readyz a minute ago, the runtime's forced collection (every 2
	// minutes) past: what an idle daemon keeps resident, not only right
	// after its trim.
	o.Since = time.Since(bootstrapped)
	o.Memory = f.memory(t)
	report.Outage = o

	t.Logf("API server down %s under %d daemons; /readyz 200 during it on %d", secs(o.Down), n, o.ReadyDuring)
	t.Logf("  requests by the nodes in the first 10 s after it returned: %d%s; in the first 30 s: %d", o.FirstTen, kinds(o.FirstTenByKind), o.RequestsAfter30)
	t.Logf("  every daemon healthy (/healthz and /readyz 200) %s after it returned", secs(o.Healthy))
	t.Logf("  CSRs before %d, after %d; CSR creations from the stop to 30 s after the return: %d", o.CSRsBefore, o.CSRsAfter, o.CSRCreates)
	t.Logf("  daemons' memory %s after the bootstrap, mean / max: %s", secs(o.Since), o.Memory)
	if o.CSRsAfter != o.CSRsBefore || o.CSRCreates != 0 {
		t.Errorf("the outage created CSRs: %d before, %d after, %d creations", o.CSRsBefore, o.CSRsAfter, o.CSRCreates)
	}
	checkIdleMemory(t, o.Memory, secs(o.Since)+" after the bootstrap")
	if err := f.parallel(checkServing); err != nil {
		t.Error(err)
	}
}
