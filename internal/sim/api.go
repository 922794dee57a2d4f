//go:build failpoints

// Package sim is a seeded simulation of one certagent node over a year of
// virtual time: the real agent (packages agent, bootstrap and rotate) against
// an in-memory control plane that signs, approves late or never, denies,
// refuses client certificates, goes away, throttles, drops watches,
// garbage-collects CSRs and clips certificates to its CA's expiry, on a clock
// whose wall time jumps (suspends, NTP steps). A seed fixes the faults, their
// times and every random draw; the interleaving of the agent's goroutines can
// still change small details from run to run (an event more or fewer in
// about half the seeds). See sim_test.go and strand.go.
package sim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
)

var csrGR = schema.GroupResource{Group: "certificates.k8s.io", Resource: "certificatesigningrequests"}

// ca is a cluster CA: its key, and the certificates that carry it (a CA
// renewed with the same key keeps verifying what the old one signed).
type ca struct {
	name  string
	key   *ecdsa.PrivateKey
	certs []*x509.Certificate // oldest first; the signer uses the newest
	pem   []byte              // every cert, for kubeconfigs
}

func newCA(now time.Time, lifetime time.Duration) *ca {
	return newNamedCA("sim-cluster-ca", now, lifetime)
}

// newNamedCA is a CA with a key of its own (a rotation's new CA).
func newNamedCA(name string, now time.Time, lifetime time.Duration) *ca {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &ca{name: name, key: key}
	c.renew(now, lifetime)
	return c
}

// renew issues another CA certificate with the same key and subject.
func (c *ca) renew(now time.Time, lifetime time.Duration) {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(len(c.certs) + 1)), Subject: pkix.Name{CommonName: c.name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(lifetime), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, c.key.Public(), c.key)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	c.certs = append(c.certs, cert)
	c.pem = append(c.pem, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
}

func (c *ca) newest() *x509.Certificate { return c.certs[len(c.certs)-1] }

// signedBy reports whether leaf verifies with c's key.
func (c *ca) signedBy(leaf *x509.Certificate) bool { return leaf.CheckSignatureFrom(c.newest()) == nil }

// csr is a CertificateSigningRequest in the simulated API.
type csr struct {
	obj     *certificatesv1.CertificateSigningRequest
	created time.Time
	done    time.Time // issued, denied or failed; zero while pending
	// pendingGC is the cleaner's check 24 hours after creation
	pendingGC *event
}

// API is the in-memory control plane. All methods are safe for the agent's
// goroutines; w.now is the simulated wall clock.
type API struct {
	w  *World
	mu sync.Mutex

	cluster  *ca // signs node certificates and the API server's (so kubeconfigs trust it)
	tokens   map[string]time.Time
	objects  map[string]*csr
	rv       int64
	uid      int64
	watchers []*simWatcher

	// Faults.
	down       bool
	throttle   time.Duration // > 0: every request answers 429 with this Retry-After
	serverErrs bool          // every request answers 500
	denyClient bool          // the client-CSR approver denies (a misconfigured approver)
	// refuseCerts > 0: every client certificate is answered 401 (the API
	// server lost the signer's CA from its --client-ca-file); tokens work.
	refuseCerts int
	// proofErrs > 0: SelfSubjectReviews answer 503; other requests work.
	proofErrs int

	// What the signer does.
	signingDuration time.Duration
	// Who approves serving CSRs: an automatic approver (seconds) or a person.
	humanApprover bool

	verified    map[string]bool // authentication results by certificate
	verifiedGen int             // the caGen they hold for

	rot    rotationState // a CA rotation's state of the API server (rotation.go)
	leaves map[string]*x509.Certificate

	// Tallies for invariants and figures.
	creates map[string][]time.Time // by signer
	// succeeded: client certificates (DER) some request authenticated with
	// succeeded; proofFailed: those whose SelfSubjectReview failed because
	// of refuseCerts or proofErrs while a bootstrap kubeconfig was on disk
	// (the agent's proof before it may delete that).
	succeeded, proofFailed map[string]bool

	// instant and atInstant count the requests made at one true time.
	instant   time.Time
	atInstant int

	reused  int // creates of a name whose earlier object was deleted
	deleted map[string]bool
	failure string // the first invariant this API saw broken
}

