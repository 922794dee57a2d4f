//go:build failpoints

package sim

import (
	"container/heap"
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/kubeconfig"
)

// event is something that happens at a true time.
type event struct {
	at        time.Time
	seq       int
	what      string
	fn        func()
	cancelled atomic.Bool // dropped without running (a watch that already ended)
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// Stats are one seed's figures.
type Stats struct {
	ClientCSRs, ServingCSRs int
	MaxPerDay               int // most CSR creations of one kind in one day
	Restarts, Kills         int // all restarts; those at a failpoint
	Suspends, Outages       int
	Events                  int

	// Strandings (strand.go), by cause; StrandedAtEnd: still stranded when
	// the span ended; LongestStranded: from a stranding's start to its end
	// (a rescue's drop, mostly).
	Strandings      int
	StrandCauses    map[string]int
	StrandedAtEnd   int
	LongestStranded time.Duration
	// Rescues: bootstrap kubeconfigs dropped onto a stranded node; Recovered:
	// those that ended with kubelet.conf accepted and the bootstrap
	// kubeconfig deleted, each after Recoveries[i] (from the drop);
	// Restranded: those stranded again first (the token lapsed, the cluster
	// was rebuilt). LongestWait: the most a recovery took once the node could
	// work (the time judged against rescueBound).
	Rescues, Recovered, Restranded int
	Recoveries                     []time.Duration
	LongestWait                    time.Duration
	// BootProofsFailed: client certificates whose proof (a SelfSubjectReview)
	// failed because of the scenario while a bootstrap kubeconfig was on
	// disk, waiting on it.
	BootProofsFailed int
	// Attest: the attestation figures (attest.go, attestcheck.go).
	Attest attestStats
	// Rotation: the CA rotation figures (rotationcheck.go).
	Rotation rotationStats
	// Bad: the bad bundles published (badbundle.go).
	Bad badStats
}

// instance is one run of the agent (a process, between a start and a kill).
type instance struct {
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan error
	ctx    context.Context
}

// World is one simulated node and its control plane.
type World struct {
	seed  uint64
	clk   *simClock
	api   *API
	jumps *simJumps
	dir   string
	cfg   config.Config
	ip    atomic.Pointer[net.IP]
	// the files the agent watches change: what inotify would tell it
	events chan struct{}
	reload chan struct{}

	qmu  sync.Mutex
	q    eventQueue
	seq  int
	wake chan struct{} // an event was queued while the driver slept

	inst     *instance
	down     bool // the agent is not running (killed, not yet restarted)
	fpMu     sync.Mutex
	countdwn int  // kill at this many more failpoints (0: not armed)
	dying    bool // the armed failpoint was reached: freeze every goroutine that reaches one
	release  chan struct{}
	frozen   atomic.Int32
	baseline int // goroutines with no agent running

	active       map[string]bool // conditions under which the node cannot renew
	healthySince time.Time       // true time the last of them ended
	clientExpiry time.Time       // NotAfter of the client certificate on disk, as last checked
	fp           string          // fingerprint of the watched directories
	fileEventDue bool
	strand       strandState // strand.go
	rescue       *rescue     // the rescue in progress; nil if none
	dropsDue     int         // bootstrap kubeconfigs a person will drop
	bootToken    string      // the token of the last one dropped
	checked      string      // statKey of the files at the last check
	pairChecked  map[bootstrap.Kind]string
	kcMu         sync.Mutex
	kc           *rest.Config // kubelet.conf parsed, for statKey kcKey
	kcKey        string
	minLifetime  time.Duration

	caRenewAt time.Duration // after the start

	rotation     *rotation    // the seed's CA rotation; nil if none (rotationplan.go)
	bad          *badBundle   // a bad bundle published now; nil if none (badbundle.go)
	refusals     atomic.Int64 // the agent's refusals of published trust, from its log
	trustChecked [2]string    // statKey of the trust files at the last check

	// attest is the attestation service of a node configured with
	// attestation; nil for a token-only node (attest.go).
	attest     *attestService
	await      awaitState      // attestcheck.go
	svcActive  map[string]bool // conditions under which the service cannot issue
	svcSince   time.Time       // true time the last of them ended
	lastResume time.Time       // true time the node last woke from a suspend
	logger     *zap.Logger     // the agent's; a no-op unless debugging

	fileMu  sync.Mutex
	fileCfg config.Config // the configuration file as it is now

	failMu     sync.Mutex
	failure    string
	lastStatus string
	// removedAt: when the agent last deleted the bootstrap kubeconfig;
	// removedAccepted: the API server accepted kubelet.conf then.
	removedAt       time.Time
	removedAccepted bool
	stats           Stats
	trace           []*event // the last events, for a failure report
	kinds           map[string]int
}

// rngFor is a random stream for one purpose, so that goroutine interleaving
// elsewhere does not change what a given decision draws.
func (w *World) rngFor(purpose string, n int) *rand.Rand {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", purpose, n)
	return rand.New(rand.NewPCG(w.seed, h.Sum64()))
}

func (w *World) now() time.Time { return w.clk.trueNow() }

func (w *World) fail(format string, args ...any) {
	w.failMu.Lock()
	defer w.failMu.Unlock()
	if w.failure == "" {
		w.failure = fmt.Sprintf("at %s: ", w.now().Format(time.RFC3339)) + fmt.Sprintf(format, args...)
	}
}

func (w *World) failed() string {
	w.failMu.Lock()
	defer w.failMu.Unlock()
	return w.failure
}

func (w *World) setFile(c config.Config) {
	w.fileMu.Lock()
	w.fileCfg = c
	w.fileMu.Unlock()
}

func (w *World) file() config.Config {
	w.fileMu.Lock()
	defer w.fileMu.Unlock()
	return w.fileCfg
}

// at schedules fn at true time t.
func (w *World) at(t time.Time, what string, fn func()) *event {
	w.qmu.Lock()
	w.seq++
	ev := &event{at: t, seq: w.seq, what: what, fn: fn}
	heap.Push(&w.q, ev)
	w.qmu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return ev
}

func (w *World) after(d time.Duration, what string, fn func()) *event {
	return w.at(w.now().Add(d), what, fn)
}

// logUniform draws from [lo, hi) evenly on a log scale.
func logUniform(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return time.Duration(math.Exp(math.Log(float64(lo)) + r.Float64()*(math.Log(float64(hi))-math.Log(float64(lo)))))
}

// newWorld builds the node for seed, with its files under base.
func newWorld(seed uint64, base string) (*World, error) {
	dir, err := os.MkdirTemp(base, "certagent-sim-")
	if err != nil {
		return nil, err
	}
	w := &World{seed: seed, dir: dir, clk: &simClock{start: time.Now(), trueStart: time.Now()}, jumps: newSimJumps(),
		events: make(chan struct{}, 1), reload: make(chan struct{}, 1), release: make(chan struct{}), active: map[string]bool{}, logger: zap.NewNop(), wake: make(chan struct{}, 1)}
	w.healthySince = w.now()
	r := w.rngFor("setup", 0)
	// Lifetimes as a fleet sees them: a stress share of short ones (a day to
	// three), most of days to weeks, some of a year (kube-controller-manager's
	// default). Shorter lifetimes, down to the API's 10 minutes, are the unit
	// tests' and the end-to-end suite's.
	var signing time.Duration
	switch p := r.Float64(); {
	case p < 0.07:
		signing = logUniform(r, 24*time.Hour, 3*24*time.Hour)
	case p < 0.62:
		signing = logUniform(r, 3*24*time.Hour, 60*24*time.Hour)
	default:
		signing = logUniform(r, 60*24*time.Hour, 400*24*time.Hour)
	}
	w.api = newAPI(w, signing)
	w.api.humanApprover = r.Float64() < 0.2
	// The trust anchor in kubeconfigs lasts; the signer's certificate for the
	// same key expires within a few years and is renewed some days before.
	caLife := time.Duration((0.5 + 2.5*r.Float64()) * float64(365*24*time.Hour))
	w.api.cluster.renew(w.now(), caLife)
	w.caRenewAt = caLife - logUniform(r, 7*24*time.Hour, 60*24*time.Hour)
	w.minLifetime = signing
	ip := net.IPv4(10, 0, byte(r.IntN(256)), byte(1+r.IntN(250)))
	w.ip.Store(&ip)

	c := config.Default()
	c.NodeName = "sim-node"
	c.CertDir = filepath.Join(dir, "pki")
	c.Kubeconfig = filepath.Join(dir, "etc", "kubelet.conf")
	c.BootstrapKubeconfig = filepath.Join(dir, "etc", "bootstrap-kubelet.conf")
	c.Metrics.Address = ""
	if r.Float64() < 0.1 {
		c.Serving.Enabled = new(bool)
	}
	if r.Float64() < 0.3 {
		d := logUniform(r, 24*time.Hour, 60*24*time.Hour)
		c.Rotation.RequestedDuration = config.Duration{Duration: d.Round(time.Minute)}
		w.minLifetime = min(w.minLifetime, d)
	}
	if p := r.Float64(); p < 0.5 {
		// Mostly a modest renewBefore; one seed in ten of these longer than
		// the lifetime (a mistake, or a signer that issues shorter), which
		// must not storm.
		rb := logUniform(r, time.Hour, max(2*time.Hour, time.Duration(0.6*float64(w.minLifetime))))
		if p < 0.05 {
			rb = time.Duration((1 + 0.3*r.Float64()) * float64(w.minLifetime))
		}
		rb = rb.Round(time.Minute)
		if c.Rotation.RequestedDuration.Duration > 0 && rb >= c.Rotation.RequestedDuration.Duration {
			rb = c.Rotation.RequestedDuration.Duration / 3 // validation would refuse it
		}
		c.Rotation.RenewBefore = config.Duration{Duration: rb}
	}
	if r.Float64() < 0.5 {
		c.Hooks.PostRenew = []config.Hook{{Command: []string{"/sim/hook"}}}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("seed %d: the generated configuration is invalid: %w", seed, err)
	}
	w.cfg = c
	w.fileCfg = c
	if err := os.MkdirAll(filepath.Dir(c.Kubeconfig), 0o755); err != nil {
		return nil, err
	}
	w.setupAttestation()
	if w.attest == nil || w.attest.mode != attestOnly {
		w.dropBootstrapKubeconfig()
	}
	return w, nil
}

// dropBootstrapKubeconfig writes a bootstrap kubeconfig with a fresh token,
// valid for 24 hours (kubeadm's default), as cloud-init or a person would.
func (w *World) dropBootstrapKubeconfig() {
	w.api.mu.Lock()
	w.api.uid++
	id := fmt.Sprintf("%06x", w.api.uid%0xffffff)
	token := id + "." + fmt.Sprintf("%016x", w.seed^uint64(w.api.uid))[:16]
	exp := w.now().Add(24 * time.Hour)
	w.api.tokens[token] = exp
	ca := base64.StdEncoding.EncodeToString(w.api.servingBundle())
	w.api.mu.Unlock()
	w.bootToken = token
	w.at(exp, "bootstrap token expires", func() {}) // watchStranding sees it lapse
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://sim:6443", certificate-authority-data: %s}}]
users: [{name: u, user: {token: "%s"}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, ca, token)
	tmp := w.cfg.BootstrapKubeconfig + ".new"
	if err := os.WriteFile(tmp, []byte(kc), 0o600); err != nil {
		panic(err)
	}
	if err := os.Rename(tmp, w.cfg.BootstrapKubeconfig); err != nil {
		panic(err)
	}
}

// --- the agent's process ---------------------------------------------------

func (w *World) options() agent.Options {
	var mu sync.Mutex
	r := w.rngFor("jitter", w.stats.Restarts)
	return agent.Options{
		Logger: w.logger.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return zapcore.NewTee(c, refusalCounter{&w.refusals}) })), Clock: w.clk, Jumps: w.jumps, Notifier: w, NoControlSocket: true,
		Rand:        func() float64 { mu.Lock(); defer mu.Unlock(); return r.Float64() },
		Watch:       func(context.Context, *zap.Logger, ...string) (<-chan struct{}, error) { return w.events, nil },
		RunHook:     w.hook,
		TrustSource: w.api.trustSourceFor,
		Bootstrap: func(bc *bootstrap.Config) {
			bc.NewCSRClient = w.api.clientFor
			bc.CheckIdentity = w.api.checkIdentity
			bc.PrimaryIP = func() net.IP { return *w.ip.Load() }
			if w.attest != nil {
				bc.Attestation = w.attest.attestation()
			}
			removed, kubeconfig := bc.OnBootstrapRemoved, bc.KubeconfigPath
			bc.OnBootstrapRemoved = func(path string) {
				w.bootstrapRemoved(kubeconfig)
				if removed != nil {
					removed(path)
				}
			}
		},
	}
}

