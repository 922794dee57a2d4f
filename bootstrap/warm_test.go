package bootstrap

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// apiStandIn is an HTTP/2 TLS server standing in for the API server: it asks
// for a client certificate signed by ca and answers SelfSubjectReviews with
// the certificate's name (a bearer token "t" is "bootstrap"). It counts TLS
// handshakes begun (ClientHellos), connections and requests.
type apiStandIn struct {
	srv   *httptest.Server
	caPEM []byte // the server certificate, as a kubeconfig's CA

	mu                       sync.Mutex
	hellos, requests, closed int
}

func newAPIStandIn(t *testing.T, ca *testCA) *apiStandIn {
	t.Helper()
	a := &apiStandIn{}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.requests++
		a.mu.Unlock()
		user := "system:anonymous"
		switch {
		case r.TLS != nil && len(r.TLS.PeerCertificates) > 0:
			user = r.TLS.PeerCertificates[0].Subject.CommonName
		case r.Header.Get("Authorization") == "Bearer t":
			user = "bootstrap"
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview","status":{"userInfo":{"username":%q,"groups":["system:nodes"]}}}`, user)
	}))
	a.srv.EnableHTTP2 = true
	a.srv.TLS = &tls.Config{
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  ca.pool(),
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			a.mu.Lock()
			a.hellos++
			a.mu.Unlock()
			return nil, nil
		},
	}
	a.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			a.mu.Lock()
			a.closed++
			a.mu.Unlock()
		}
	}
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	a.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.srv.Certificate().Raw})
	return a
}

func (a *apiStandIn) counts() (hellos, requests, closed int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hellos, a.requests, a.closed
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// nodeCredential is a client certificate and key for system:node:n signed by ca.
func nodeCredential(t *testing.T, ca *testCA) (certPEM, keyPEM []byte, pair *tls.Certificate) {
	t.Helper()
	key := newKey(t)
	certPEM = ca.issue(t, key.Public(), Request{Kind: Client, NodeName: "n"}, nil)
	der, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	p, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, &p
}

// TestWarmUpDialsBeforeTheFirstRequest: warmUp starts the TLS handshake at
// once, before any request, and the client built for that very
// configuration sends its request on that connection: one handshake, one
// connection.
func TestWarmUpDialsBeforeTheFirstRequest(t *testing.T) {
	api := newAPIStandIn(t, newTestCA(t, "cluster"))
	rc := &rest.Config{Host: api.srv.URL, BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{CAData: api.caPEM}}
	w := warmUp(context.Background(), rc)
	if w == nil {
		t.Fatal("warmUp warmed nothing for a plain https configuration")
	}
	defer w.release()
	waitUntil(t, "the handshake began, before any request", func() bool { h, _, _ := api.counts(); return h == 1 })
	review, err := selfSubjectReview(context.Background(), rc)
	if err != nil {
		t.Fatal(err)
	}
	if u := review.Status.UserInfo.Username; u != "bootstrap" {
		t.Errorf("the request authenticated as %q, want the bearer token's user", u)
	}
	if h, r, _ := api.counts(); h != 1 || r != 1 {
		t.Errorf("%d handshakes and %d requests, want 1 and 1: the request did not use the connection dialed ahead", h, r)
	}
	// Another configuration (even an equal one) is not warmed: only the
	// client built from rc itself gets the connection.
	if warmTransport(rest.CopyConfig(rc)) != nil {
		t.Error("a copy of the configuration found the warm transport")
	}
}

// TestWarmUpPendingWaitsForTheCertificate: the proof's connection is dialed
// before its client certificate exists; the handshake waits where the client
// presents it, goes on when supply hands it over, and the proof's request
// authenticates with it on that same connection.
func TestWarmUpPendingWaitsForTheCertificate(t *testing.T) {
	ca := newTestCA(t, "cluster")
	api := newAPIStandIn(t, ca)
	server := &rest.Config{Host: api.srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: api.caPEM}}
	w := warmUpPending(context.Background(), server)
	if w == nil {
		t.Fatal("warmUpPending warmed nothing for a plain https configuration")
	}
	defer w.release()
	waitUntil(t, "the handshake began", func() bool { h, _, _ := api.counts(); return h == 1 })
	time.Sleep(50 * time.Millisecond)
	if _, r, c := api.counts(); r != 0 || c != 0 {
		t.Fatalf("%d requests, %d connections closed before the certificate was issued, want 0 and 0", r, c)
	}

	certPEM, keyPEM, pair := nodeCredential(t, ca)
	rc := rest.AnonymousClientConfig(server)
	rc.CertData, rc.KeyData = certPEM, keyPEM
	w.supply(rc, pair)
	if err := CheckIdentity(context.Background(), rc, "n"); err != nil {
		t.Fatal(err)
	}
	if h, r, _ := api.counts(); h != 1 || r != 1 {
		t.Errorf("%d handshakes and %d requests, want 1 and 1: the proof did not use the connection dialed ahead", h, r)
	}
}

// TestWarmUpPendingReleasedUnused: a proof's connection whose certificate
// never comes (the signer failed, the bootstrap was stopped) is closed by
// release, and no request is made with it.
func TestWarmUpPendingReleasedUnused(t *testing.T) {
	api := newAPIStandIn(t, newTestCA(t, "cluster"))
	w := warmUpPending(context.Background(), &rest.Config{Host: api.srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: api.caPEM}})
	waitUntil(t, "the handshake began", func() bool { h, _, _ := api.counts(); return h == 1 })
	w.release()
	waitUntil(t, "the server saw the connection closed", func() bool { _, _, c := api.counts(); return c == 1 })
	if _, r, _ := api.counts(); r != 0 {
		t.Errorf("%d requests, want none", r)
	}
}

// TestWarmUpLeavesOtherConfigurationsAlone: a proxy, a custom dialer or
// transport, or plain http is left to client-go: nothing is dialed ahead. (A
// proxy from the environment is found as client-go finds it, through the
// transport's Proxy; net/http reads the environment once per process, so
// this test cannot set it.)
func TestWarmUpLeavesOtherConfigurationsAlone(t *testing.T) {
	api := newAPIStandIn(t, newTestCA(t, "cluster"))
	plain := func() *rest.Config {
		return &rest.Config{Host: api.srv.URL, BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{CAData: api.caPEM}}
	}
	for name, rc := range map[string]*rest.Config{
		"proxy": func() *rest.Config {
			rc := plain()
			rc.Proxy = func(*http.Request) (*url.URL, error) { return url.Parse("http://127.0.0.1:1") }
			return rc
		}(),
		"custom dialer": func() *rest.Config {
			rc := plain()
			rc.Dial = (&net.Dialer{}).DialContext
			return rc
		}(),
		"custom transport": func() *rest.Config { rc := plain(); rc.Transport = http.DefaultTransport; rc.CAData = nil; return rc }(),
		"plain http":       {Host: "http://127.0.0.1:1"},
	} {
		if w := warmUp(context.Background(), rc); w != nil {
			w.release()
			t.Errorf("%s: warmed", name)
		}
	}
	if h, _, _ := api.counts(); h != 0 {
		t.Errorf("%d handshakes, want none", h)
	}
}