func newAPI(w *World, signingDuration time.Duration) *API {
	return &API{w: w, cluster: newCA(w.now(), 10*365*24*time.Hour), tokens: map[string]time.Time{}, objects: map[string]*csr{},
		creates: map[string][]time.Time{}, deleted: map[string]bool{}, signingDuration: signingDuration,
		succeeded: map[string]bool{}, proofFailed: map[string]bool{}}
}

func (a *API) fail(format string, args ...any) {
	if a.failure == "" {
		a.failure = fmt.Sprintf(format, args...)
	}
}

// caller is who a credential authenticates as.
type caller struct {
	user string            // "" if refused
	err  error             // why refused, as the API server answers
	why  string            // why refused, in the simulation's words
	leaf *x509.Certificate // the client certificate presented, if one was
}

// authenticate answers as the API server would for rc, at now.
func (a *API) authenticate(rc *rest.Config) caller {
	// The agent must trust the API server's certificate (the cluster CA).
	caData := rc.CAData
	if len(caData) == 0 && rc.CAFile != "" {
		caData, _ = os.ReadFile(rc.CAFile)
	}
	if !strings.Contains(string(caData), strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.servingCA().certs[0].Raw})))) {
		return caller{err: &urlError{x509.UnknownAuthorityError{}}, why: "it trusts another cluster's CA"}
	}
	if rc.BearerToken != "" {
		exp, ok := a.tokens[rc.BearerToken]
		switch {
		case !ok:
			return caller{err: apierrors.NewUnauthorized("Unauthorized"), why: "bootstrap token unknown"}
		case !a.w.now().Before(exp):
			return caller{err: apierrors.NewUnauthorized("Unauthorized"), why: "bootstrap token expired"}
		}
		return caller{user: "system:bootstrap:" + strings.SplitN(rc.BearerToken, ".", 2)[0]}
	}
	// The certificate: by its data, or by the file's stat (read and parsed
	// once per version of the file).
	key := string(rc.CertData)
	if len(rc.CertData) == 0 {
		key = rc.CertFile + "|" + statKey(rc.CertFile)
	}
	leaf, ok := a.leaves[key]
	if !ok {
		data := rc.CertData
		if len(data) == 0 {
			data, _ = os.ReadFile(rc.CertFile)
		}
		certs, err := bootstrap.ParseCertificates(data)
		if err != nil {
			return caller{err: apierrors.NewUnauthorized("Unauthorized"), why: "no client certificate"}
		}
		if a.leaves == nil || len(a.leaves) > 1000 {
			a.leaves = map[string]*x509.Certificate{}
		}
		leaf = certs[0]
		a.leaves[key] = leaf
	}
	unauthorized := func(why string) caller {
		return caller{err: apierrors.NewUnauthorized("Unauthorized"), why: why, leaf: leaf}
	}
	switch now := a.w.now(); {
	case !a.trusted(leaf):
		return unauthorized("client certificate signed by another cluster's CA")
	case !now.Before(leaf.NotAfter):
		return unauthorized("client certificate expired")
	case now.Before(leaf.NotBefore):
		return unauthorized("client certificate not yet valid")
	case a.refuseCerts > 0:
		return unauthorized("client certificates refused")
	}
	return caller{user: leaf.Subject.CommonName, leaf: leaf}
}

// stormLimit is how many requests at one instant of the simulated time make
// a storm: an agent that loops without waiting (a step takes a handful).
const stormLimit = 1000

// arrive counts a request; a storm is a failure, and the goroutine that
// makes the stormLimit-th request is frozen so that the simulation can go on
// to report it (a loop that never waits would otherwise never let the
// bubble's time move, and the test would end at its timeout). a.mu is not
// held.
func (a *API) arrive() {
	a.mu.Lock()
	now := a.w.now()
	if !now.Equal(a.instant) {
		a.instant, a.atInstant = now, 0
	}
	a.atInstant++
	storm := a.atInstant >= stormLimit
	if a.atInstant == stormLimit {
		a.fail("seed %d: a request storm: %d requests at %s without the clock moving (the agent loops without waiting)", a.w.seed, stormLimit, now.Format(time.RFC3339))
	}
	a.mu.Unlock()
	if storm {
		a.w.freeze()
	}
}

// admit is what a request meets: the gate, then authentication. A
// certificate that gets through is recorded in a.succeeded. a.mu is held.
func (a *API) admit(rc *rest.Config) caller {
	if err := a.gate(); err != nil {
		return caller{err: err, why: "the API server cannot be reached"}
	}
	who := a.authenticate(rc)
	if who.err == nil && who.leaf != nil {
		a.succeeded[string(who.leaf.Raw)] = true
	}
	return who
}