// start runs the agent, as systemd would.
func (w *World) start() {
	w.cfg = w.file() // a process reads the file when it starts
	a, err := agent.New(w.cfg, w.options())
	if err != nil {
		w.fail("agent.New: %v", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{a: a, cancel: cancel, done: make(chan error, 1), ctx: ctx}
	go func() { inst.done <- a.Run(ctx, w.reload, func() (config.Config, error) { return w.file(), nil }) }()
	w.inst, w.down = inst, false
	w.stats.Restarts++
	w.setHealthy("agent down")
}

// kill ends the running agent: at a quiet moment (all its goroutines
// blocked, as a SIGKILL finds them) or with some frozen at a failpoint.
func (w *World) kill() {
	if w.inst == nil {
		return
	}
	w.inst.cancel()
	select {
	case err := <-w.inst.done:
		if err != nil {
			w.fail("Run returned %v", err)
		}
	case <-time.After(time.Minute):
		// A goroutine frozen at a failpoint (the trust follower writing its
		// file) holds Run's return: a SIGKILL ends such a process anyway.
		if w.frozen.Load() == 0 {
			w.fail("Run did not return within a minute of its context's end")
		}
		w.unlockKilled()
	}
	w.inst, w.down = nil, true
	w.setUnhealthy("agent down")
	synctest.Wait()
	limit := w.baseline + int(w.frozen.Load())*4 + 8
	if runtime.NumGoroutine() > limit {
		// Goroutines that were unwinding may still be on their way out: let
		// the bubble settle once more before calling it a leak.
		time.Sleep(stopSettle)
		synctest.Wait()
	}
	if n := runtime.NumGoroutine(); n > limit {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		w.fail("%d goroutines after the agent stopped; %d with none running, %d frozen at failpoints:\n%s", n, w.baseline, w.frozen.Load(), buf)
	}
}

// stopSettle is how long (bubble time) a stop is given before goroutines
// still alive count as leaked.
const stopSettle = 10 * time.Second

// restart kills the agent and starts it again after delay.
func (w *World) restart(delay time.Duration) {
	w.kill()
	w.after(delay, "start", w.start)
}

// failpointHandler freezes goroutines once the armed failpoint is reached:
// what a SIGKILL there leaves on disk, without killing the test.
func (w *World) failpointHandler(name string) {
	w.fpMu.Lock()
	if !w.dying && w.countdwn > 0 {
		w.countdwn--
		w.dying = w.countdwn == 0
	}
	dying := w.dying
	w.fpMu.Unlock()
	if !dying {
		return
	}
	w.freeze()
}

// freeze stops the calling goroutine for good (until the world ends) and
// wakes the driver to notice.
func (w *World) freeze() {
	w.frozen.Add(1)
	select { // the driver must notice at once: this is the kill
	case w.wake <- struct{}{}:
	default:
	}
	<-w.release
	runtime.Goexit()
}

// --- what the agent tells systemd, and its hooks ---------------------------

func (w *World) Ready() {
	if !w.api.acceptsOrUnreachable(w.cfg.Kubeconfig) {
		w.fail("READY=1 while the API server rejects kubelet.conf")
	}
}
func (w *World) Status(line string) {
	w.failMu.Lock()
	w.lastStatus = line
	w.failMu.Unlock()
}
func (w *World) Watchdog()                       {}
func (w *World) Stopping()                       {}
func (w *World) WatchdogInterval() time.Duration { return 0 }

// hook checks that a post-renew hook runs once the step is on disk.
func (w *World) hook(_ context.Context, _ config.Hook, env []string) ([]byte, error) {
	vars := map[string]string{}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		vars[k] = v
	}
	pair, err := bootstrap.LoadPair(vars["CERTAGENT_CERT_FILE"])
	if err != nil {
		w.fail("a %s hook ran without a certificate on disk: %v", vars["CERTAGENT_CERT_KIND"], err)
		return nil, nil
	}
	if got := pair.Leaf.NotAfter.UTC().Format(time.RFC3339); got != vars["CERTAGENT_NOT_AFTER"] {
		w.fail("a %s hook was told NotAfter %s, the file says %s", vars["CERTAGENT_CERT_KIND"], vars["CERTAGENT_NOT_AFTER"], got)
	}
	if vars["CERTAGENT_CERT_KIND"] == "client" {
		rc, err := w.kubeconfig(statKey(w.cfg.Kubeconfig))
		if err != nil {
			w.fail("the client hook ran before kubelet.conf was written: %v", err)
			return nil, nil
		}
		if leaf, err := bootstrap.ClientCertificate(rc); err != nil || !leaf.Equal(pair.Leaf) {
			w.fail("the client hook ran while kubelet.conf referenced another certificate")
		}
	}
	return nil, nil
}

// acceptsOrUnreachable: the API server accepts the kubeconfig at path, or
// cannot be reached to say (READY's documented exception).
func (a *API) acceptsOrUnreachable(path string) bool {
	rc, err := kubeconfig.LoadKubelet(path)
	if err != nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gate() != nil {
		return true
	}
	return a.authenticate(rc).err == nil
}

// --- health: when could the node have renewed? -----------------------------

func (w *World) setUnhealthy(cond string) { w.active[cond] = true }

func (w *World) setHealthy(cond string) {
	if w.active[cond] {
		delete(w.active, cond)
		w.healthySince = w.now()
		w.rescueWhenHealthy()
		w.awaitWhenHealthy()
	}
}

// healthyFor is how long the node has been able to renew (0 if it cannot now).
func (w *World) healthyFor() time.Duration {
	if len(w.active) > 0 {
		return 0
	}
	return w.now().Sub(w.healthySince)
}

// --- after every event -----------------------------------------------------

// fingerprint summarises the watched directories: their modification
// times, which every write certagent makes changes (it writes by rename).
func (w *World) fingerprint() string {
	var b strings.Builder
	for _, d := range []string{w.cfg.CertDir, filepath.Dir(w.cfg.Kubeconfig)} {
		if fi, err := os.Stat(d); err == nil {
			fmt.Fprintf(&b, "%d;", fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (w *World) afterEvent() {
	w.watchStranding()
	if fp := w.fingerprint(); fp != w.fp {
		w.fp = fp
		w.checkFiles()
		if !w.fileEventDue {
			w.fileEventDue = true
			w.after(250*time.Millisecond, "file event", func() {
				w.fileEventDue = false
				select {
				case w.events <- struct{}{}:
				default:
				}
			})
		}
	}
	w.fpMu.Lock()
	dying := w.dying
	w.fpMu.Unlock()
	if dying && w.inst != nil {
		w.stats.Kills++
		w.kill()
		w.fpMu.Lock()
		w.dying = false
		w.fpMu.Unlock()
		w.after(logUniform(w.rngFor("restart delay", w.stats.Kills), time.Second, 5*time.Minute), "start", w.start)
	}
	w.api.mu.Lock()
	f := w.api.failure
	w.api.mu.Unlock()
	if f != "" {
		w.fail("%s", f)
	}
}

// checkFiles: kubelet.conf absent or loadable with a matching pair; every
// -current.pem a complete pair; the client certificate's expiry watched.
func (w *World) checkFiles() {
	kcKey := statKey(w.cfg.Kubeconfig)
	key := kcKey + statKey(bootstrap.CurrentPath(w.cfg.CertDir, bootstrap.Client), bootstrap.CurrentPath(w.cfg.CertDir, bootstrap.Serving))
	if key == w.checked {
		return // the same files as last time
	}
	w.checked = key
	w.checkRefusal()
	if _, err := os.Lstat(w.cfg.Kubeconfig); err == nil {
		rc, err := w.kubeconfig(kcKey)
		if err != nil {
			w.fail("kubelet.conf does not load: %v", err)
			return
		}
		if rc.CertFile != "" {
			if _, err := bootstrap.LoadPair(rc.CertFile); err != nil {
				w.fail("kubelet.conf's certificate and key are not a pair: %v", err)
			}
		}
	}
	for _, kind := range []bootstrap.Kind{bootstrap.Client, bootstrap.Serving} {
		p := bootstrap.CurrentPath(w.cfg.CertDir, kind)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		k := statKey(p)
		if w.pairChecked[kind] == k {
			continue // this very file was checked before
		}
		if w.pairChecked == nil {
			w.pairChecked = map[bootstrap.Kind]string{}
		}
		w.pairChecked[kind] = k
		pair, err := bootstrap.LoadPair(p)
		if err != nil {
			w.fail("%s is not a complete pair: %v", p, err)
			continue
		}
		if kind == bootstrap.Client && !pair.Leaf.NotAfter.Equal(w.clientExpiry) {
			w.newClientCertificate()
			w.clientExpiry = pair.Leaf.NotAfter
			leaf := pair.Leaf
			w.at(leaf.NotAfter.Add(time.Second), "client expiry check", func() { w.checkExpiry(leaf) })
		}
	}
}

// kubeconfig parses kubelet.conf, once per version of the file (statKey).
func (w *World) kubeconfig(key string) (*rest.Config, error) {
	w.kcMu.Lock()
	defer w.kcMu.Unlock()
	if w.kcKey == key && w.kc != nil {
		return w.kc, nil
	}
	rc, err := kubeconfig.LoadKubelet(w.cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	w.kc, w.kcKey = rc, key
	return rc, nil
}

// statKey identifies the files at paths (following links) by inode, size
// and modification time; a missing file counts too.
func statKey(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			b.WriteString("-;")
			continue
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%d:%d:%d;", st.Ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}

// checkExpiry runs when leaf expires: if it is still the node's client
// certificate, the node must have been unable to renew for a while.
func (w *World) checkExpiry(leaf *x509.Certificate) {
	pair, err := bootstrap.LoadCurrent(w.cfg.CertDir, bootstrap.Client)
	if err != nil || !pair.Leaf.Equal(leaf) {
		return // renewed or replaced
	}
	if h := w.healthyFor(); h >= expiryGrace {
		w.fail("the client certificate expired (NotAfter %s) although the node could renew for the last %s", leaf.NotAfter.Format(time.RFC3339), h.Round(time.Second))
	}
}

// checkRates: CSR creations per day stay bounded.
func (w *World) checkRates() {
	w.api.mu.Lock()
	defer w.api.mu.Unlock()
	bound := 2*int(math.Ceil(24*time.Hour.Hours()/(0.6*w.minLifetime.Hours()))) + 60
	for signer, times := range w.api.creates {
		perDay := map[int]int{}
		for _, t := range times {
			perDay[int(t.Sub(w.clk.trueStart)/(24*time.Hour))]++
		}
		for day, n := range perDay {
			w.stats.MaxPerDay = max(w.stats.MaxPerDay, n)
			if n > bound {
				w.fail("%d %s CSRs on day %d (lifetime %s; bound %d)", n, signer, day, w.minLifetime, bound)
			}
		}
	}
	w.stats.ClientCSRs = len(w.api.creates[certificatesv1.KubeAPIServerClientKubeletSignerName])
	w.stats.ServingCSRs = len(w.api.creates[certificatesv1.KubeletServingSignerName])
}

// afterCreate decides what becomes of a new CSR (a.mu is held).
func (w *World) afterCreate(o *csr) {
	n := len(w.api.creates[o.obj.Spec.SignerName])
	r := w.rngFor("decide "+o.obj.Spec.SignerName, n)
	a := w.api
	decide := func(d time.Duration, approve bool, reason string) {
		w.after(d, "decide "+o.obj.Name, func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.objects[o.obj.Name] == o {
				a.decide(o, approve, reason)
				if !approve && w.attest != nil {
					w.attest.explained = true // the node's key goes with its denied CSR
				}
				w.after(time.Hour+time.Second, "csrcleaner", func() { a.mu.Lock(); a.collect(o); a.mu.Unlock() })
			}
		})
	}
	switch {
	case o.obj.Spec.Username == serviceUser:
		// The attestation service approves its own at once; the cleaner
		// deletes it an hour later.
		w.after(time.Hour+time.Second, "csrcleaner", func() { a.mu.Lock(); a.collect(o); a.mu.Unlock() })
		return
	case o.obj.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName && a.denyClient:
		decide(time.Duration(r.Float64()*float64(5*time.Second)), false, "MisconfiguredApprover")
	case o.obj.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName:
		decide(time.Duration(r.Float64()*float64(5*time.Second)), true, "AutoApproved")
		if strings.HasPrefix(o.obj.Spec.Username, "system:bootstrap:") && r.Float64() < 1.0/3 {
			// A third of bootstraps meet a SelfSubjectReview API that fails
			// from now on, for a while: the proof of the new kubelet.conf
			// fails although the API server would accept it.
			w.proofFailsFor(logUniform(r, time.Minute, 2*time.Hour))
		}
	default:
		// A serving CSR: an approver (automatic, or a person) checks the
		// requester and the names.
		want := "system:node:" + w.cfg.NodeName
		p := r.Float64()
		delay := logUniform(r, time.Second, 30*time.Second)
		if a.humanApprover {
			delay = logUniform(r, time.Minute, 8*time.Hour)
		}
		switch {
		case o.obj.Spec.Username != want:
			decide(time.Second, false, "NotByTheNode")
		case p < 0.03:
			decide(delay, false, "ApproverDenied")
		case p < 0.04:
			// nobody looks at it: the cleaner deletes it after 24 h
		default:
			decide(delay, true, "Approved")
		}
	}
	// The cleaner's 24-hour rule for a CSR still pending then (a decision
	// cancels it: the 1-hour rule for decided CSRs takes over).
	o.pendingGC = w.after(24*time.Hour+time.Second, "csrcleaner", func() { a.mu.Lock(); a.collect(o); a.mu.Unlock() })
}

// proofFailsFor makes SelfSubjectReviews answer 503 for d, starting now
// (an event: a.mu may be held by the caller).
func (w *World) proofFailsFor(d time.Duration) {
	a := w.api
	w.after(0, "proof errors begin", func() {
		a.mu.Lock()
		a.proofErrs++
		a.mu.Unlock()
		w.setUnhealthy("proof fails")
		w.after(d, "proof errors end", func() {
			a.mu.Lock()
			a.proofErrs--
			n := a.proofErrs
			a.mu.Unlock()
			if n == 0 {
				w.setHealthy("proof fails")
			}
		})
	})
}

// afterWatch ends the watch at its timeout, or earlier as API servers
// sometimes do (a.mu is held).
func (w *World) afterWatch(sw *simWatcher, timeout time.Duration) {
	r := w.rngFor("watch", int(w.api.rv))
	d := timeout
	if r.Float64() < 0.2 {
		d = logUniform(r, time.Second, timeout)
	}
	sw.closeEv = w.after(d, "close watch", func() {
		w.api.mu.Lock()
		w.api.closeWatcher(sw)
		w.api.mu.Unlock()
	})
}

// status is the agent's last STATUS line.
func (w *World) status() string {
	w.failMu.Lock()
	defer w.failMu.Unlock()
	return w.lastStatus
}

// summary is one line about the seed.
func (w *World) summary() string {
	s := w.stats
	w.failMu.Lock()
	status := w.lastStatus
	w.failMu.Unlock()
	return fmt.Sprintf("STATUS=%q\nseed %d: %s, lifetime %s, renewBefore %s, serving %v, hooks %d: %d client and %d serving CSRs (at most %d a day), %d restarts (%d at failpoints), %d suspends, %d outages, %d events",
		status, w.seed, w.mode(), w.minLifetime.Round(time.Minute), w.cfg.Rotation.RenewBefore.Duration, w.cfg.ServingEnabled(), len(w.cfg.Hooks.PostRenew),
		s.ClientCSRs, s.ServingCSRs, s.MaxPerDay, s.Restarts, s.Kills, s.Suspends, s.Outages, s.Events)
}

// lastEvents is the tail of the trace.
func (w *World) lastEvents(n int) string {
	t := w.trace
	if len(t) > n {
		t = t[len(t)-n:]
	}
	lines := make([]string, len(t))
	for i, ev := range t {
		lines[i] = ev.at.Format(time.RFC3339) + " " + ev.what
	}
	return strings.Join(lines, "\n")
}
