package bootstrap

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

// TestCloseIdleConnectionsClosesTheAPIConnections: after a request the
// client keeps its HTTP/2 connection open (client-go: 90 s); an idle daemon
// closes it at once with CloseIdleConnections, and the next request dials
// again.
func TestCloseIdleConnectionsClosesTheAPIConnections(t *testing.T) {
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("request over %s, want HTTP/2 as with an API server", r.Proto)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview","status":{"userInfo":{"username":"system:node:n"}}}`)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	openConns := func() int { mu.Lock(); defer mu.Unlock(); return len(open) }
	waitFor := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); openConns() != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections open, want %d", openConns(), want)
			}
		}
	}

	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	rc := &rest.Config{Host: srv.URL, BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
	if _, err := selfSubjectReview(context.Background(), rc); err != nil {
		t.Fatal(err)
	}
	waitFor(1)
	if n := CloseIdleConnections(); n == 0 {
		t.Error("CloseIdleConnections found no transport")
	}
	waitFor(0)
	if _, err := selfSubjectReview(context.Background(), rc); err != nil {
		t.Fatalf("a request after CloseIdleConnections: %v", err)
	}
	waitFor(1)
	CloseIdleConnections()
	waitFor(0)
}
