package bootstrap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
)

// Two TLS handshakes lie on a bootstrap's critical path: the bootstrap
// token's connection, on which the CSR is posted, and the new certificate's,
// on which kubelet.conf is proven. client-go dials when the first request
// needs a connection, so a bootstrap waited for one handshake after its
// pending key was written and synced, and for the other after the
// certificate was issued. A warm connection is dialed earlier: the token's
// while the key is written and synced, the certificate's as soon as the CSR
// is approved (the signer is then still at work), its handshake pausing where
// the client presents its certificate until the certificate is issued.
// restClientFor gives the client built for that very *rest.Config the warm
// connection's transport, which is client-go's own (utilnet's defaults:
// HTTP/2 with health-check pings, idle timeout) except that its first TLS
// connection is the one dialed ahead.
//
// Only a plain configuration is warmed: https, no proxy (from the config or
// the environment), no custom dialer or transport, no credential plugin.
// Anything else goes the usual way; so does everything if a warm dial fails.

// warmCertWait bounds how long a warm handshake waits for a certificate the
// signer has not issued yet. The API server drops a handshake after 32 s
// (its ReadHeaderTimeout); the normal proof runs if this one gives up.
const warmCertWait = 20 * time.Second

// warmHandshakeTimeout is client-go's TLSHandshakeTimeout.
const warmHandshakeTimeout = 10 * time.Second

// warmConn is a transport whose first connection is dialed ahead.
type warmConn struct {
	t      *http.Transport
	addr   string // host:port dialed
	ctx    context.Context
	cancel context.CancelFunc

	// certReady is closed once cert is set (warmUpPending: a certificate the
	// signer has not issued yet); nil when the credential is complete.
	certReady chan struct{}
	cert      *tls.Certificate

	mu    sync.Mutex
	first chan dialed // the connection dialed ahead; nil once taken
}

type dialed struct {
	conn net.Conn
	err  error
}

var (
	warmMu sync.Mutex
	// warmFor maps the very *rest.Config a client will be built from to its warm connection.
	warmFor = map[*rest.Config]*warmConn{}
)

// warmUp dials rc's API server now, for the client restClientFor will build
// from rc itself. It returns nil (nothing to release) if rc is not a
// configuration it warms.
func warmUp(ctx context.Context, rc *rest.Config) *warmConn {
	w := newWarmConn(ctx, rc, false)
	if w != nil {
		w.register(rc)
		go w.dialAhead(w.first)
	}
	return w
}

// warmUpPending dials the API server of server (its host, CA and TLS
// settings; no credential) now, for a client certificate that does not exist
// yet: the handshake waits for supply, which names the configuration whose
// client gets the connection.
func warmUpPending(ctx context.Context, server *rest.Config) *warmConn {
	w := newWarmConn(ctx, server, true)
	if w != nil {
		go w.dialAhead(w.first)
	}
	return w
}

// dialAhead dials the first connection into first (w.first as newWarmConn
// made it: dialForRequest and release set the field to nil when they take it).
func (w *warmConn) dialAhead(first chan<- dialed) {
	conn, err := w.dialTLS(w.ctx)
	first <- dialed{conn, err}
}

func (w *warmConn) register(rc *rest.Config) {
	warmMu.Lock()
	warmFor[rc] = w
	warmMu.Unlock()
}

