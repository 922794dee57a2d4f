package approver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
)

// Config configures a Controller; New checks it.
type Config struct {
	// Client writes approvals and denials (the approval subresource). Required.
	Client kubernetes.Interface
	// CSRs is NewCSRInformer's informer, Nodes NewNodeInformer's (the
	// address index is required). Both required; Run runs them.
	CSRs, Nodes cache.SharedIndexInformer
	// Enrollments is enrollment.NewInformer's informer over the
	// TPMEnrollments, or nil where the cluster serves none (then no CSR is
	// checked against an enrolment). Run runs it.
	Enrollments cache.SharedIndexInformer
	// Metrics counts the decisions; none if nil.
	Metrics *Metrics
	// Policy decides.
	Policy Policy
	// Deny makes a refusal a Denied condition; otherwise (the default) a
	// refused CSR stays pending, decided again when a Node changes, so a
	// node whose Node object reports its new address a moment after the CSR
	// gets it approved then. A CSR waiting for its Node is never denied.
	Deny bool
	// Recorder records the Events on CSRs. Required.
	Recorder record.EventRecorder
	// Clock stamps the conditions; clock.RealClock{} if nil.
	Clock clock.PassiveClock
	// Logger is named "approver" below it; zap.NewNop() if nil.
	Logger *zap.Logger
}

// Event reasons besides the rules (refusals use the rule as their reason).
const EventApproved = "Approved"

// Controller approves kubelet serving CSRs the Policy approves.
type Controller struct {
	cfg      Config
	nodes    Nodes
	enrolled Enrollments // nil if cfg.Enrollments is
	queue    workqueue.TypedRateLimitingInterface[string]
	log      *zap.Logger

	mu       sync.Mutex
	reported map[types.UID]string // per CSR, the last refusal or wait it has an Event for
}