// trusted reports whether a CA of the API server's client-CA set signed
// leaf (remembered per certificate and set: a signature check per request
// would dominate the run).
func (a *API) trusted(leaf *x509.Certificate) bool {
	key := string(leaf.Raw)
	if v, ok := a.verified[key]; ok && a.verifiedGen == a.rot.gen {
		return v
	}
	if a.verified == nil || a.verifiedGen != a.rot.gen {
		a.verified, a.verifiedGen = map[string]bool{}, a.rot.gen
	}
	v := slices.ContainsFunc(a.clientCAs(), func(c *ca) bool { return c.signedBy(leaf) })
	a.verified[key] = v
	return v
}

// urlError looks like what client-go returns for a TLS failure.
type urlError struct{ err error }

func (e *urlError) Error() string { return "Post \"https://sim\": " + e.err.Error() }
func (e *urlError) Unwrap() error { return e.err }

// gate is what every request meets first: an outage, throttling, errors.
func (a *API) gate() error {
	switch {
	case a.down || a.rot.offline > 0:
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	case a.throttle > 0:
		return apierrors.NewTooManyRequests("the server has received too many requests", int(a.throttle/time.Second))
	case a.serverErrs:
		return apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
	}
	return nil
}

// client is the CSR API as seen with one credential.
type client struct {
	a  *API
	rc *rest.Config
}

func (a *API) clientFor(rc *rest.Config) (apiclient.CSRClient, error) {
	return &client{a: a, rc: rc}, nil
}

// checkIdentity is a SelfSubjectReview.
// The proof that kubelet.conf works before the bootstrap kubeconfig is
// deleted is one of these; refuseCerts and proofErrs make it fail.
func (a *API) checkIdentity(_ context.Context, rc *rest.Config, node string) error {
	a.arrive()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.gate(); err != nil {
		return err
	}
	// TLS and authentication come first: a kubelet.conf the API server
	// refuses is answered 401 (or fails the handshake), never 503.
	c := a.authenticate(rc)
	if c.err != nil {
		if a.refuseCerts > 0 {
			a.proofFailedBy(c.leaf)
		}
		return c.err
	}
	if a.proofErrs > 0 {
		a.proofFailedBy(c.leaf)
		return apierrors.NewServiceUnavailable("selfsubjectreviews: the authentication API is unavailable")
	}
	if c.user != "system:node:"+node {
		return fmt.Errorf("authenticates as %q", c.user)
	}
	if c.leaf != nil {
		a.succeeded[string(c.leaf.Raw)] = true
	}
	return nil
}

// proofFailedBy records that a SelfSubjectReview with leaf failed because of
// a fault of the scenario, if a bootstrap kubeconfig waits on it; a.mu is
// held.
func (a *API) proofFailedBy(leaf *x509.Certificate) {
	if leaf == nil {
		return
	}
	if _, err := os.Lstat(a.w.cfg.BootstrapKubeconfig); err == nil {
		a.proofFailed[string(leaf.Raw)] = true
	}
}

func (c *client) Create(_ context.Context, in *certificatesv1.CertificateSigningRequest, _ metav1.CreateOptions) (*certificatesv1.CertificateSigningRequest, error) {
	a := c.a
	a.arrive()
	a.mu.Lock()
	defer a.mu.Unlock()
	who := a.admit(c.rc)
	if who.err != nil {
		return nil, who.err
	}
	if _, ok := a.objects[in.Name]; ok {
		return nil, apierrors.NewAlreadyExists(csrGR, in.Name)
	}
	block, _ := pem.Decode(in.Spec.Request)
	// The signature is the real API server's to check (the end-to-end suite
	// posts to one); here it would only cost time.
	if _, err := x509.ParseCertificateRequest(block.Bytes); err != nil {
		return nil, apierrors.NewBadRequest("invalid request")
	}
	// Invariant: never a second pending request of one kind for the same
	// names (a node whose address changed must ask anew; it cannot delete).
	for _, o := range a.objects {
		if o.obj.Spec.SignerName == in.Spec.SignerName && o.done.IsZero() && sameNames(o.obj, in) {
			a.fail("a %s CSR %s was posted while %s (posted %s) was still pending", in.Spec.SignerName, in.Name, o.obj.Name, o.created.Format(time.RFC3339))
		}
	}
	o := a.insert(in, who.user)
	return o.obj.DeepCopy(), nil
}

