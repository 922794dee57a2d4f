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

// waitKubeletClientSwitch waits until the kubelet logs that it switched to
// the re-issued client certificate: until then it authenticates with one of
// the old CA, which RemoveOldCA makes worthless for new connections. An
// operator's "fleet done" for SwitchSigners must include this (client-go
// re-reads the file every 5 minutes; a kubelet restarted since reads it at
// start, if it was restarted after the file was stored: a restart for the
// serving certificate, re-issued a few seconds before the client one, is
// not enough).
func (r *rotation) waitKubeletClientSwitch(ctx context.Context) {
	stored := r.k.Watch.Client[len(r.k.Watch.Client)-1].Seen
	switched := func() bool {
		return restartedSince(r.restarts, r.phase, stored) || slices.ContainsFunc(kubelettest.KlogTimes(r.k.Watch.Log, kubelettest.ClientRotationLogged),
			func(at time.Time) bool { return at.After(stored.Add(-2 * time.Second)) })
	}
	if !r.watch(ctx, kubeletClientReread, switched) {
		r.problem("the kubelet did not switch to its re-issued client certificate within %s", kubeletClientReread)
		return
	}
	r.clientSwitched = time.Since(stored).Round(time.Second)
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