// New checks cfg and registers the event handlers on the informers.
func New(cfg Config) (*Controller, error) {
	if cfg.Client == nil || cfg.CSRs == nil || cfg.Nodes == nil || cfg.Recorder == nil {
		return nil, errors.New("approver: Client, CSRs, Nodes and Recorder are required")
	}
	if _, ok := cfg.Nodes.GetIndexer().GetIndexers()[addressIndex]; !ok {
		return nil, errors.New("approver: the Node informer has no address index (use NewNodeInformer)")
	}
	if err := cfg.Policy.Check(); err != nil {
		return nil, fmt.Errorf("approver: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c := &Controller{
		cfg: cfg, nodes: nodeCache{cfg.Nodes.GetIndexer()}, log: cfg.Logger.Named("approver"),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubelet-serving-csrs"}),
		reported: map[types.UID]string{},
	}
	if err := c.watchEnrollments(); err != nil {
		return nil, err
	}
	if _, err := cfg.CSRs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueCSR,
		UpdateFunc: func(_, obj any) { c.enqueueCSR(obj) },
		DeleteFunc: c.forget,
	}); err != nil {
		return nil, fmt.Errorf("approver: watching CSRs: %w", err)
	}
	if _, err := cfg.Nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.enqueuePending() },
		UpdateFunc: func(o, n any) {
			if addressesChanged(o, n) {
				c.enqueuePending()
			}
		},
		DeleteFunc: func(any) { c.enqueuePending() },
	}); err != nil {
		return nil, fmt.Errorf("approver: watching Nodes: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueueCSR(obj any) {
	if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok && pending(csr) {
		c.queue.Add(csr.Name)
	}
}

// enqueuePending: a Node came, went or changed its addresses; every pending
// CSR may be decided otherwise now.
func (c *Controller) enqueuePending() {
	for _, obj := range c.cfg.CSRs.GetStore().List() {
		c.enqueueCSR(obj)
	}
}

func (c *Controller) forget(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok {
		c.mu.Lock()
		delete(c.reported, csr.UID)
		c.mu.Unlock()
	}
}

// Run starts the informers, waits for their caches, and runs workers
// until ctx ends. It returns an error only if the caches never sync.
func (c *Controller) Run(ctx context.Context, workers int, ready func()) error {
	defer c.queue.ShutDown()
	go c.cfg.CSRs.RunWithContext(ctx)
	go c.cfg.Nodes.RunWithContext(ctx)
	synced := []cache.InformerSynced{c.cfg.CSRs.HasSynced, c.cfg.Nodes.HasSynced}
	if c.cfg.Enrollments != nil {
		go c.cfg.Enrollments.RunWithContext(ctx)
		synced = append(synced, c.cfg.Enrollments.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("approver: the CSR, Node and TPMEnrollment caches did not sync")
	}
	c.log.Info("approving kubelet serving CSRs", zap.Bool("deny", c.cfg.Deny), zap.Bool("enrollments", c.enrolled != nil),
		zap.Strings("dns_suffixes", c.cfg.Policy.DNSSuffixes), zap.Duration("max_duration", c.cfg.Policy.MaxExpiration))
	if ready != nil {
		ready()
	}
	for range workers {
		go wait.UntilWithContext(ctx, c.work, time.Second)
	}
	<-ctx.Done()
	return nil
}

func (c *Controller) work(ctx context.Context) {
	for {
		name, quit := c.queue.Get()
		if quit {
			return
		}
		if err := c.sync(ctx, name); err != nil {
			c.log.Warn("deciding a CSR failed; retrying", zap.String("csr", name), zap.Error(err))
			c.queue.AddRateLimited(name)
		} else {
			c.queue.Forget(name)
		}
		c.queue.Done(name)
	}
}

// sync decides the CSR name as the caches have it and writes the decision.
func (c *Controller) sync(ctx context.Context, name string) error {
	obj, exists, err := c.cfg.CSRs.GetStore().GetByKey(name)
	if err != nil || !exists {
		return err
	}
	csr, ok := obj.(*certificatesv1.CertificateSigningRequest)
	if !ok || !pending(csr) {
		return nil
	}
	start := c.cfg.Clock.Now()
	d := c.cfg.Policy.Decide(csr, c.nodes, c.enrolled)
	log := c.log.With(zap.String("csr", csr.Name), zap.String("requester", csr.Spec.Username),
		zap.String("verdict", d.Verdict.String()), zap.String("rule", d.Rule))
	switch {
	case d.Verdict == Ignore:
		return nil
	case d.Verdict == Approve:
		err = c.approve(ctx, csr, d, log)
	case d.Verdict == Refuse && c.cfg.Deny:
		err = c.deny(ctx, csr, d, log)
	default:
		c.leavePending(csr, d, log)
	}
	if err == nil {
		c.cfg.Metrics.observe(d, c.cfg.Clock.Since(start))
	}
	return err
}

func (c *Controller) approve(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, d Decision, log *zap.Logger) error {
	if err := c.addCondition(ctx, csr, certificatesv1.CertificateApproved, d); err != nil {
		return err
	}
	log.Info("approved", zap.String("message", d.Message))
	c.cfg.Recorder.Event(csr, corev1.EventTypeNormal, EventApproved, "approved by certagent-cluster approve: "+d.Message)
	return nil
}

func (c *Controller) deny(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, d Decision, log *zap.Logger) error {
	if err := c.addCondition(ctx, csr, certificatesv1.CertificateDenied, d); err != nil {
		return err
	}
	log.Info("denied", zap.String("message", d.Message))
	c.cfg.Recorder.Event(csr, corev1.EventTypeWarning, d.Rule, "denied by certagent-cluster approve: "+d.Message)
	return nil
}

// leavePending records an Event the first time the CSR is left pending for
// this reason (and again if the reason changes), never twice for the same.
func (c *Controller) leavePending(csr *certificatesv1.CertificateSigningRequest, d Decision, log *zap.Logger) {
	c.mu.Lock()
	seen := c.reported[csr.UID] == d.Message
	c.reported[csr.UID] = d.Message
	c.mu.Unlock()
	if seen {
		return
	}
	log.Info("left pending", zap.String("message", d.Message))
	what := "not approved, left pending: "
	if d.Verdict == Wait {
		what = "waiting: "
	}
	c.cfg.Recorder.Event(csr, corev1.EventTypeWarning, d.Rule, what+d.Message)
}

// addCondition writes the Approved or Denied condition through the approval
// subresource, on the cached object: a conflict (the CSR changed) is
// retried from the cache by the queue.
func (c *Controller) addCondition(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType, d Decision) error {
	verb := map[certificatesv1.RequestConditionType]string{certificatesv1.CertificateApproved: "approved", certificatesv1.CertificateDenied: "denied"}[typ]
	csr = csr.DeepCopy()
	now := c.cfg.Clock.Now()
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: typ, Status: corev1.ConditionTrue, Reason: d.Rule,
		Message:        verb + " by certagent-cluster approve: " + d.Message,
		LastUpdateTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now),
	})
	if _, err := c.cfg.Client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("writing the %s condition of CSR %s: %w", typ, csr.Name, err)
	}
	c.mu.Lock()
	delete(c.reported, csr.UID)
	c.mu.Unlock()
	return nil
}
