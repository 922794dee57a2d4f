package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/bootstrap/apiclient"
)

// waitForCertificate watches the CSR name (uid) until it is approved and
// issued, and returns status.certificate. Denied, Failed, deleted or replaced
// (another UID) end the wait with a *CSRError. A watch that ends (the
// server's timeout, a restart) is resumed from the last resource version
// seen, as client-go's reflector does; only an error from the watch (say the
// version is too old) costs a fresh list. Watches that end at once without
// news are resumed after a pause on clk that grows from 200 ms to 30 s, so a
// flapping API server is not hammered. ctx bounds the wait.
//
// seen is the object as last read (from Create or Get): the first watch
// starts at its resource version, which saves a list round trip.
func waitForCertificate(ctx context.Context, clk clock.Clock, client apiclient.CSRClient, seen *certificatesv1.CertificateSigningRequest) ([]byte, error) {
	if certPEM, done, err := issued(seen, seen.UID); done || err != nil {
		return certPEM, err
	}
	cw := csrWatch{client: client, name: seen.Name, uid: seen.UID,
		selector: fields.OneTermEqualSelector("metadata.name", seen.Name).String()}
	rv := seen.ResourceVersion
	pause := time.Duration(0)
	for {
		if rv == "" {
			var certPEM []byte
			var done bool
			var err error
			if rv, certPEM, done, err = cw.list(ctx); done || err != nil {
				return certPEM, err
			}
		}
		began := clk.Now()
		res, err := cw.watch(ctx, rv)
		if err != nil {
			return nil, err
		}
		if res.cert != nil || res.err != nil {
			return res.cert, res.err
		}
		switch {
		case res.broken:
			rv = "" // the server said the version is unusable: list afresh
		case res.lastRV != "":
			rv = res.lastRV
		}
		// Resume at once after a watch that lasted or brought news; after
		// one that ended at once, wait longer each time.
		if pause = nextPause(pause, res.events > 0 || clk.Since(began) >= time.Minute); pause == 0 {
			continue
		}
		t := clk.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C():
		}
	}
}

// nextPause is the pause before the next watch: none after one that lasted
// or brought news (fruitful), else 200 ms doubling to 30 s.
func nextPause(pause time.Duration, fruitful bool) time.Duration {
	switch {
	case fruitful:
		return 0
	case pause == 0:
		return 200 * time.Millisecond
	}
	return min(2*pause, 30*time.Second)
}

// csrWatch is the CSR name (uid) waitForCertificate waits on.
type csrWatch struct {
	client   apiclient.CSRClient
	name     string
	uid      types.UID
	selector string // metadata.name=name
}

// list reads the CSR afresh: the certificate if it is issued (done), an
// error if it never will be, else the resource version to watch from.
func (cw csrWatch) list(ctx context.Context) (rv string, certPEM []byte, done bool, err error) {
	list, err := cw.client.List(ctx, metav1.ListOptions{FieldSelector: cw.selector})
	if err != nil {
		return "", nil, false, fmt.Errorf("reading CSR %s: %w", cw.name, err)
	}
	// The field selector already filters; checking the name as well keeps
	// this correct against servers (and fakes) that ignore it.
	i := slices.IndexFunc(list.Items, func(c certificatesv1.CertificateSigningRequest) bool { return c.Name == cw.name })
	if i < 0 {
		return "", nil, false, &CSRError{Name: cw.name, Outcome: OutcomeDeleted}
	}
	if certPEM, done, err := issued(&list.Items[i], cw.uid); done || err != nil {
		return "", certPEM, done, err
	}
	return list.ResourceVersion, nil, false, nil
}

// watch watches the CSR from rv until it is issued, can never be, or the
// watch ends; a watch is bounded (a server that stops talking), and its own
// bound ending is no error.
func (cw csrWatch) watch(ctx context.Context, rv string) (watchResult, error) {
	wctx, cancel := context.WithTimeout(ctx, apiclient.WatchTimeout+30*time.Second)
	defer cancel()
	w, err := cw.client.Watch(wctx, metav1.ListOptions{FieldSelector: cw.selector, ResourceVersion: rv})
	if err != nil {
		return watchResult{}, fmt.Errorf("watching CSR %s: %w", cw.name, err)
	}
	res := consume(wctx, w, cw.uid, cw.name)
	w.Stop()
	if res.err != nil && ctx.Err() == nil && errors.Is(res.err, context.DeadlineExceeded) {
		res.err = nil // only the watch's own bound ended
	}
	return res, nil
}

// watchResult is how one watch ended.
type watchResult struct {
	cert   []byte // issued
	err    error  // will never be issued, or ctx ended
	events int    // events about the CSR
	lastRV string // resource version of the last event
	broken bool   // the server sent an error event: resuming needs a list
}

// consume reads watch events until the CSR is issued, can never be, or the
// watch ends.
func consume(ctx context.Context, w watch.Interface, uid types.UID, name string) watchResult {
	var r watchResult
	for {
		select {
		case <-ctx.Done():
			r.err = ctx.Err()
			return r
		case ev, ok := <-w.ResultChan():
			if !ok {
				return r
			}
			if ev.Type == watch.Error {
				r.broken = true // e.g. resource version too old
				return r
			}
			csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
			if !ok || csr.Name != name {
				continue
			}
			r.events++
			r.lastRV = csr.ResourceVersion
			switch ev.Type {
			case watch.Deleted:
				r.err = &CSRError{Name: name, Outcome: OutcomeDeleted}
				return r
			case watch.Added, watch.Modified:
				if certPEM, done, err := issued(csr, uid); done || err != nil {
					r.cert, r.err = certPEM, err
					return r
				}
			}
		}
	}
}

// issued inspects one CSR state: (cert, true, nil) when issued, an error when
// it can never be issued, (nil, false, nil) while still pending.
func issued(csr *certificatesv1.CertificateSigningRequest, uid types.UID) ([]byte, bool, error) {
	if uid != "" && csr.UID != uid {
		return nil, false, &CSRError{Name: csr.Name, Outcome: OutcomeDeleted, Message: "the CSR was deleted and re-created by someone else"}
	}
	approved := false
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateDenied:
			return nil, false, &CSRError{Name: csr.Name, Outcome: OutcomeDenied, Reason: c.Reason, Message: c.Message, By: approvalManager(csr)}
		case certificatesv1.CertificateFailed:
			return nil, false, &CSRError{Name: csr.Name, Outcome: OutcomeFailed, Reason: c.Reason, Message: c.Message}
		case certificatesv1.CertificateApproved:
			approved = true
		}
	}
	if approved && len(csr.Status.Certificate) > 0 {
		return csr.Status.Certificate, true, nil
	}
	return nil, false, nil
}

// approvalManager names who last wrote the approval subresource, from the
// object's managed fields (for example "kubectl" or "kube-controller-manager").
func approvalManager(csr *certificatesv1.CertificateSigningRequest) string {
	var who string
	var when time.Time
	for _, mf := range csr.ManagedFields {
		if mf.Subresource != "approval" || mf.Manager == "" {
			continue
		}
		t := time.Time{}
		if mf.Time != nil {
			t = mf.Time.Time
		}
		if who == "" || !t.Before(when) {
			who, when = mf.Manager, t
		}
	}
	return who
}

// Pending reports whether csr has no final condition yet.
func Pending(csr *certificatesv1.CertificateSigningRequest) bool {
	_, done, err := issued(csr, "")
	return !done && err == nil
}