// insert stores a new CSR requested by user and has it decided (afterCreate);
// a.mu is held.
func (a *API) insert(in *certificatesv1.CertificateSigningRequest, user string) *csr {
	now := a.w.now()
	if a.deleted[in.Name] {
		a.reused++
	}
	obj := in.DeepCopy()
	a.uid++
	a.rv++
	obj.UID = types.UID(fmt.Sprint(a.uid))
	obj.ResourceVersion = fmt.Sprint(a.rv)
	obj.CreationTimestamp = metav1.NewTime(now)
	obj.Spec.Username = user
	o := &csr{obj: obj, created: now}
	a.objects[in.Name] = o
	a.creates[in.Spec.SignerName] = append(a.creates[in.Spec.SignerName], now)
	a.notify(watch.Added, o)
	a.w.afterCreate(o)
	return o
}

func (c *client) Get(_ context.Context, name string, _ metav1.GetOptions) (*certificatesv1.CertificateSigningRequest, error) {
	a := c.a
	a.arrive()
	a.mu.Lock()
	defer a.mu.Unlock()
	if who := a.admit(c.rc); who.err != nil {
		return nil, who.err
	}
	o, ok := a.objects[name]
	if !ok {
		return nil, apierrors.NewNotFound(csrGR, name)
	}
	return o.obj.DeepCopy(), nil
}

func (c *client) List(_ context.Context, opts metav1.ListOptions) (*certificatesv1.CertificateSigningRequestList, error) {
	a := c.a
	a.arrive()
	a.mu.Lock()
	defer a.mu.Unlock()
	if who := a.admit(c.rc); who.err != nil {
		return nil, who.err
	}
	name := strings.TrimPrefix(opts.FieldSelector, "metadata.name=")
	out := &certificatesv1.CertificateSigningRequestList{ListMeta: metav1.ListMeta{ResourceVersion: fmt.Sprint(a.rv)}}
	if o, ok := a.objects[name]; ok {
		out.Items = append(out.Items, *o.obj.DeepCopy())
	}
	return out, nil
}

func (c *client) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	a := c.a
	a.arrive()
	a.mu.Lock()
	defer a.mu.Unlock()
	if who := a.admit(c.rc); who.err != nil {
		return nil, who.err
	}
	sw := &simWatcher{name: strings.TrimPrefix(opts.FieldSelector, "metadata.name="), ch: make(chan watch.Event, 16), a: a, stop: make(chan struct{})}
	a.watchers = append(a.watchers, sw)
	// A watch from an older resource version first sees what it missed.
	from, _ := strconv.ParseInt(opts.ResourceVersion, 10, 64)
	if o, ok := a.objects[sw.name]; ok {
		if cur, _ := strconv.ParseInt(o.obj.ResourceVersion, 10, 64); cur > from {
			sw.send(watch.Modified, o.obj)
		}
	} else if a.deleted[sw.name] {
		sw.ch <- watch.Event{Type: watch.Deleted, Object: &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Name: sw.name}}}
	}
	timeout := 30 * time.Minute
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	a.w.afterWatch(sw, timeout)
	a.closeOnDone(ctx, sw)
	return sw, nil
}

// closeOnDone closes sw when the client side goes away with its context.
func (a *API) closeOnDone(ctx context.Context, sw *simWatcher) {
	go func() {
		select {
		case <-ctx.Done():
			a.mu.Lock()
			a.closeWatcher(sw)
			a.mu.Unlock()
		case <-sw.done():
		}
	}()
}

func sameNames(x, y *certificatesv1.CertificateSigningRequest) bool {
	a, b := parseReq(x), parseReq(y)
	if a == nil || b == nil {
		return false
	}
	ips := func(r *x509.CertificateRequest) []string {
		var out []string
		for _, ip := range r.IPAddresses {
			out = append(out, ip.String())
		}
		slices.Sort(out)
		return out
	}
	da, db := slices.Clone(a.DNSNames), slices.Clone(b.DNSNames)
	slices.Sort(da)
	slices.Sort(db)
	return slices.Equal(da, db) && slices.Equal(ips(a), ips(b))
}

