//go:build failpoints

package sim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/trust"
)

// rotationState is the API server's side of a cluster CA rotation: the CA
// it serves with, the CAs its --client-ca-file trusts, and the
// ClusterTrustBundles published. Its zero value is a cluster without one:
// the cluster CA serves, is trusted, and kube-controller-manager publishes it
// for the kube-apiserver-serving signer.
type rotationState struct {
	gen       int               // bumped whenever the client-CA set changes (trusted's cache)
	serving   *ca               // the serving CA; nil: the cluster CA
	clients   []*ca             // --client-ca-file; nil: the cluster CA
	published map[string][]byte // ClusterTrustBundles by signer; nil: the default above
	rv        int64             // the ClusterTrustBundles' resource version
	leaf      *x509.Certificate // the API server's serving certificate
	watches   int               // ClusterTrustBundle watches opened
	good      []byte            // the serving bundle a bad one replaced (badbundle.go); nil if none
	// offline > 0: the node cannot reach the API server (a partition
	// around a phase of the rotation), whatever the other faults do.
	offline int
}

// trustWatch is the simWatcher name of a ClusterTrustBundle watch (no CSR
// is named so).
const trustWatch = "\x00clustertrustbundles"

func (a *API) servingCA() *ca {
	if a.rot.serving != nil {
		return a.rot.serving
	}
	return a.cluster
}

func (a *API) clientCAs() []*ca {
	if a.rot.clients != nil {
		return a.rot.clients
	}
	return []*ca{a.cluster}
}

// publishedNow is every ClusterTrustBundle, by signer; a.mu is held.
func (a *API) publishedNow() map[string][]byte {
	if a.rot.published != nil {
		return a.rot.published
	}
	return map[string][]byte{trust.SignerAPIServerServing: a.servingCA().pem}
}

// servingBundle is what a person puts in a bootstrap kubeconfig:
// kube-public's cluster-info, as kube-controller-manager keeps it.
func (a *API) servingBundle() []byte {
	if a.rot.good != nil {
		return bytes.Clone(a.rot.good)
	}
	return bytes.Clone(a.publishedNow()[trust.SignerAPIServerServing])
}

// publish sets signer's ClusterTrustBundle and tells the watchers; a.mu is
// held.
func (a *API) publish(signer string, data []byte) {
	all := a.publishedNow()
	a.rot.published = map[string][]byte{}
	for s, d := range all {
		a.rot.published[s] = d
	}
	a.rot.published[signer] = bytes.Clone(data)
	a.rot.rv++
	for _, w := range slices.Clone(a.watchers) {
		if w.name == trustWatch {
			w.sendTrust()
		}
	}
}

// sendTrust tells a ClusterTrustBundle watcher that something changed.
func (w *simWatcher) sendTrust() {
	if w.closed {
		return
	}
	select {
	case w.ch <- watch.Event{Type: watch.Modified, Object: &certificatesv1.ClusterTrustBundle{ObjectMeta: metav1.ObjectMeta{ResourceVersion: strconv.FormatInt(w.a.rot.rv, 10)}}}:
	default:
		w.a.closeWatcher(w)
	}
}

// servingLeaf is the API server's certificate, from the serving CA (issued
// anew when that changes or it nears its end); a.mu is held.
func (a *API) servingLeaf() *x509.Certificate {
	c, now := a.servingCA(), a.w.now()
	if l := a.rot.leaf; l != nil && l.CheckSignatureFrom(c.newest()) == nil && now.Before(l.NotAfter.Add(-24*time.Hour)) {
		return l
	}
	a.uid++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(a.uid), Subject: pkix.Name{CommonName: "kube-apiserver"}, DNSNames: []string{"sim"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.newest(), c.key.Public(), c.key)
	if err != nil {
		panic(err)
	}
	a.rot.leaf, _ = x509.ParseCertificate(der)
	return a.rot.leaf
}

// trustSource is the node's view of the published trust: requests made
// with kubelet.conf as it is on disk at the time of each.
type trustSource struct {
	a *API
	b *bootstrap.Bootstrapper
}

func (a *API) trustSourceFor(b *bootstrap.Bootstrapper) (trust.Source, error) {
	return &trustSource{a: a, b: b}, nil
}

// begin makes a request: it arrives, passes the gate, and is authenticated
// with kubelet.conf; a.mu is held on a nil error, for the caller to unlock.
func (s *trustSource) begin() error {
	node, err := s.b.LoadNode()
	if err != nil {
		return fmt.Errorf("no node credential: %w", err)
	}
	s.a.arrive()
	s.a.mu.Lock()
	if who := s.a.admit(node.Config); who.err != nil {
		s.a.mu.Unlock()
		return who.err
	}
	return nil
}

func (s *trustSource) List(context.Context) ([]trust.Published, string, error) {
	if err := s.begin(); err != nil {
		return nil, "", err
	}
	defer s.a.mu.Unlock()
	var out []trust.Published
	for signer, data := range s.a.publishedNow() {
		out = append(out, trust.Published{Name: "sim:" + signer, Signer: signer, PEM: string(data)})
	}
	slices.SortFunc(out, func(x, y trust.Published) int { return strings.Compare(x.Signer, y.Signer) })
	return out, strconv.FormatInt(s.a.rot.rv, 10), nil
}

// trustWatchFor is how long the sim's API server keeps a ClusterTrustBundle
// watch open at most. Real servers end watches after 30 to 60 minutes; here
// they last up to days (outages and restarts end them sooner), because an event every
// half hour over simulated years would dominate the run's time (they
// last 30 minutes at least, as a real server's do), and a
// relist after a server's timeout is what a relist after an outage is.
const trustWatchFor = 3 * 24 * time.Hour

func (s *trustSource) Watch(ctx context.Context, resourceVersion string) (watch.Interface, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	a := s.a
	defer a.mu.Unlock()
	sw := &simWatcher{name: trustWatch, ch: make(chan watch.Event, 16), a: a, stop: make(chan struct{})}
	a.watchers = append(a.watchers, sw)
	if from, _ := strconv.ParseInt(resourceVersion, 10, 64); a.rot.rv > from {
		sw.sendTrust() // what it missed since its list
	}
	a.rot.watches++ // afterWatch's draw is keyed by the CSRs' version, which a trust watch does not move
	d := logUniform(a.w.rngFor("trust watch", a.rot.watches), 30*time.Minute, trustWatchFor)
	sw.closeEv = a.w.after(d, "close watch", func() { a.mu.Lock(); a.closeWatcher(sw); a.mu.Unlock() })
	a.closeOnDone(ctx, sw)
	return sw, nil
}

// ServerChain is the chain the API server presents now, verified (as the
// TLS handshake would) with kubelet.conf's CA; no client authentication.
func (s *trustSource) ServerChain(context.Context) ([]*x509.Certificate, string, error) {
	node, err := s.b.LoadNode()
	if err != nil {
		return nil, "", fmt.Errorf("no node credential: %w", err)
	}
	a := s.a
	a.arrive()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.gate(); err != nil {
		return nil, "", err
	}
	var tlsErr *urlError
	if who := a.authenticate(node.Config); errors.As(who.err, &tlsErr) {
		return nil, "", who.err
	}
	return []*x509.Certificate{a.servingLeaf()}, "sim", nil
}
