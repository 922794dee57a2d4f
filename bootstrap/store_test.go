package bootstrap

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// TestStoreWakesWatchersOfTheCurrentLink: the kubelet watches tlsCertFile
// (kubelet-server-current.pem) with fsnotify, which follows the link when the
// watch is set. Storing a new certificate must raise an event on that watch,
// once and again after further renewals, or the kubelet keeps serving the
// first certificate it loaded (as it did, past expiry, before touchPrevious).
func TestStoreWakesWatchersOfTheCurrentLink(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	store := func(at time.Time) {
		t.Helper()
		key := newKey(t)
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM := ca.issue(t, key.Public(), Request{Kind: Serving, NodeName: "n"}, nil)
		if _, err := storeCertificate(dir, Serving, certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), at); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	store(start)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(CurrentPath(dir, Serving)); err != nil { // as dynamiccertificates does: following the link
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		store(start.Add(time.Duration(i) * time.Hour))
		select {
		case e := <-w.Events:
			t.Logf("renewal %d: %s", i, e)
		case err := <-w.Errors:
			t.Fatal(err)
		case <-time.After(2 * time.Second):
			t.Fatalf("renewal %d: no event for a watcher of %s", i, CurrentPath(dir, Serving))
		}
		for len(w.Events) > 0 {
			<-w.Events
		}
	}
}
