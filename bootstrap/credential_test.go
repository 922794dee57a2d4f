package bootstrap

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/bootstrap/apiclient"
)

// TestRequestsPresentTheCertificateOnDiskNow: kubelet.conf references the
// certificate by path; after the file changes (a renewal, a new bootstrap),
// the next request must present the new certificate. client-go's transport
// cache keyed by path kept presenting the old one, so a re-bootstrapped
// kubelet.conf was "rejected" by the API server for minutes.
func TestRequestsPresentTheCertificateOnDiskNow(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if len(r.TLS.PeerCertificates) > 0 {
			seen = append(seen, r.TLS.PeerCertificates[0].Subject.CommonName)
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview","status":{"userInfo":{"username":"system:node:n","groups":["system:nodes"]}}}`)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	defer srv.Close()

	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	certPath := filepath.Join(dir, "client.pem")
	write := func(cn string) {
		key := newKey(t)
		certPEM := ca.issue(t, key.Public(), Request{Kind: Client, NodeName: cn}, nil)
		der, _ := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		data := append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})...)
		if err := os.WriteFile(certPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	rc := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: caPEM, CertFile: certPath, KeyFile: certPath}}
	clients := apiclient.NewClients()
	for _, cn := range []string{"first", "second"} {
		write(cn)
		api, err := clients.ForNode(rc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.SelfSubjectReview(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "system:node:first" || seen[1] != "system:node:second" {
		t.Fatalf("the server saw client certificates %v, want the one on disk at each request", seen)
	}
}
