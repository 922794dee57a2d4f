//go:build failpoints

package sim

import (
	"container/heap"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"testing/synctest"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/internal/failpoint"
)

// poisson schedules fn at random times with rate perYear over the span.
func (w *World) poisson(name string, perYear float64, span time.Duration, fn func(r *rand.Rand)) {
	r := w.rngFor("plan "+name, 0)
	year := 365 * 24 * time.Hour
	t := w.now()
	end := t.Add(span)
	for i := 0; ; i++ {
		gap := time.Duration(r.ExpFloat64() / perYear * float64(year))
		t = t.Add(gap)
		if !t.Before(end) {
			return
		}
		er := w.rngFor(name, i)
		w.at(t, name, func() { fn(er) })
	}
}

// condition runs an episode: cond holds for a random duration.
func (w *World) episode(name string, r *rand.Rand, lo, hi time.Duration, begin, end func()) {
	d := logUniform(r, lo, hi)
	begin()
	w.after(d, name+" ends", end)
}

// plan schedules a year (span) of faults, reloads, restarts and clock jumps.
func (w *World) plan(span time.Duration) {
	a := w.api
	lock := func(f func()) func() { return func() { a.mu.Lock(); f(); a.mu.Unlock() } }

	w.poisson("outage", 30, span, func(r *rand.Rand) {
		w.stats.Outages++
		w.episode("outage", r, 10*time.Second, 6*time.Hour,
			lock(func() { a.down = true; a.closeAllWatches(); w.setUnhealthy("outage") }),
			lock(func() { a.down = false; w.setHealthy("outage") }))
	})
	w.poisson("throttle", 18, span, func(r *rand.Rand) {
		ra := time.Duration(1+r.IntN(120)) * time.Second
		w.episode("throttle", r, time.Minute, time.Hour,
			lock(func() { a.throttle = ra; w.setUnhealthy("throttle") }),
			lock(func() { a.throttle = 0; w.setHealthy("throttle") }))
	})
	w.poisson("server errors", 18, span, func(r *rand.Rand) {
		w.episode("server errors", r, 10*time.Second, 30*time.Minute,
			lock(func() { a.serverErrs = true; w.setUnhealthy("5xx") }),
			lock(func() { a.serverErrs = false; w.setHealthy("5xx") }))
	})
	w.poisson("client approver denies", 4, span, func(r *rand.Rand) {
		w.episode("client approver denies", r, 10*time.Minute, 6*time.Hour,
			lock(func() { a.denyClient = true; w.setUnhealthy("client denials") }),
			lock(func() { a.denyClient = false; w.setHealthy("client denials") }))
	})
	w.poisson("suspend", 24, span, func(r *rand.Rand) {
		d := logUniform(r, time.Minute, 3*24*time.Hour)
		w.stats.Suspends++
		// The node sleeps d: its monotonic clock (the bubble's) stands still,
		// true time and its wall clock move on. The jump detector notices
		// within a minute of waking.
		w.clk.suspended.Add(int64(d))
		w.healthySince, w.lastResume = w.now(), w.now()
		w.after(time.Duration(r.Float64()*float64(time.Minute)), "jump noticed", w.jumps.broadcast)
	})
	w.poisson("clock error", 12, span, func(r *rand.Rand) {
		e := logUniform(r, 2*time.Second, 30*time.Minute)
		if r.IntN(2) == 0 {
			e = -e
		}
		step := func(to time.Duration) {
			w.clk.skew.Store(int64(to))
			if to > 2*time.Minute || to < -2*time.Minute {
				w.setUnhealthy("clock error") // issued certificates look not yet valid, or the deadlines are off
			} else {
				w.setHealthy("clock error")
			}
			w.after(time.Duration(r.Float64()*float64(time.Minute)), "jump noticed", w.jumps.broadcast)
		}
		w.episode("clock error", r, time.Minute, 24*time.Hour, func() { step(e) }, func() { step(0) })
	})
	w.poisson("reload", 18, span, func(r *rand.Rand) { w.reconfigure(r) })
	w.poisson("renew --force", 8, span, func(r *rand.Rand) {
		if w.inst != nil {
			inst := w.inst
			go func() { inst.a.RequestSteps(inst.ctx, true) }() // certagent renew --force
		}
	})
	w.poisson("restart", 30, span, func(r *rand.Rand) {
		if w.inst == nil {
			return
		}
		if r.IntN(2) == 0 {
			w.restart(logUniform(r, time.Second, 5*time.Minute)) // a quiet moment
			return
		}
		// Arm a kill at a failpoint a little way into the agent's next work.
		w.fpMu.Lock()
		w.countdwn = 1 + r.IntN(60)
		w.fpMu.Unlock()
		if inst := w.inst; inst != nil {
			go func() { inst.a.RequestSteps(inst.ctx, r.IntN(3) == 0) }()
		}
	})
	w.poisson("kubelet.conf deleted", 1, span, func(r *rand.Rand) {
		_ = os.Remove(w.cfg.Kubeconfig)
		w.forgetRefusal() // the world's doing, not the agent's
		w.setUnhealthy("no credentials")
		w.dropLater(logUniform(r, time.Minute, 24*time.Hour), "kubelet.conf deleted", false, func() { w.setHealthy("no credentials") })
	})
	// The API server refuses every client certificate for a spell (it was
	// restarted with a --client-ca-file that lacks the signer's CA) while
	// bootstrap tokens still work: kubelet.conf is refused, and a person
	// who follows the advice drops a bootstrap kubeconfig during the spell.
	// The agent bootstraps with it and the proof of the new kubelet.conf
	// fails: it must keep the bootstrap kubeconfig (strand.go).
	w.poisson("client certificates refused", 2, span, func(r *rand.Rand) {
		d := logUniform(r, 10*time.Minute, 6*time.Hour)
		lock(func() { a.refuseCerts++; w.setUnhealthy("client certificates refused") })()
		w.dropLater(time.Duration(r.Float64()*0.8*float64(d)), "client certificates refused", false, nil)
		w.after(d, "client certificates accepted again", lock(func() {
			if a.refuseCerts--; a.refuseCerts == 0 {
				w.setHealthy("client certificates refused")
			}
		}))
	})
	w.poisson("address change", 2, span, func(r *rand.Rand) {
		ip := net.IPv4(10, 1, byte(r.IntN(256)), byte(1+r.IntN(250)))
		w.ip.Store(&ip)
	})

	// The signer's CA certificate expires within a few years (newWorld); the
	// certificates it issues are clipped to it until it is renewed with the
	// same key, some days before.
	w.after(w.caRenewAt, "CA renewed", lock(func() { a.cluster.renew(w.now(), 10*365*24*time.Hour) }))
	r := w.rngFor("ca", 1)

	// One node in ten sees its cluster rebuilt (a new CA, an empty etcd);
	// someone drops a new bootstrap kubeconfig later.
	if r.Float64() < 0.1 && w.rotation == nil {
		at := time.Duration((0.2 + 0.7*r.Float64()) * float64(span))
		w.after(at, "cluster rebuilt", func() {
			a.mu.Lock()
			a.cluster = newCA(w.now(), 10*365*24*time.Hour)
			a.cluster.renew(w.now(), 10*365*24*time.Hour)
			a.rot = rotationState{gen: a.rot.gen + 1}
			a.objects, a.tokens = map[string]*csr{}, map[string]time.Time{}
			a.closeAllWatches()
			a.mu.Unlock()
			w.enrolmentsLost(r)
			w.setUnhealthy("cluster rebuilt")
			w.dropLater(logUniform(r, time.Minute, 2*24*time.Hour), "cluster rebuilt", false, func() { w.setHealthy("cluster rebuilt") })
		})
	}
}