func newWarmConn(ctx context.Context, rc *rest.Config, pending bool) *warmConn {
	u, err := url.Parse(rc.Host)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || rc.Proxy != nil || rc.Dial != nil || rc.Transport != nil ||
		rc.ExecProvider != nil || rc.AuthProvider != nil {
		return nil
	}
	tlsRC := rest.AnonymousClientConfig(rc) // server, CA, server name: the TLS part
	if !pending {
		tlsRC.CertFile, tlsRC.KeyFile, tlsRC.CertData, tlsRC.KeyData = rc.CertFile, rc.KeyFile, rc.CertData, rc.KeyData
	}
	tlsConfig, err := rest.TLSConfigFor(tlsRC)
	if err != nil {
		return nil
	}
	if tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tlsConfig.ServerName == "" && !tlsConfig.InsecureSkipVerify {
		tlsConfig.ServerName = u.Hostname() // net/http would set it; a custom dial must
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	w := &warmConn{addr: net.JoinHostPort(u.Hostname(), port), first: make(chan dialed, 1)}
	w.ctx, w.cancel = context.WithCancel(ctx)
	if pending {
		w.certReady = make(chan struct{})
		tlsConfig.GetClientCertificate = w.clientCertificate
	}
	w.t = utilnet.SetTransportDefaults(&http.Transport{
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: warmHandshakeTimeout,
		MaxIdleConnsPerHost: 25, // client-go's
		DialTLSContext:      w.dialForRequest,
		DisableCompression:  rc.DisableCompression,
	})
	if p, err := w.t.Proxy(&http.Request{URL: u}); err != nil || p != nil {
		w.cancel()
		return nil // through a proxy net/http does the TLS itself
	}
	return w
}

// supply hands warmUpPending's handshake the client certificate (it goes
// on) and makes rc, a configuration carrying that certificate, the one whose
// client gets the connection.
func (w *warmConn) supply(rc *rest.Config, cert *tls.Certificate) {
	if w == nil {
		return
	}
	w.cert = cert
	close(w.certReady)
	w.register(rc)
}

// clientCertificate is the pending credential's GetClientCertificate.
func (w *warmConn) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	select {
	case <-w.certReady: // supplied: every later handshake too
		return w.cert, nil
	default:
	}
	t := time.NewTimer(warmCertWait)
	defer t.Stop()
	select {
	case <-w.certReady:
		return w.cert, nil
	case <-w.ctx.Done():
		return nil, w.ctx.Err()
	case <-t.C:
		return nil, errors.New("the certificate was not issued in time")
	}
}

// dialForRequest is the transport's DialTLSContext: the connection dialed
// ahead for the first request that needs one (a fresh dial if that failed),
// fresh dials after.
func (w *warmConn) dialForRequest(ctx context.Context, _, _ string) (net.Conn, error) {
	w.mu.Lock()
	first := w.first
	w.first = nil
	w.mu.Unlock()
	if first != nil {
		select {
		case d := <-first:
			if d.err == nil {
				return d.conn, nil
			}
		case <-ctx.Done():
			go closeDialed(first)
			return nil, ctx.Err()
		}
	}
	return w.dialTLS(ctx)
}

// dialTLS connects and completes the TLS handshake, as net/http would.
func (w *warmConn) dialTLS(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second} // client-go's
	raw, err := d.DialContext(ctx, "tcp", w.addr)
	if err != nil {
		return nil, err
	}
	timeout := warmHandshakeTimeout
	if w.certReady != nil {
		timeout += warmCertWait
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn := tls.Client(raw, w.t.TLSClientConfig)
	if err := conn.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", w.addr, err)
	}
	return conn, nil
}

// release ends what the warm connection started, once its work is done: a
// dial not taken is cancelled or its connection closed, no further client
// gets the transport, and its idle connections are closed.
func (w *warmConn) release() {
	if w == nil {
		return
	}
	warmMu.Lock()
	for rc, v := range warmFor {
		if v == w {
			delete(warmFor, rc)
		}
	}
	warmMu.Unlock()
	w.mu.Lock()
	first := w.first
	w.first = nil
	w.mu.Unlock()
	w.cancel()
	// Closing waits for nothing the caller needs (a dial being cancelled, TLS
	// close_notify on an idle connection): off the caller's path.
	go func() {
		if first != nil {
			closeDialed(first)
		}
		w.t.CloseIdleConnections()
	}()
}

func closeDialed(first chan dialed) {
	if d := <-first; d.conn != nil {
		_ = d.conn.Close()
	}
}

// warmTransport returns the warm connection's transport for rc, nil if rc has none.
func warmTransport(rc *rest.Config) *http.Transport {
	warmMu.Lock()
	defer warmMu.Unlock()
	if w := warmFor[rc]; w != nil {
		return w.t
	}
	return nil
}
