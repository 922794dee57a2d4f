package trust

import (
	"context"
	"crypto/x509"
	"errors"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/clock"
)

// Source is the published trust as the node's credential reaches it.
type Source interface {
	// List returns every ClusterTrustBundle and the resourceVersion to
	// watch from. ErrNotServed: the API server serves no version of the
	// API that certagent speaks, nor can the trust be read elsewhere.
	List(ctx context.Context) ([]Published, string, error)
	// Watch reports changes after resourceVersion.
	Watch(ctx context.Context, resourceVersion string) (watch.Interface, error)
	// ServerChain is the chain the API server presents to this connection,
	// leaf first, and the name it is verified for.
	ServerChain(ctx context.Context) ([]*x509.Certificate, string, error)
}

// ErrNotServed: the API server does not serve ClusterTrustBundles
// (certificates.k8s.io/v1 from 1.37; v1beta1 in 1.33–1.36 only with the
// ClusterTrustBundle feature gate and the v1beta1 API turned on).
var ErrNotServed = errors.New("the API server serves no ClusterTrustBundle API (certificates.k8s.io/v1, or v1beta1 where turned on)")

// Follower lists the published trust, hands it to Apply, and does so again
// after each change a watch reports. Failures are retried with jittered
// back-off; an API not served or not allowed is checked again much later.
type Follower struct {
	// Source builds the source from the node's credential as it is now
	// (kubelet.conf may have changed since the last round).
	Source func(ctx context.Context) (Source, error)
	// Apply gets every published bundle after each change; an error (not
	// a refusal: a failure to finish) has the round retried.
	Apply func(ctx context.Context, src Source, all []Published) error
	// Failed hears each failure to reach the published trust.
	Failed func(err error)
	Clock  clock.Clock
	Rand   func() float64 // uniform in [0, 1)
	Log    *zap.Logger
}

// Timings of the Follower.
const (
	// settle groups the changes of one operator step (several bundles).
	settle       = time.Second
	retryFirst   = time.Second
	retryMax     = 5 * time.Minute
	notServedFor = time.Hour // ErrNotServed: the control plane is upgraded rarely
	// forbiddenFor is the pause after a refusal that repeats: the RBAC of
	// packaging/cluster/trust may be applied any time. A first refusal is
	// retried on the ordinary back-off: an API server that is starting
	// refuses before its RBAC caches have synced (v1.30, right after the
	// restart of a CA rotation's phase 1: TestCARotation on v1.30).
	forbiddenFor = 10 * time.Minute
)

// Run follows the published trust until ctx ends.
func (f *Follower) Run(ctx context.Context) {
	wait, forbidden := retryFirst, false
	for ctx.Err() == nil {
		err := f.round(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			wait, forbidden = retryFirst, false
			continue
		}
		if f.Failed != nil {
			f.Failed(err)
		}
		pause, again := wait, forbidden
		forbidden = apierrors.IsForbidden(err)
		switch {
		case forbidden && again:
			pause = forbiddenFor
		case errors.Is(err, ErrNotServed):
			pause = notServedFor
		default:
			wait = min(2*wait, retryMax)
		}
		pause = time.Duration(float64(pause) * (0.5 + f.Rand()))
		f.Log.Debug("following the published trust: retrying", zap.Error(err), zap.Duration("in", pause))
		select {
		case <-ctx.Done():
		case <-f.Clock.After(pause):
		}
	}
}

// round lists and applies, then watches until something changes (nil) or
// the watch fails.
func (f *Follower) round(ctx context.Context) error {
	src, err := f.Source(ctx)
	if err != nil {
		return err
	}
	all, rv, err := src.List(ctx)
	if err != nil {
		return err
	}
	if err := f.Apply(ctx, src, all); err != nil {
		return err
	}
	w, err := src.Watch(ctx, rv)
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			switch {
			case !ok:
				return nil // the watch ran its time: list again
			case ev.Type == watch.Bookmark:
				continue
			case ev.Type == watch.Error:
				return apierrors.FromObject(ev.Object)
			}
			f.settle(ctx, w)
			return nil
		}
	}
}

// settle waits until the watch has been quiet for a moment.
func (f *Follower) settle(ctx context.Context, w watch.Interface) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.ResultChan():
			if !ok {
				return
			}
		case <-f.Clock.After(settle):
			return
		}
	}
}