func parseReq(c *certificatesv1.CertificateSigningRequest) *x509.CertificateRequest {
	block, _ := pem.Decode(c.Spec.Request)
	if block == nil {
		return nil
	}
	r, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil
	}
	return r
}

// simWatcher is one open watch.
type simWatcher struct {
	a       *API
	name    string
	ch      chan watch.Event
	closed  bool
	stop    chan struct{}
	closeEv *event // the server's close, scheduled; cancelled if the client ends it first
}

func (w *simWatcher) done() <-chan struct{} { return w.stop }

func (w *simWatcher) send(t watch.EventType, obj *certificatesv1.CertificateSigningRequest) {
	if w.closed {
		return
	}
	select {
	case w.ch <- watch.Event{Type: t, Object: obj.DeepCopy()}:
	default: // a slow watcher is dropped, as the API server does
		w.a.closeWatcher(w)
	}
}

func (w *simWatcher) ResultChan() <-chan watch.Event { return w.ch }

func (w *simWatcher) Stop() {
	w.a.mu.Lock()
	w.a.closeWatcher(w)
	w.a.mu.Unlock()
}

// closeWatcher ends sw; a.mu is held.
func (a *API) closeWatcher(sw *simWatcher) {
	if sw.closed {
		return
	}
	sw.closed = true
	if sw.closeEv != nil {
		sw.closeEv.cancelled.Store(true)
	}
	close(sw.ch)
	close(sw.stop)
	a.watchers = slices.DeleteFunc(a.watchers, func(x *simWatcher) bool { return x == sw })
}

// closeAllWatches ends every watch (an API server restart); a.mu is held.
func (a *API) closeAllWatches() {
	for len(a.watchers) > 0 {
		a.closeWatcher(a.watchers[0])
	}
}

// notify tells the watchers of o's name; a.mu is held.
func (a *API) notify(t watch.EventType, o *csr) {
	for _, w := range slices.Clone(a.watchers) {
		if w.name == o.obj.Name {
			w.send(t, o.obj)
		}
	}
}

// decide approves (and issues) or denies a pending CSR; a.mu is held.
func (a *API) decide(o *csr, approve bool, reason string) {
	if !o.done.IsZero() {
		return
	}
	now := a.w.now()
	a.rv++
	o.obj.ResourceVersion = fmt.Sprint(a.rv)
	o.done = now
	if o.pendingGC != nil {
		o.pendingGC.cancelled.Store(true)
	}
	if !approve {
		o.obj.Status.Conditions = append(o.obj.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateDenied, Status: "True", Reason: reason, Message: "denied by the simulation"})
		a.notify(watch.Modified, o)
		return
	}
	o.obj.Status.Conditions = append(o.obj.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: "True", Reason: reason})
	o.obj.Status.Certificate = a.sign(o, now)
	a.notify(watch.Modified, o)
}

// sign issues o as the kubelet signers do: backdated 5 minutes, the shorter
// of the requested and the signer's duration, clipped to the CA's expiry.
func (a *API) sign(o *csr, now time.Time) []byte {
	block, _ := pem.Decode(o.obj.Spec.Request)
	req, _ := x509.ParseCertificateRequest(block.Bytes)
	d := a.signingDuration
	if s := o.obj.Spec.ExpirationSeconds; s != nil && time.Duration(*s)*time.Second < d {
		d = time.Duration(*s) * time.Second
	}
	caCert := a.cluster.newest()
	notAfter := now.Add(d)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	usage := x509.ExtKeyUsageClientAuth
	if o.obj.Spec.SignerName == certificatesv1.KubeletServingSignerName {
		usage = x509.ExtKeyUsageServerAuth
	}
	a.uid++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(a.uid), Subject: req.Subject, NotBefore: now.Add(-5 * time.Minute), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: req.DNSNames, IPAddresses: req.IPAddresses}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, req.PublicKey, a.cluster.key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// collect is the csrcleaner's pass over o; a.mu is held.
func (a *API) collect(o *csr) {
	if a.objects[o.obj.Name] != o {
		return
	}
	now := a.w.now()
	switch {
	case o.done.IsZero() && now.Sub(o.created) < 24*time.Hour:
		return
	case !o.done.IsZero() && now.Sub(o.done) < time.Hour:
		return
	}
	delete(a.objects, o.obj.Name)
	a.deleted[o.obj.Name] = true
	a.rv++
	o.obj.ResourceVersion = fmt.Sprint(a.rv)
	a.notify(watch.Deleted, o)
}
