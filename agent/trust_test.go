package agent

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/trust"
)

// fakeTrust is the published trust a daemon test controls, and the chain
// the API server presents.
type fakeTrust struct {
	mu    sync.Mutex
	all   map[string]trust.Published // by signer: one bundle each
	chain []*x509.Certificate
	w     *watch.RaceFreeFakeWatcher
}

func (s *fakeTrust) List(context.Context) ([]trust.Published, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []trust.Published
	for _, p := range s.all {
		out = append(out, p)
	}
	return out, "1", nil
}

func (s *fakeTrust) Watch(context.Context, string) (watch.Interface, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = watch.NewRaceFreeFake()
	return s.w, nil
}

func (s *fakeTrust) ServerChain(context.Context) ([]*x509.Certificate, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chain, "127.0.0.1", nil
}

// publish replaces signer's bundle with data and tells the watch.
func (s *fakeTrust) publish(signer string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all[signer] = trust.Published{Name: signer + ":test", Signer: signer, PEM: string(data)}
	if s.w != nil {
		s.w.Modify(&certificatesv1.ClusterTrustBundle{})
	}
}

// serve makes the API server present a certificate of sg.
func (s *fakeTrust) serve(t *testing.T, sg *signer) {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: sg.cert.NotBefore, NotAfter: sg.cert.NotAfter, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, sg.cert, sg.key.Public(), sg.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	s.mu.Lock()
	s.chain = []*x509.Certificate{leaf}
	s.mu.Unlock()
}

// laterSigner is a CA that starts after sg's: the new CA of a rotation.
func laterSigner(t *testing.T, sg *signer) *signer {
	n := newSigner(t)
	tmpl := *n.cert
	tmpl.Subject, tmpl.RawSubject = pkix.Name{CommonName: "ca-2"}, nil
	tmpl.NotBefore = sg.cert.NotBefore.Add(time.Minute)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, n.key.Public(), n.key)
	if err != nil {
		t.Fatal(err)
	}
	n.cert, _ = x509.ParseCertificate(der)
	n.pem = pemCert(der)
	n.now = sg.now
	return n
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// trustFixture starts a daemon following src, whose cluster publishes its
// CA for the API server's serving signer and serves a certificate of it.
func trustFixture(t *testing.T, f *daemonFixture) *fakeTrust {
	src := &fakeTrust{all: map[string]trust.Published{}}
	src.publish(trust.SignerAPIServerServing, f.sg.pem)
	src.serve(t, f.sg)
	f.opts.TrustSource = func(*bootstrap.Bootstrapper) (trust.Source, error) { return src, nil }
	f.start()
	f.advance(time.Minute)
	return src
}

func followTrust(dir string) func(*config.Config) {
	return func(c *config.Config) {
		c.Trust = config.TrustConfig{Follow: true, KubeletClientCAFile: filepath.Join(dir, "kubelet-client-ca.crt"),
			ReissueSpread: config.Duration{Duration: 10 * time.Minute}}
	}
}

// bundleOf reads the CAs of path, failing the test if it does not parse.
func bundleOf(t *testing.T, path string) trust.Bundle {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := trust.ParseBundle(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func wantCAs(t *testing.T, path string, want ...*signer) {
	t.Helper()
	got := bundleOf(t, path)
	var exp trust.Bundle
	for _, s := range want {
		exp.CAs = append(exp.CAs, s.cert)
	}
	if !got.Equal(exp) {
		t.Fatalf("%s holds %s, want %s", path, got.DescribeAll(), trust.Merge(exp).DescribeAll())
	}
}

// kubeletConfCA is the CA file kubelet.conf names, failing if it embeds one.
func kubeletConfCA(t *testing.T, path string) string {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := kc.Clusters[kc.Contexts[kc.CurrentContext].Cluster]
	if len(c.CertificateAuthorityData) != 0 {
		t.Fatalf("kubelet.conf embeds its CA instead of naming the file certagent keeps")
	}
	return c.CertificateAuthority
}

// acceptBoth: during the overlap the API server accepts client
// certificates of either CA.
func acceptBoth(f *daemonFixture, old, next *signer) {
	f.identity = func(rc *rest.Config) error {
		leaf, err := bootstrap.ClientCertificate(rc)
		if err != nil {
			return err
		}
		if leaf.CheckSignatureFrom(old.cert) != nil && leaf.CheckSignatureFrom(next.cert) != nil {
			return apierrors.NewUnauthorized("Unauthorized")
		}
		return nil
	}
}
