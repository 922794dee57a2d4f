//go:build failpoints

package sim

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/certagent/certagent/trust"
)

// A bad bundle is what a mistaken operator or controller publishes for the
// kube-apiserver-serving signer for a while, outside the rotation: nothing,
// a block that does not parse, or a CA that did not issue the API server's
// certificate. The node must refuse it and change nothing (the refusal is
// counted from the agent's log). Judged (checkBad, endBad): no version of
// the trust files holds the bad bundle's CA (and checkTrustFiles still
// wants each to hold a CA and verify the API server); a node that could
// work through the whole window (badNotice at least) refused at least once and ends it with its
// trust files as they were when it began.
type badBundle struct {
	kind    string
	foreign []byte // the CA published, for "foreign"
	since   time.Time
	files   [2][]byte // the trust files' content when it began
	existed [2]bool
	refused int64 // refusals counted when it began
}

// badNotice is how long a working node is given to see a bad bundle: the
// watch tells it at once, but a relist after a closed watch may wait out
// the follower's retry (5 minutes, drawn up to 1.5 times).
const badNotice = 15 * time.Minute

var badKinds = []string{"empty", "malformed", "foreign"}

// badStats are the bad-bundle figures.
type badStats struct{ Published, Judged, Refused int }

func (s badStats) String() string {
	return fmt.Sprintf("%d bad bundles published (%d with the node working throughout, %d refused)", s.Published, s.Judged, s.Refused)
}

// planBadBundles schedules one to three bad bundles away from the
// rotation (a day either side of it), each published for 20 minutes to 6
// hours.
func (w *World) planBadBundles(span time.Duration) {
	rot := w.rotation
	r := w.rngFor("bad bundle", 0)
	quiet := [2]time.Time{rot.at[1].Add(-24 * time.Hour), rot.at[5].Add(w.settleFor() + 24*time.Hour)}
	for n := 1 + r.IntN(3); n > 0; n-- {
		at := w.now().Add(time.Duration(r.Float64() * float64(span)))
		d := logUniform(r, 20*time.Minute, 6*time.Hour)
		kind := badKinds[r.IntN(len(badKinds))]
		if at.Add(d).After(quiet[0]) && at.Before(quiet[1]) {
			continue
		}
		w.at(at, "bad bundle published ("+kind+")", func() { w.publishBad(kind) })
		w.at(at.Add(d), "bad bundle withdrawn", w.endBad)
	}
}

// publishBad publishes a bad bundle of kind for the API server's signer.
func (w *World) publishBad(kind string) {
	if w.bad != nil {
		return // one at a time: the other one's window is still open
	}
	b := &badBundle{kind: kind, since: w.now(), refused: w.refusals.Load()}
	for i, p := range w.trustFiles() {
		b.files[i], b.existed[i] = readIfAny(p)
	}
	var data []byte
	switch kind {
	case "malformed":
		data = []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
	case "foreign":
		b.foreign = newNamedCA("sim-foreign-ca", w.now(), 365*24*time.Hour).pem
		data = b.foreign
	}
	w.bad = b
	w.stats.Bad.Published++
	a := w.api
	a.mu.Lock()
	a.rot.good = a.servingBundle()
	a.publish(trust.SignerAPIServerServing, data)
	a.mu.Unlock()
}

// endBad puts the good bundle back and judges the window.
func (w *World) endBad() {
	b := w.bad
	if b == nil {
		return
	}
	w.checkBad()
	w.bad = nil
	a := w.api
	a.mu.Lock()
	good := a.rot.good
	a.rot.good = nil
	a.publish(trust.SignerAPIServerServing, good)
	a.mu.Unlock()
	if len(w.active) > 0 || w.healthySince.After(b.since) || w.now().Sub(b.since) < badNotice {
		// The node could not work throughout, or not for long enough: it
		// may not have seen it (a suspend over the whole window runs both
		// ends at the instant it wakes).
		return
	}
	w.stats.Bad.Judged++
	if w.refusals.Load() == b.refused {
		w.fail("seed %d: a %s bundle was published for %s from %s to %s, the node working throughout, and the agent never refused it", w.seed, b.kind, trust.SignerAPIServerServing, b.since.Format(time.RFC3339), w.now().Format(time.RFC3339))
		return
	}
	w.stats.Bad.Refused++
	for i, p := range w.trustFiles() {
		if data, ok := readIfAny(p); ok != b.existed[i] || !bytes.Equal(data, b.files[i]) {
			w.fail("seed %d: the trust file %s changed while a %s bundle was published (from %s), the node working throughout", w.seed, p, b.kind, b.since.Format(time.RFC3339))
		}
	}
}

// checkBad: while a foreign CA is published, no trust file holds it.
func (w *World) checkBad() {
	b := w.bad
	if b == nil || b.foreign == nil {
		return
	}
	for _, p := range w.trustFiles() {
		if data, ok := readIfAny(p); ok && bytes.Contains(data, bytes.TrimSpace(b.foreign)) {
			w.fail("seed %d: the trust file %s holds the foreign CA published for %s at %s: it does not verify the API server", w.seed, p, trust.SignerAPIServerServing, b.since.Format(time.RFC3339))
		}
	}
}

func (w *World) trustFiles() [2]string {
	return [2]string{w.cfg.TrustCAFile(), w.cfg.Trust.KubeletClientCAFile}
}

func readIfAny(p string) ([]byte, bool) {
	data, err := os.ReadFile(p)
	return data, err == nil
}

// refusalCounter counts the agent's refusals of published trust from its
// log: an Error entry the follower writes with each one.
type refusalCounter struct{ n *atomic.Int64 }

func (c refusalCounter) Enabled(l zapcore.Level) bool      { return l >= zapcore.ErrorLevel }
func (c refusalCounter) With([]zapcore.Field) zapcore.Core { return c }
func (c refusalCounter) Sync() error                       { return nil }
func (c refusalCounter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) && strings.HasPrefix(e.Message, "refusing the cluster's published trust") {
		return ce.AddCore(e, c)
	}
	return ce
}
func (c refusalCounter) Write(zapcore.Entry, []zapcore.Field) error { c.n.Add(1); return nil }
