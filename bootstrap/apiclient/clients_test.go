package apiclient

import (
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// apiServer is an HTTP/2 TLS server that answers every request with a
// SelfSubjectReview and counts its open connections.
type apiServer struct {
	t    *testing.T
	srv  *httptest.Server
	mu   sync.Mutex
	open map[net.Conn]bool
	// agents are the User-Agent headers of the requests, in order.
	agents []string
}

func newAPIServer(t *testing.T) *apiServer {
	s := &apiServer{t: t, open: map[net.Conn]bool{}}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("request over %s, want HTTP/2 as with an API server", r.Proto)
		}
		s.mu.Lock()
		s.agents = append(s.agents, r.UserAgent())
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview","status":{"userInfo":{"username":"system:node:n"}}}`)
	}))
	s.srv.EnableHTTP2 = true
	s.srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch st {
		case http.StateNew:
			s.open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(s.open, c)
		}
	}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

// credential is a token credential for the server; token tells two apart.
func (s *apiServer) credential(token string) *rest.Config {
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	return &rest.Config{Host: s.srv.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
}

func (s *apiServer) openConns() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.open) }

// waitFor waits until want connections are open.
func (s *apiServer) waitFor(want int) {
	s.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.openConns() != want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("%d connections open, want %d", s.openConns(), want)
		}
	}
}

func review(t *testing.T, api *API, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.SelfSubjectReview(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestRequestsNameCertagent: every request says it comes from certagent, so
// that the API server's audit log tells certagent's CSRs from the kubelet's
// (Go's default would name no program).
func TestRequestsNameCertagent(t *testing.T) {
	s := newAPIServer(t)
	c := NewClients()
	boot, err := c.ForBootstrap(s.credential("token"))
	review(t, boot, err)
	node, err := c.ForNode(s.credential("node"))
	review(t, node, err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.agents) != 2 {
		t.Fatalf("%d requests, want 2", len(s.agents))
	}
	for _, ua := range s.agents {
		if ua != UserAgent {
			t.Errorf("User-Agent %q, want %q", ua, UserAgent)
		}
	}
}

// TestCloseIdleConnectionsClosesTheAPIConnections: after a request the
// client keeps its HTTP/2 connection open (client-go: 90 s); an idle daemon
// closes it at once with CloseIdleConnections, and the next request dials
// again.
func TestCloseIdleConnectionsClosesTheAPIConnections(t *testing.T) {
	s := newAPIServer(t)
	c := NewClients()
	api, err := c.ForNode(s.credential("t"))
	review(t, api, err)
	s.waitFor(1)
	if n := c.CloseIdleConnections(); n != 1 {
		t.Errorf("CloseIdleConnections closed %d transports, want 1", n)
	}
	s.waitFor(0)
	review(t, api, nil)
	s.waitFor(1)
	c.CloseIdleConnections()
	s.waitFor(0)
}

// TestACredentialKeepsItsConnection: the clients of one credential (the
// proof, the serving CSR, the Events of kubelet.conf) share its transport:
// one connection, not one per client.
func TestACredentialKeepsItsConnection(t *testing.T) {
	s := newAPIServer(t)
	c := NewClients()
	rc := s.credential("node")
	for range 3 {
		api, err := c.ForNode(rc)
		review(t, api, err)
	}
	s.waitFor(1)
}

// TestBootstrapAndNodeCredentialsNeverShareATransport: the bootstrap
// credential and the node's own have a transport each, even with the same
// TLS settings (client-go's cache would share one between them).
func TestBootstrapAndNodeCredentialsNeverShareATransport(t *testing.T) {
	s := newAPIServer(t)
	c := NewClients()
	boot, err := c.ForBootstrap(s.credential("token"))
	review(t, boot, err)
	node, err := c.ForNode(s.credential("token"))
	review(t, node, err)
	s.waitFor(2)
	if boot.http.Transport == node.http.Transport {
		t.Error("the bootstrap and the node credential share a transport")
	}
}

// TestClientsArePerBootstrapper: two Bootstrappers' Clients (a reload's new
// one beside the old, two tests) share no transport: the same credential
// dials twice, and closing one's idle connections leaves the other's open.
func TestClientsArePerBootstrapper(t *testing.T) {
	s := newAPIServer(t)
	rc := s.credential("node")
	a, b := NewClients(), NewClients()
	api, err := a.ForNode(rc)
	review(t, api, err)
	api, err = b.ForNode(rc)
	review(t, api, err)
	s.waitFor(2)
	a.CloseIdleConnections()
	s.waitFor(1)
}

// TestAChangedCredentialGetsANewTransport: a renewed certificate or a new
// token gets a transport of its own, and the old one's idle connection is
// closed.
func TestAChangedCredentialGetsANewTransport(t *testing.T) {
	s := newAPIServer(t)
	c := NewClients()
	old, err := c.ForNode(s.credential("before"))
	review(t, old, err)
	s.waitFor(1)
	renewed, err := c.ForNode(s.credential("after"))
	if err != nil {
		t.Fatal(err)
	}
	if renewed == old {
		t.Fatal("a changed credential got the old one's clients")
	}
	s.waitFor(0)
	review(t, renewed, nil)
	s.waitFor(1)
}
