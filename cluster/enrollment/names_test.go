package enrollment

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/certagent/certagent/protocol/attestation"
)

// withNames sets spec.<field> of record u (nil: leaves it out).
func withNames(t *testing.T, u *unstructured.Unstructured, field string, names []string) *unstructured.Unstructured {
	t.Helper()
	if names != nil {
		if err := unstructured.SetNestedStringSlice(u.Object, names, "spec", field); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

// TestStoreNames: the names a node's record lists, canonical, and whether
// it lists them at all; no record, or one being deleted, is none.
func TestStoreNames(t *testing.T) {
	deleting := withNames(t, record(t, "node-d", hashC), "addresses", []string{"10.0.0.4"})
	now := metav1.NewTime(time.Now())
	deleting.SetDeletionTimestamp(&now)
	s := startStore(t,
		withNames(t, withNames(t, record(t, "node-a", hashA), "addresses", []string{"10.0.0.1", "FD00:0::1"}), "dnsNames", []string{"a.example.com"}),
		withNames(t, record(t, "node-b", hashB), "addresses", []string{}),
		record(t, "node-c", attestation.EKHash([]byte("tpm c2"))),
		deleting,
	)
	for _, tc := range []struct {
		node     string
		want     Names
		recorded bool
	}{
		{"node-a", Names{Addresses: []string{"10.0.0.1", "fd00::1"}, AddressesListed: true, DNSNames: []string{"a.example.com"}, DNSNamesListed: true}, true},
		{"node-b", Names{Addresses: []string{}, AddressesListed: true}, true},
		{"node-c", Names{}, true},
		{"node-d", Names{}, false},
		{"node-x", Names{}, false},
	} {
		t.Run(tc.node, func(t *testing.T) {
			got, ok := s.Names(tc.node)
			if ok != tc.recorded || got.AddressesListed != tc.want.AddressesListed || got.DNSNamesListed != tc.want.DNSNamesListed ||
				!slices.Equal(got.Addresses, tc.want.Addresses) || !slices.Equal(got.DNSNames, tc.want.DNSNames) {
				t.Errorf("got %+v, %t; want %+v, %t", got, ok, tc.want, tc.recorded)
			}
		})
	}
}
