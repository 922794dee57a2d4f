package carotation

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/kubelettest"
)

// followAddCA: the CA file and the kubelet's client CA file hold both CAs.
func (r *rotation) followAddCA(ctx context.Context) {
	both := slices.Concat(cp.OldCACertPEM(), cp.NewCACertPEM())
	if !r.watch(ctx, nodeTimeout, func() bool { return r.trustFilesHold(both) }) {
		r.nodeProblem("after AddCA: %s", r.trustFiles())
	}
}

// followSwitchSigners: both certificates re-issued from the new CA.
func (r *rotation) followSwitchSigners(ctx context.Context) {
	start := time.Now()
	newCA := cp.NewCACertPEM()
	onNew := func() bool {
		return signedBy(r.leaf("kubelet-client"), newCA) && signedBy(r.leaf("kubelet-server"), newCA)
	}
	if !r.watch(ctx, reissueSpread+nodeTimeout, onNew) {
		r.nodeProblem("after SwitchSigners: %s", r.certs())
		return
	}
	r.reissued = time.Since(start).Round(time.Second)
	r.waitKubeletClientSwitch(ctx)
}

// waitKubeletClientSwitch waits until the kubelet uses the re-issued
// client certificate: until then it authenticates with one of the old CA,
// which RemoveOldCA makes worthless for new connections. An operator's
// "fleet done" for SwitchSigners must include this. client-go reads the
// file as the kubelet starts and again every 5 minutes from then, logging
// a change; so the kubelet took it up when it was restarted after the file
// was stored, or when it logs the switch. A restart under way as the file
// was stored (the serving certificate's, re-issued a moment before the
// client one) read the old file or the new: the kubelet logs the switch
// within kubeletClientReread of that restart, or it read the new file as
// it started (clientTakenUp). RemoveOldCA and the API server's restart then
// prove it: a kubelet still on the old certificate loses its Lease.
func (r *rotation) waitKubeletClientSwitch(ctx context.Context) {
	stored := r.clientStored()
	var how string
	switched := func() bool {
		logged := slices.ContainsFunc(kubelettest.KlogTimes(r.k.Watch.Log, kubelettest.ClientRotationLogged),
			func(at time.Time) bool { return at.After(stored.Add(-2 * time.Second)) })
		how = clientTakenUp(r.restarts, r.phase, stored, logged, time.Now())
		return how != ""
	}
	if !r.watch(ctx, kubeletClientReread, switched) {
		r.problem("the kubelet did not switch to its re-issued client certificate within %s (stored %s; restarts %s)",
			kubeletClientReread, stored.UTC().Format("15:04:05.000"), r.restartsReport())
		return
	}
	r.clientSwitched = fmt.Sprintf("%s after it was stored (%s)", time.Since(stored).Round(time.Second), how)
}

// clientStored is when certagent stored the current client certificate:
// its file's modification time (certagent writes a new file and links it),
// else when the test first saw it.
func (r *rotation) clientStored() time.Time {
	if fi, err := os.Stat(filepath.Join(r.n.certDir, "kubelet-client-current.pem")); err == nil {
		return fi.ModTime()
	}
	return r.k.Watch.Client[len(r.k.Watch.Client)-1].Seen
}

// clientTakenUp says how the kubelet took up a client certificate stored
// at stored, given its restarts in phase, whether it logged a switch since,
// and the time now; "" while that is not known yet.
func clientTakenUp(restarts []restart, phase string, stored time.Time, logged bool, now time.Time) string {
	if restartedSince(restarts, phase, stored) {
		return "restarted since"
	}
	if logged {
		return "switch logged"
	}
	for _, rs := range restarts {
		if rs.pid != 0 && rs.phase == phase && !rs.at.After(stored) && !rs.at.Add(rs.down).Before(stored) &&
			now.Sub(rs.at) >= kubeletClientReread {
			return fmt.Sprintf("read as it started: its restart began %s before the store, was serving %s after it, and no switch was logged within %s",
				stored.Sub(rs.at).Round(time.Millisecond), rs.at.Add(rs.down).Sub(stored).Round(time.Millisecond), kubeletClientReread)
		}
	}
	return ""
}

