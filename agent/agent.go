package agent

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/trust"
)

// Options are the agent's injected dependencies.
type Options struct {
	Logger *zap.Logger
	// Level is the level Logger logs at, which a reload's logLevel changes;
	// nil: a reload leaves it alone (tests, the simulation).
	Level *zap.AtomicLevel
	// Clock defaults to the real clock; tests pass a fake one.
	Clock clock.WithTicker
	// Jumps announces wall-clock jumps (suspend, NTP steps); default a
	// rotate.JumpDetector on Clock, run by Run.
	Jumps rotate.Jumps
	// Rand returns uniform numbers in [0, 1) for back-off jitter; default math/rand.
	Rand func() float64
	// Notifier defaults to systemd's (a no-op when not under systemd).
	Notifier Notifier
	// Watch watches directories and reports changes; default rotate.WatchDirs.
	Watch WatchFunc
	// RunHook runs one post-renew hook; default runs its command.
	RunHook func(ctx context.Context, h config.Hook, env []string) ([]byte, error)
	// NoControlSocket turns off the socket `certagent renew` talks to.
	NoControlSocket bool
	// Bootstrap overrides parts of the bootstrap configuration (tests inject clients).
	Bootstrap func(*bootstrap.Config)
	// NewEventClient builds the client Events are written with, from the
	// node's credential, when one is written; nil: no Events (the CLI's
	// daemon passes (*bootstrap.Bootstrapper).NodeEventClient).
	NewEventClient func(*bootstrap.Bootstrapper) (apiclient.EventClient, error)
	// CloseIdle closes the bootstrapper's idle connections to the API
	// server; Run calls it once the daemon has settled (idle.go). nil: never
	// (the CLI's daemon passes CloseIdleConnections).
	CloseIdle func(*bootstrap.Bootstrapper)
	// TrustSource, if set, is the published trust for the node's
	// credential (tests inject a fake); default the API's ClusterTrustBundles.
	TrustSource func(*bootstrap.Bootstrapper) (trust.Source, error)
}

// WatchFunc watches dirs until ctx ends, sending on the returned channel after changes.
type WatchFunc func(ctx context.Context, log *zap.Logger, dirs ...string) (<-chan struct{}, error)

// Agent keeps the kubelet's certificates in place.
type Agent struct {
	opts     Options
	log      *zap.Logger
	clock    clock.WithTicker
	rand     func() float64
	notifier Notifier

	mu     sync.Mutex
	cfg    config.Config
	b      *bootstrap.Bootstrapper
	policy rotate.Policy
	ready  bool           // READY=1 was sent
	status string         // last STATUS= sent
	certs  *observe.Certs // what is known about the certificates and kubelet.conf

	// statusMu makes publishStatus's render, compare and send one step, so a
	// line rendered before another worker's change is never sent after it.
	statusMu sync.Mutex
	loops    map[bootstrap.Kind]*worker
	events   *observe.Events // nil: no Events
	// bootstrapRemoved is the bootstrap kubeconfig the client step removed,
	// until an Event has told it (observe.Events.Outcome).
	bootstrapRemoved string
	// controlTimeout is controlReadTimeout (tests shorten it).
	controlTimeout time.Duration
	idle           *settler // nil: idle connections are left to time out (all but the daemon)
	// readyCh is closed when READY=1 is sent.
	readyCh chan struct{}
	trust   *follower // nil: not following the published trust (yet)
}

// New builds an agent from a validated configuration.
func New(cfg config.Config, opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Notifier == nil {
		opts.Notifier = NewSystemdNotifier(opts.Logger)
	}
	if opts.Watch == nil {
		opts.Watch = func(ctx context.Context, log *zap.Logger, dirs ...string) (<-chan struct{}, error) {
			return rotate.WatchDirs(ctx, log, opts.Clock, debounce, dirs...)
		}
	}
	if opts.RunHook == nil {
		opts.RunHook = execHook
	}
	a := &Agent{
		opts: opts, log: opts.Logger, clock: opts.Clock, rand: opts.Rand, notifier: opts.Notifier,
		certs:          observe.NewCerts(),
		loops:          map[bootstrap.Kind]*worker{},
		controlTimeout: controlReadTimeout,
		readyCh:        make(chan struct{}),
	}
	b, err := a.newBootstrapper(cfg)
	if err != nil {
		return nil, err
	}
	a.cfg, a.b, a.policy = cfg, b, cfg.RenewalPolicy()
	if opts.NewEventClient != nil {
		a.events = observe.NewEvents(a.log.Named("events"), a.clock, cfg.NodeName,
			func() (apiclient.EventClient, error) { return opts.NewEventClient(a.bootstrapper()) })
		a.events.Wrote = func() { a.idle.settled() } // a ServingCSRPending comes 15 s after the burst
	}
	return a, nil
}

