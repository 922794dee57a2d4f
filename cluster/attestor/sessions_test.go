package attestor

import (
	"fmt"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/protocol/attestation"
)

func TestSessionStore(t *testing.T) {
	const ttl = time.Minute
	type step struct {
		do     string // "add <id> <ek>", "take <id>", "wait <duration>"
		reason attestation.Reason
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"finished once", []step{{"add s1 ek1", ""}, {"take s1", ""}}},
		{"never begun", []step{{"take s1", attestation.ReasonUnknownSession}}},
		{"finished twice", []step{{"add s1 ek1", ""}, {"take s1", ""}, {"take s1", attestation.ReasonReplayed}}},
		{"finished late", []step{{"add s1 ek1", ""}, {"wait 61s", ""}, {"take s1", attestation.ReasonStaleNonce}}},
		{"finished just in time", []step{{"add s1 ek1", ""}, {"wait 59s", ""}, {"take s1", ""}}},
		{"late, then again", []step{{"add s1 ek1", ""}, {"wait 61s", ""}, {"take s1", attestation.ReasonStaleNonce}, {"take s1", attestation.ReasonReplayed}}},
		{"replay remembered for a ttl", []step{{"add s1 ek1", ""}, {"take s1", ""}, {"wait 59s", ""}, {"take s1", attestation.ReasonReplayed}}},
		{"forgotten after", []step{{"add s1 ek1", ""}, {"take s1", ""}, {"wait 61s", ""}, {"take s1", attestation.ReasonUnknownSession}}},
		{"expired forgotten after two ttls", []step{{"add s1 ek1", ""}, {"wait 121s", ""}, {"take s1", attestation.ReasonUnknownSession}}},
		{"too many for one EK", []step{{"add s1 ek1", ""}, {"add s2 ek1", ""}, {"add s3 ek1", attestation.ReasonBusy}, {"add s4 ek2", ""}}},
		{"a finished one frees its EK's slot", []step{{"add s1 ek1", ""}, {"add s2 ek1", ""}, {"take s1", ""}, {"add s3 ek1", ""}}},
		{"an expired one frees its EK's slot", []step{{"add s1 ek1", ""}, {"add s2 ek1", ""}, {"wait 61s", ""}, {"add s3 ek1", ""}}},
		{"too many in all", []step{{"add s1 ek1", ""}, {"add s2 ek2", ""}, {"add s3 ek3", ""}, {"add s4 ek4", attestation.ReasonBusy}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := clocktesting.NewFakeClock(time.Now())
			st := newSessionStore(clock, ttl, 3, 2)
			owners := map[string]string{} // id -> EK of its add
			for i, s := range tc.steps {
				var verb, id, ek string
				fmt.Sscan(s.do, &verb, &id, &ek)
				var got *attestation.Error
				switch verb {
				case "add":
					got = st.add(&session{id: id, ekHash: ek, node: "node-" + ek})
					owners[id] = ek
				case "take":
					var sess *session
					var who owner
					sess, who, got = st.take(id)
					if got == nil && sess.id != id {
						t.Fatalf("step %d: took %q", i, sess.id)
					}
					// Known sessions, even replayed or stale, name their
					// owner (for the refusal's log line and Event).
					want := owner{}
					if got == nil || got.Reason != attestation.ReasonUnknownSession {
						want = owner{node: "node-" + owners[id], ekHash: owners[id]}
					}
					if who != want {
						t.Fatalf("step %d %q: owner %+v, want %+v", i, s.do, who, want)
					}
				case "wait":
					d, _ := time.ParseDuration(id)
					clock.Step(d)
				}
				if (got == nil) != (s.reason == "") || got != nil && got.Reason != s.reason {
					t.Fatalf("step %d %q: got %v, want %q", i, s.do, got, s.reason)
				}
			}
		})
	}
}