// followRemoveOldCA: every certificate and trust file on the new CA alone,
// and certagent's metric says so.
func (r *rotation) followRemoveOldCA(ctx context.Context) {
	newCA, oldCA := cp.NewCACertPEM(), cp.OldCACertPEM()
	onNewOnly := func() bool {
		return r.trustFilesHold(newCA) && !signedBy(r.leaf("kubelet-client"), oldCA) && !signedBy(r.leaf("kubelet-server"), oldCA) &&
			signedBy(r.leaf("kubelet-client"), newCA) && signedBy(r.leaf("kubelet-server"), newCA)
	}
	if !r.watch(ctx, nodeTimeout, onNewOnly) {
		r.nodeProblem("after RemoveOldCA: %s; %s", r.trustFiles(), r.certs())
	}
	for _, cert := range []string{"client", "server"} {
		want := caInfo(cert, newCA)
		if body, err := r.metrics(); err != nil || !slices.Contains(strings.Split(body, "\n"), want) {
			r.nodeProblem("after RemoveOldCA: metrics lack %s (%v); certagent_certificate_ca_info lines: %s", want, err, grep(body, "certagent_certificate_ca_info{"))
		}
	}
}

// trustFilesHold: the CA file and the client CA file hold bundle's CAs.
func (r *rotation) trustFilesHold(bundle []byte) bool {
	return fileHolds(r.n.caFile(), bundle) && fileHolds(r.n.clientCA, bundle)
}

func fileHolds(path string, bundle []byte) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	certs, err := controlplane.ParseCerts(data)
	return err == nil && controlplane.SameCAs(certs, bundle)
}

// trustFiles names the CAs in each trust file, for a failure message.
func (r *rotation) trustFiles() string {
	var parts []string
	for _, p := range []string{r.n.caFile(), r.n.clientCA} {
		data, err := os.ReadFile(p)
		certs, _ := controlplane.ParseCerts(data)
		var names []string
		for _, c := range certs {
			names = append(names, c.Subject.CommonName)
		}
		parts = append(parts, fmt.Sprintf("%s holds %v (%v)", p, names, err))
	}
	return strings.Join(parts, "; ")
}

// certs names the issuer of each certificate, for a failure message.
func (r *rotation) certs() string {
	var parts []string
	for _, prefix := range []string{"kubelet-client", "kubelet-server"} {
		issuer := "none"
		if c := r.leaf(prefix); c != nil {
			issuer = c.Issuer.CommonName
		}
		parts = append(parts, prefix+" issued by "+issuer)
	}
	return strings.Join(parts, ", ")
}

func (r *rotation) leaf(prefix string) *x509.Certificate {
	return kubelettest.CurrentLeaf(r.n.certDir, prefix)
}

// signedBy reports whether the first CA of caPEM signed c.
func signedBy(c *x509.Certificate, caPEM []byte) bool {
	cas, err := controlplane.ParseCerts(caPEM)
	return c != nil && err == nil && len(cas) > 0 && c.CheckSignatureFrom(cas[0]) == nil
}

// caInfo is the caInfoMetric line of certificate kind cert signed by the
// (first) CA of caPEM.
func caInfo(cert string, caPEM []byte) string {
	cas, _ := controlplane.ParseCerts(caPEM)
	if len(cas) == 0 {
		return "(no CA)"
	}
	sum := sha256.Sum256(cas[0].Raw)
	return fmt.Sprintf(caInfoMetric, cert, cas[0].Subject.CommonName, hex.EncodeToString(sum[:])[:16])
}

func (r *rotation) metrics() (string, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + r.metricsAddr + "/metrics")
	if err != nil {
		return "", fmt.Errorf("getting certagent's metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func grep(body, prefix string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}
