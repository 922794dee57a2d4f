package bootstrap

import (
	"net/http"
	"sync"
	"weak"

	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// client-go keeps one HTTP transport per credential (its TLS cache), and a
// transport keeps its connections to the API server open for 90 s after the
// last request (IdleConnTimeout), pinging them every 30 s meanwhile. An idle
// daemon needs none of them for months: CloseIdleConnections lets it close
// them as soon as it settles, instead of keeping their buffers and
// goroutines, and running their code, for another minute and a half.

var (
	transportsMu sync.Mutex
	// transports are the transports under the clients restClientFor built,
	// weakly: one lives while a client or an open connection holds it.
	transports = map[weak.Pointer[http.Transport]]struct{}{}
)

// trackTransport remembers the *http.Transport under rt. restClientFor makes
// it the first transport wrapper, so rt is what client-go's TLS cache handed
// out: the transport itself or its wrapper for the cache's bookkeeping.
func trackTransport(rt http.RoundTripper) http.RoundTripper {
	inner := rt
	for inner != nil {
		if t, ok := inner.(*http.Transport); ok {
			transportsMu.Lock()
			transports[weak.Make(t)] = struct{}{}
			transportsMu.Unlock()
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

// CloseIdleConnections closes the connections to the API server that no
// request uses now, over every transport this package's clients used; a
// watch in progress keeps its connection. The next request dials again. It
// returns the number of transports.
func CloseIdleConnections() int {
	var live []*http.Transport
	transportsMu.Lock()
	for w := range transports {
		if t := w.Value(); t != nil {
			live = append(live, t)
		} else {
			delete(transports, w)
		}
	}
	transportsMu.Unlock()
	for _, t := range live {
		// net/http also reaches the HTTP/2 connections golang.org/x/net's
		// transport holds (client-go configures it with ConfigureTransports).
		t.CloseIdleConnections()
	}
	return len(live)
}