// reconfigure changes the configuration and reloads (SIGHUP).
func (w *World) reconfigure(r *rand.Rand) {
	c := w.cfg
	switch r.IntN(5) {
	case 0:
		c.Serving.DNSNames = append([]string(nil), c.Serving.DNSNames...)
		if len(c.Serving.DNSNames) < 2 {
			c.Serving.DNSNames = append(c.Serving.DNSNames, "alias.example")
		} else {
			c.Serving.DNSNames = nil
		}
	case 1:
		c.Rotation.RenewBefore = config.Duration{Duration: time.Duration(r.Float64() * float64(w.minLifetime) / 2).Round(time.Minute)}
	case 2:
		if len(c.Hooks.PostRenew) == 0 {
			c.Hooks.PostRenew = []config.Hook{{Command: []string{"/sim/hook"}}}
		} else {
			c.Hooks.PostRenew = nil
		}
	case 3:
		if w.inst == nil {
			return // the revert below must come before any start: with no agent running, a burst of events (a long suspend) could start one first
		}
		c.Metrics.Address = "127.0.0.1:1" // needs a restart: refused whole
	default: // unchanged
	}
	if c.Validate() != nil {
		return
	}
	w.setFile(c)
	if c.Metrics.Address != "" {
		// Refused on reload (it needs a restart); the operator puts the
		// file back before any restart could start a real listener.
		w.after(time.Second, "config reverted", func() { c.Metrics.Address = ""; w.setFile(c) })
	}
	if inst := w.inst; inst != nil {
		go func() { // the agent reads the file when it handles the signal
			select {
			case w.reload <- struct{}{}:
			case <-inst.ctx.Done():
			}
		}()
	}
}

