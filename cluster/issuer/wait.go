package issuer

import (
	"context"
	"fmt"
	"sync"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// waiter wakes the Issue calls waiting on a CSR whenever the CSR informer
// sees that CSR change, so waiting is a look into the cache, not a watch of
// its own per CSR.
type waiter struct {
	indexer cache.Indexer
	mu      sync.Mutex
	// changed holds, per CSR name someone waits on, a channel closed at
	// that CSR's next event. An entry lives until that event: every CSR the
	// issuer makes ends with one (its deletion by csrcleaner, at the latest).
	changed map[string]chan struct{}
}

func newWaiter(inf cache.SharedIndexInformer) (*waiter, error) {
	w := &waiter{indexer: inf.GetIndexer(), changed: map[string]chan struct{}{}}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.notify,
		UpdateFunc: func(_, obj any) { w.notify(obj) },
		DeleteFunc: w.notify,
	}); err != nil {
		return nil, fmt.Errorf("watching CSRs: %w", err)
	}
	return w, nil
}

func (w *waiter) notify(obj any) {
	name, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj) // cluster-scoped: the name
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.changed[name]; ok {
		close(ch)
		delete(w.changed, name)
	}
}

func (w *waiter) next(name string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch, ok := w.changed[name]
	if !ok {
		ch = make(chan struct{})
		w.changed[name] = ch
	}
	return ch
}

// wait returns the certificate of the CSR name with uid once the signer has
// put it in the status, or an error once it is denied, fails, or ctx ends.
func (w *waiter) wait(ctx context.Context, name string, uid types.UID) ([]byte, error) {
	state := "not yet in the service's cache"
	for {
		changed := w.next(name) // before looking, so no event is missed
		obj, exists, err := w.indexer.GetByKey(name)
		if err != nil {
			return nil, fmt.Errorf("looking up CertificateSigningRequest %s in the cache: %w", name, err)
		}
		if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); exists && ok {
			cert, done, err := issued(csr, uid)
			if done {
				return cert, err
			}
			state = "not approved"
			if _, approved := condition(csr, certificatesv1.CertificateApproved); approved {
				state = "approved, not signed"
			}
			if csr.UID != uid {
				state = "replaced by another object of the same name, or the cache is behind"
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for CertificateSigningRequest %s to be signed (%s): %w; is kube-controller-manager's csrsigning controller running with --cluster-signing-cert-file?", name, state, ctx.Err())
		}
	}
}

// issued says whether the CSR uid is done: signed (its certificate), denied
// or failed (an error). Another object of the same name (a stale cache, or
// the CSR deleted and made again) is not done.
func issued(csr *certificatesv1.CertificateSigningRequest, uid types.UID) ([]byte, bool, error) {
	if csr.UID != uid {
		return nil, false, nil
	}
	if c, ok := condition(csr, certificatesv1.CertificateDenied); ok {
		return nil, true, fmt.Errorf("CertificateSigningRequest %s was denied (reason %q: %s)", csr.Name, c.Reason, c.Message)
	}
	if c, ok := condition(csr, certificatesv1.CertificateFailed); ok {
		return nil, true, fmt.Errorf("signing CertificateSigningRequest %s failed (reason %q: %s)", csr.Name, c.Reason, c.Message)
	}
	if len(csr.Status.Certificate) > 0 {
		return csr.Status.Certificate, true, nil
	}
	return nil, false, nil
}
