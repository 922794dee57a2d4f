package packaging

import (
	"slices"
	"testing"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
)

// TestFlowControlManifest checks what makes the shipped API Priority and
// Fairness configuration safe to apply (docs/flowcontrol.md): one Limited,
// queuing priority level that never borrows; FlowSchemas that point at it,
// match only certificate requests (CSRs, SelfSubjectReviews) of bootstrap
// tokens and nodes with named verbs, come after the heartbeats'
// system-node-high (400) and before the schemas they take traffic from
// (system-nodes at 500, global-default at 9900). TestOverload applies it to a
// real API server, which validates it.
func TestFlowControlManifest(t *testing.T) {
	objs, err := ReadManifest(repo(FlowControlManifest))
	if err != nil {
		t.Fatal(err)
	}
	var levels []string
	schemas := map[string]*flowcontrolv1.FlowSchema{}
	for _, obj := range objs {
		switch o := obj.(type) {
		case *flowcontrolv1.PriorityLevelConfiguration:
			levels = append(levels, o.Name)
			l := o.Spec.Limited
			if o.Spec.Type != flowcontrolv1.PriorityLevelEnablementLimited || l == nil {
				t.Fatalf("%s: type %s, want Limited", o.Name, o.Spec.Type)
			}
			if l.LimitResponse.Type != flowcontrolv1.LimitResponseTypeQueue || l.LimitResponse.Queuing == nil {
				t.Errorf("%s: limit response %s, want Queue (a burst waits instead of being rejected at once)", o.Name, l.LimitResponse.Type)
			}
			if l.NominalConcurrencyShares == nil || *l.NominalConcurrencyShares < 1 || *l.NominalConcurrencyShares > 20 {
				t.Errorf("%s: nominalConcurrencyShares %v, want 1 … 20 (global-default has 20)", o.Name, l.NominalConcurrencyShares)
			}
			if l.BorrowingLimitPercent == nil || *l.BorrowingLimitPercent != 0 {
				t.Errorf("%s: borrowingLimitPercent %v, want 0: a scale-up must not take other levels' seats", o.Name, l.BorrowingLimitPercent)
			}
		case *flowcontrolv1.FlowSchema:
			schemas[o.Name] = o
		default:
			t.Fatalf("%s holds a %T", FlowControlManifest, obj)
		}
	}
	if len(levels) != 1 {
		t.Fatalf("priority levels %v, want one", levels)
	}
	for _, tc := range []struct {
		schema, group string
		below         int32 // the precedence of the schema it takes over from
	}{
		{"certagent-bootstrap", "system:bootstrappers", 9900},
		{"certagent-node-certificates", "system:nodes", 500},
	} {
		t.Run(tc.schema, func(t *testing.T) {
			fs := schemas[tc.schema]
			if fs == nil {
				t.Fatalf("no FlowSchema %s", tc.schema)
			}
			if fs.Spec.PriorityLevelConfiguration.Name != levels[0] {
				t.Errorf("priority level %s, want %s", fs.Spec.PriorityLevelConfiguration.Name, levels[0])
			}
			if p := fs.Spec.MatchingPrecedence; p <= 400 || p >= tc.below {
				t.Errorf("matchingPrecedence %d, want above system-node-high's 400 and below %d", p, tc.below)
			}
			if d := fs.Spec.DistinguisherMethod; d == nil || d.Type != flowcontrolv1.FlowDistinguisherMethodByUserType {
				t.Errorf("distinguisher %v, want ByUser: every node a flow of its own", d)
			}
			for _, r := range fs.Spec.Rules {
				if len(r.Subjects) != 1 || r.Subjects[0].Group == nil || r.Subjects[0].Group.Name != tc.group {
					t.Errorf("subjects %+v, want the group %s alone", r.Subjects, tc.group)
				}
				if len(r.NonResourceRules) > 0 {
					t.Errorf("non-resource rules %+v: none wanted", r.NonResourceRules)
				}
				for _, rr := range r.ResourceRules {
					for _, res := range rr.Resources {
						if !slices.Contains([]string{"certificatesigningrequests", "selfsubjectreviews"}, res) {
							t.Errorf("resource %q: only certificatesigningrequests and selfsubjectreviews belong here (heartbeats, leases and nodes/status, must stay at node-high)", res)
						}
					}
					if slices.Contains(rr.Verbs, "*") || slices.Contains(rr.APIGroups, "*") {
						t.Errorf("rule %+v: name the verbs and API groups", rr)
					}
				}
			}
		})
	}
}
