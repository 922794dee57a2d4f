package apiclient

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	eventsv1 "k8s.io/api/events/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

// Clients builds the API clients of one Bootstrapper (each has its own: a
// reload's new Bootstrapper, or a test's, shares nothing with another). It
// keeps one transport per credential, the bootstrap token's and the node's
// own, under every client made with it: a credential's CSR, identity and
// Event clients share its connections, and the two credentials never share
// one (client-go's process-wide cache would hand any two clients with the
// same TLS settings the same transport). A credential that changes (a
// renewed certificate, a new token) gets a new transport, and the old one's
// idle connections are closed.
//
// client-go keeps a transport's connections open for 90 s after the last
// request (IdleConnTimeout), pinging them every 30 s meanwhile; an idle
// daemon needs none of them for months: CloseIdleConnections closes them.
type Clients struct {
	mu  sync.Mutex
	api map[bool]*API // by Credential.Bootstrap
}

// UserAgent is the User-Agent of every request: the API server's audit log
// names certagent, not Go's HTTP client, as the maker of its CSRs.
const UserAgent = "certagent"

// NewClients returns a Clients with no transport yet.
func NewClients() *Clients { return &Clients{api: map[bool]*API{}} }

// ForBootstrap is the API as the bootstrap credential rc reaches it.
func (c *Clients) ForBootstrap(rc *rest.Config) (*API, error) { return c.forCredential(true, rc) }

// ForNode is the API as the node's own credential rc (kubelet.conf) reaches it.
func (c *Clients) ForNode(rc *rest.Config) (*API, error) { return c.forCredential(false, rc) }

func (c *Clients) forCredential(bootstrap bool, rc *rest.Config) (*API, error) {
	cfg := rest.CopyConfig(rc)
	if err := rest.LoadTLSFiles(cfg); err != nil {
		// Read the certificate, key and CA now, so that the transport is
		// of what they hold now (a renewed or re-bootstrapped kubelet.conf
		// is proven with its new certificate, not one cached for its path).
		return nil, fmt.Errorf("reading the kubeconfig's certificate, key or CA: %w", err)
	}
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = "", "", ""
	if cfg.UserAgent == "" {
		cfg.UserAgent = UserAgent
	}
	fp := fingerprint(bootstrap, cfg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.api[bootstrap]; a != nil && a.fingerprint == fp {
		return a, nil
	}
	a := &API{fingerprint: fp, cfg: cfg}
	// A dialer of its own makes client-go build a transport for this
	// credential alone: its TLS cache keys transports by TLS settings and
	// dialer, and this dialer is no one else's.
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	cfg.Dial = d.DialContext
	// First, so that it sees client-go's own transport.
	cfg.WrapTransport = transport.Wrappers(a.track, cfg.WrapTransport)
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the HTTP client: %w", err)
	}
	a.http = hc
	if old := c.api[bootstrap]; old != nil {
		old.closeIdle()
	}
	c.api[bootstrap] = a
	return a, nil
}

// CloseIdleConnections closes the connections to the API server that no
// request uses now, of both credentials; a watch in progress keeps its
// connection. The next request dials again. It returns the number of
// transports.
func (c *Clients) CloseIdleConnections() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, a := range c.api {
		if a.closeIdle() {
			n++
		}
	}
	return n
}

// fingerprint identifies a credential by what decides where and as whom its
// requests go: the server, the TLS settings and material, the
// authentication, the proxy.
func fingerprint(bootstrap bool, cfg *rest.Config) string {
	h := sha256.New()
	tls := cfg.TLSClientConfig
	fmt.Fprintf(h, "%t|%s|%s|%t|%s|%q|%q|%q|%q|%q|%q|%q|%q|%t|%#v|%#v|%#v|", bootstrap, cfg.Host, cfg.APIPath, tls.Insecure, tls.ServerName,
		tls.CertData, tls.KeyData, tls.CAData, tls.NextProtos, cfg.BearerToken, cfg.BearerTokenFile, cfg.Username, cfg.Password,
		cfg.DisableCompression, cfg.Impersonate, cfg.ExecProvider, cfg.AuthProvider)
	if cfg.Proxy != nil {
		if u, err := url.Parse(cfg.Host); err == nil {
			p, err := cfg.Proxy(&http.Request{URL: u})
			fmt.Fprintf(h, "proxy %v %v", p, err)
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// API is the API server as one credential reaches it: every client made
// from it uses that credential's transport.
type API struct {
	fingerprint string
	cfg         *rest.Config
	http        *http.Client

	mu        sync.Mutex
	transport *http.Transport // under http's wrappers; nil until built
}

// track remembers the *http.Transport under rt: what client-go's TLS cache
// handed out, the transport itself or its wrapper for the cache's
// bookkeeping.
func (a *API) track(rt http.RoundTripper) http.RoundTripper {
	for inner := rt; inner != nil; {
		if t, ok := inner.(*http.Transport); ok {
			a.mu.Lock()
			a.transport = t
			a.mu.Unlock()
			break
		}
		w, ok := inner.(utilnet.RoundTripperWrapper)
		if !ok {
			break
		}
		inner = w.WrappedRoundTripper()
	}
	return rt
}

// closeIdle closes the transport's idle connections; false if it has none.
func (a *API) closeIdle() bool {
	a.mu.Lock()
	t := a.transport
	a.mu.Unlock()
	if t == nil {
		return false
	}
	// net/http also reaches the HTTP/2 connections golang.org/x/net's
	// transport holds (client-go configures it with ConfigureTransports).
	t.CloseIdleConnections()
	return true
}

// CSRs is the CertificateSigningRequest API.
func (a *API) CSRs() (CSRClient, error) {
	c, err := restClientFor(a.cfg, a.http, certificatesv1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("building CSR client: %w", err)
	}
	return &csrClient{c: c}, nil
}

// Events is the events.k8s.io API.
func (a *API) Events() (EventClient, error) {
	c, err := restClientFor(a.cfg, a.http, eventsv1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("building events client: %w", err)
	}
	return &eventClient{c: c}, nil
}

// SelfSubjectReview asks who the credential authenticates as.
func (a *API) SelfSubjectReview(ctx context.Context) (*authenticationv1.SelfSubjectReview, error) {
	c, err := restClientFor(a.cfg, a.http, authenticationv1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("building client: %w", err)
	}
	out := &authenticationv1.SelfSubjectReview{}
	err = c.Post().Timeout(RequestTimeout).Resource("selfsubjectreviews").Body(&authenticationv1.SelfSubjectReview{}).Do(ctx).Into(out)
	return out, err
}