// newBootstrapper builds the bootstrapper for cfg.
func (a *Agent) newBootstrapper(cfg config.Config) (*bootstrap.Bootstrapper, error) {
	ips, err := cfg.ServingIPs()
	if err != nil {
		return nil, err
	}
	att, err := attestation(cfg, a.log)
	if err != nil {
		return nil, err
	}
	bc := bootstrap.Config{
		Attestation:             att,
		NodeName:                cfg.NodeName,
		CertDir:                 cfg.CertDir,
		KubeconfigPath:          cfg.Kubeconfig,
		BootstrapKubeconfigPath: cfg.BootstrapKubeconfig,
		IssuerCAFile:            cfg.IssuerCAFile,
		TrustCAFile:             trustCAFile(cfg),
		AllowInsecureBootstrap:  cfg.AllowInsecureBootstrap,
		ServingDNSNames:         cfg.Serving.DNSNames,
		ServingIPs:              ips,
		ExpirationSeconds:       int32(cfg.Rotation.RequestedDuration.Seconds()),
		Clock:                   a.clock,
		Logger:                  a.log.Named("bootstrap"),
		OnWaiting:               a.onWaiting,
		OnServingNames:          a.onServingNames,
		BeforeStore: func(kind bootstrap.Kind) error {
			if len(cfg.Hooks.PostRenew) == 0 {
				return nil // nothing to run: no marker, no fsyncs
			}
			return markHooksDue(cfg.CertDir, kind)
		},
		OnIdentity: a.onIdentity,
		OnBootstrapRemoved: func(path string) {
			// Told in the client step's CertificateIssued Event when that
			// step stored one (observe.Events.Outcome), on its own otherwise.
			a.mu.Lock()
			a.bootstrapRemoved = path
			a.mu.Unlock()
		},
	}
	if a.opts.Bootstrap != nil {
		a.opts.Bootstrap(&bc)
	}
	return bootstrap.New(bc)
}

// Config is the configuration in force (a reload may change it).
func (a *Agent) Config() config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

func (a *Agent) bootstrapper() *bootstrap.Bootstrapper {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.b
}

// renewalPolicy is the policy in force (a reload may change it).
func (a *Agent) renewalPolicy() rotate.Policy {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.policy
}

// onWaiting hears that a CSR is being waited on (name) or no longer ("").
func (a *Agent) onWaiting(kind bootstrap.Kind, name string) {
	a.mu.Lock()
	w := a.loops[kind]
	a.mu.Unlock()
	if w != nil {
		phase := rotate.Waiting
		if name == "" {
			phase = rotate.Busy
		}
		w.live.Set(phase, a.clock.Now())
	}
	isNew := false
	a.certs.Update(kind, func(s *observe.Cert) {
		if name != "" && s.WaitingCSR != name {
			s.Attempts++
			isNew = true
		}
		if s.WaitingCSR != name {
			s.Unreported = nil
		}
		s.WaitingCSR = name
	})
	if isNew && kind == bootstrap.Serving {
		a.events.ServingCSRPending(name, func() bool { return a.certs.WaitingFor(kind) == name })
	}
	if name != "" {
		a.publishStatus() // "waiting for approval of …": a person may be needed
		a.idle.settled()  // and that may take days
	}
}

// onServingNames hears which names the waiting serving CSR asks for that
// the Node does not report: they go in STATUS and an Event.
func (a *Agent) onServingNames(csr string, unreported []string) {
	a.certs.Update(bootstrap.Serving, func(s *observe.Cert) { s.Unreported = unreported })
	if len(unreported) > 0 {
		a.events.ServingNamesUnreported(csr, unreported)
	}
	a.publishStatus()
}

// onIdentity hears what the API server thinks of kubelet.conf.
func (a *Agent) onIdentity(id bootstrap.Identity) {
	a.certs.SetIdentity(id)
	a.mu.Lock()
	loops := a.loops
	a.mu.Unlock()
	if id.Rejected {
		a.log.Warn("the API server rejects kubelet.conf", zap.Error(id.Err))
	}
	// The other certificate may have waited for this (or must stop relying on it).
	for _, w := range loops {
		w.loop.Kick()
	}
	a.publishStatus()
}