// Run simulates span for seed in the caller's synctest bubble and returns
// the failure (empty if none).
func Run(seed uint64, span time.Duration, base string, log *zap.Logger) (string, *World) {
	w, err := newWorld(seed, base)
	if err != nil {
		return err.Error(), nil
	}
	if log != nil {
		w.logger = log
	}
	defer os.RemoveAll(w.dir)
	failpoint.SetHandler(w.failpointHandler)
	defer failpoint.SetHandler(nil)
	synctest.Wait()
	w.baseline = runtime.NumGoroutine()
	end := w.now().Add(span)
	w.planRotation(span)
	w.plan(span)
	w.planAttestation(span)
	w.start()
	synctest.Wait()
	w.afterEvent()
	for w.failure == "" {
		w.qmu.Lock()
		if w.q.Len() == 0 || !w.q[0].at.Before(end) {
			w.qmu.Unlock()
			break
		}
		if w.q[0].cancelled.Load() {
			heap.Pop(&w.q)
			w.qmu.Unlock()
			continue
		}
		next := w.q[0].at
		w.qmu.Unlock()
		if d := next.Sub(w.now()); d > 0 {
			t := time.NewTimer(d) // the agent's timers fire meanwhile
			select {
			case <-t.C:
			case <-w.wake: // the agent made something happen sooner (a CSR to decide), or froze
				t.Stop()
				synctest.Wait()
				w.afterEvent()
				continue
			}
		}
		w.qmu.Lock()
		ev := heap.Pop(&w.q).(*event)
		w.qmu.Unlock()
		synctest.Wait()
		w.checkTrustFiles() // written before this event: judged by the world before it
		w.stats.Events++
		if w.kinds == nil {
			w.kinds = map[string]int{}
		}
		w.kinds[strings.Fields(ev.what)[0]]++
		if len(w.trace) >= 80 {
			w.trace = append(w.trace[:0], w.trace[40:]...)
		}
		w.trace = append(w.trace, ev)
		if ev.what != "close watch" && ev.what != "csrcleaner" {
			w.logger.Debug("sim event", zap.String("event", ev.what), zap.Time("true_time", ev.at), zap.Duration("node_clock_error", time.Duration(w.clk.skew.Load())), zap.Duration("suspended", time.Duration(w.clk.suspended.Load())))
		}
		ev.fn()
		synctest.Wait()
		w.afterEvent()
	}
	if d := end.Sub(w.now()); d > 0 && w.failure == "" {
		time.Sleep(d)
		synctest.Wait()
		w.afterEvent()
	}
	if w.failure == "" {
		w.finishStranding()
	}
	w.finishRotation()
	w.kill()
	close(w.release) // frozen goroutines end
	synctest.Wait()
	w.checkRates()
	return w.failure, w
}
