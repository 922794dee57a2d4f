package attestor

import (
	"crypto/x509"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/certagent/certagent/protocol/attestation"
)

// session is one begun exchange: what finish is checked against.
type session struct {
	id      string
	ekHash  string
	node    string
	ak      *ak
	secret  []byte
	nonce   []byte
	csrDER  []byte
	csrPEM  []byte
	csr     *x509.CertificateRequest
	expSecs int32 // the lifetime asked for, 0 for the signer's default
	expires time.Time
}

// sessionStore keeps begun sessions until they expire, and for as long again
// the ids of expired and used ones, so that a late finish is told stale_nonce
// and a second finish replayed (and not merely unknown_session). Every
// session is single use: the first finish takes it, whatever its outcome, so
// a wrong secret cannot be retried against the same challenge.
//
// Sessions all live ttl, so expiry follows insertion order and a FIFO queue
// finds the expired ones in O(1) amortized time.
type sessionStore struct {
	clock         clock.PassiveClock
	ttl           time.Duration
	max, maxPerEK int
	mu            sync.Mutex
	open          map[string]*session
	perEK         map[string]int
	openQueue     []tombstone // ids in open, oldest first; taken ones skipped
	expired, used map[string]gone
	forgetQueue   []tombstone // ids in expired or used, by when to forget them
}

// owner is whose a session is, for the log line and Event of a refusal.
type owner struct{ node, ekHash string }

// gone is an expired or used session until it is forgotten at at: whose it
// was, so a late or replayed finish is logged against that node and EK.
type gone struct {
	owner
	at time.Time
}

type tombstone struct {
	id string
	at time.Time
}

func newSessionStore(c clock.PassiveClock, ttl time.Duration, max, maxPerEK int) *sessionStore {
	return &sessionStore{
		clock: c, ttl: ttl, max: max, maxPerEK: maxPerEK,
		open: map[string]*session{}, perEK: map[string]int{},
		expired: map[string]gone{}, used: map[string]gone{},
	}
}

// add opens s (its expiry set here) unless too many are open, in all or for
// its EK: an attacker who knows an enrolled EK's public key can delay that
// node's join, not fill the service's memory.
func (st *sessionStore) add(s *session) *attestation.Error {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now()
	st.sweep(now)
	if len(st.open) >= st.max {
		return attestation.Refuse(attestation.ReasonBusy, "%d attestations are in progress; try again shortly", len(st.open))
	}
	if st.perEK[s.ekHash] >= st.maxPerEK {
		return attestation.Refuse(attestation.ReasonBusy, "%d attestations for this EK are in progress; try again in %v", st.perEK[s.ekHash], st.ttl)
	}
	s.expires = now.Add(st.ttl)
	st.open[s.id] = s
	st.perEK[s.ekHash]++
	st.openQueue = append(st.openQueue, tombstone{s.id, s.expires})
	return nil
}

// take is the one way to a session: checkSessionFresh and single use. Its
// owner is known whenever the id is (open, expired or used).
func (st *sessionStore) take(id string) (*session, owner, *attestation.Error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now()
	st.sweep(now)
	if g, ok := st.used[id]; ok {
		return nil, g.owner, attestation.Refuse(attestation.ReasonReplayed, "this session was already finished; each is single use: begin again")
	}
	if g, ok := st.expired[id]; ok {
		delete(st.expired, id)
		st.markUsed(id, g.owner, now)
		return nil, g.owner, attestation.Refuse(attestation.ReasonStaleNonce, "this session expired before its finish (sessions live %v): begin again", st.ttl)
	}
	s, ok := st.open[id]
	if !ok {
		return nil, owner{}, attestation.Refuse(attestation.ReasonUnknownSession, "no such session (the service may have restarted): begin again")
	}
	who := owner{node: s.node, ekHash: s.ekHash}
	st.closeOpen(s)
	st.markUsed(id, who, now)
	return s, who, nil
}

func (st *sessionStore) closeOpen(s *session) {
	delete(st.open, s.id)
	if st.perEK[s.ekHash]--; st.perEK[s.ekHash] <= 0 {
		delete(st.perEK, s.ekHash)
	}
}

func (st *sessionStore) markUsed(id string, who owner, now time.Time) {
	at := now.Add(st.ttl)
	st.used[id] = gone{owner: who, at: at}
	st.forgetQueue = append(st.forgetQueue, tombstone{id, at})
}

// sweep moves expired sessions to the expired set and forgets tombstones a
// ttl after the session expired or was used.
func (st *sessionStore) sweep(now time.Time) {
	for len(st.openQueue) > 0 && !now.Before(st.openQueue[0].at) {
		id := st.openQueue[0].id
		st.openQueue = st.openQueue[1:]
		if s, ok := st.open[id]; ok {
			st.closeOpen(s)
			// Remembered as expired until a ttl after its expiry. (Swept
			// late, its tombstone may sit behind later ones in the queue:
			// that only delays forgetting it.)
			if at := s.expires.Add(st.ttl); now.Before(at) {
				st.expired[id] = gone{owner: owner{node: s.node, ekHash: s.ekHash}, at: at}
				st.forgetQueue = append(st.forgetQueue, tombstone{id, at})
			}
		}
	}
	for len(st.forgetQueue) > 0 && !now.Before(st.forgetQueue[0].at) {
		t := st.forgetQueue[0]
		st.forgetQueue = st.forgetQueue[1:]
		if g, ok := st.used[t.id]; ok && !g.at.After(now) {
			delete(st.used, t.id)
		}
		if g, ok := st.expired[t.id]; ok && !g.at.After(now) {
			delete(st.expired, t.id)
		}
	}
}
