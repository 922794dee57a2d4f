package enrollment

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/protocol/attestation"
)

var (
	hashA = attestation.EKHash([]byte("tpm a"))
	hashB = attestation.EKHash([]byte("tpm b"))
	hashC = attestation.EKHash([]byte("tpm c"))
)

func TestCheckUniqueEnrollment(t *testing.T) {
	for _, tc := range []struct {
		name     string
		names    []string
		wantName string
		wantOK   bool
		want     attestation.Reason
	}{
		{"not enrolled", nil, "", false, ""},
		{"enrolled once", []string{"node-a"}, "node-a", true, ""},
		{"enrolled for two nodes", []string{"node-b", "node-a"}, "", false, attestation.ReasonAmbiguousEnrollment},
		{"enrolled for three nodes", []string{"node-c", "node-a", "node-b"}, "", false, attestation.ReasonAmbiguousEnrollment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, ok, rerr := checkUniqueEnrollment(hashA, tc.names)
			if name != tc.wantName || ok != tc.wantOK {
				t.Errorf("got %q, %t; want %q, %t", name, ok, tc.wantName, tc.wantOK)
			}
			if (rerr == nil) != (tc.want == "") || rerr != nil && rerr.Reason != tc.want {
				t.Fatalf("refusal %v, want %q", rerr, tc.want)
			}
			if rerr != nil {
				for _, n := range tc.names {
					if !strings.Contains(rerr.Message, n) {
						t.Errorf("the refusal %q does not name %s", rerr.Message, n)
					}
				}
				if !strings.Contains(rerr.Message, hashA) || !strings.Contains(rerr.Message, "delete") {
					t.Errorf("the refusal %q does not name the EK and what to do", rerr.Message)
				}
			}
		})
	}
}

// record is a TPMEnrollment as the API server serves it.
func record(t *testing.T, node, hash string) *unstructured.Unstructured {
	t.Helper()
	data, err := json.Marshal(attestation.NewTPMEnrollment(node, hash, "CN=vendor"))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	u.SetUID(types.UID("uid-" + node))
	return u
}

// startStore runs a Store over a fake API server holding objs.
func startStore(t *testing.T, objs ...runtime.Object) *Store {
	t.Helper()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{GVR: "TPMEnrollmentList"}, objs...)
	inf := NewInformer(client, 0)
	s, err := New(inf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go inf.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.HasSynced) {
		t.Fatal("no sync")
	}
	return s
}

func TestStore(t *testing.T) {
	deleting := record(t, "node-d", hashC)
	now := metav1.NewTime(time.Now())
	deleting.SetDeletionTimestamp(&now)
	s := startStore(t,
		record(t, "node-a", hashA),
		record(t, "node-b1", hashB), record(t, "node-b2", hashB),
		deleting,
	)
	for _, tc := range []struct {
		name, hash, wantName string
		wantOK               bool
		want                 attestation.Reason
	}{
		{"enrolled", hashA, "node-a", true, ""},
		{"not enrolled", attestation.EKHash([]byte("stranger")), "", false, ""},
		{"enrolled twice", hashB, "", false, attestation.ReasonAmbiguousEnrollment},
		{"its only record being deleted", hashC, "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, ok, err := s.NodeName(context.Background(), tc.hash)
			if name != tc.wantName || ok != tc.wantOK {
				t.Errorf("got %q, %t; want %q, %t", name, ok, tc.wantName, tc.wantOK)
			}
			var got attestation.Reason
			if r, isRefusal := err.(*attestation.Error); isRefusal {
				got = r.Reason
			} else if err != nil {
				t.Fatalf("lookup failed: %v", err)
			}
			if got != tc.want {
				t.Errorf("refusal %q, want %q", got, tc.want)
			}
		})
	}
	if refs := s.References(hashB); len(refs) != 2 || refs[0].Kind != "TPMEnrollment" || refs[0].UID == "" ||
		refs[0].APIVersion != "attestation.certagent.io/v1alpha1" {
		t.Errorf("references for an EK enrolled twice: %+v", refs)
	}
	if refs := s.References(attestation.EKHash([]byte("stranger"))); len(refs) != 0 {
		t.Errorf("references for an unenrolled EK: %+v", refs)
	}
	if records, ambiguous := s.Counts(); records != 4 || ambiguous != 1 {
		t.Errorf("Counts = %d, %d; want 4 records, 1 ambiguous EK", records, ambiguous)
	}
}

func TestStoreRefusesBeforeSync(t *testing.T) {
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{GVR: "TPMEnrollmentList"})
	s, err := New(NewInformer(client, 0)) // never run
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.NodeName(context.Background(), hashA); err == nil {
		t.Error("an unsynced cache answered; a missing record there proves nothing")
	}
}

func TestNewNeedsTheIndex(t *testing.T) {
	inf := cache.NewSharedIndexInformer(&cache.ListWatch{}, &unstructured.Unstructured{}, 0, cache.Indexers{})
	if _, err := New(inf); err == nil {
		t.Error("New accepted an informer without the EK hash index")
	}
}

// TestCRDMatchesTheRecord: the CRD shipped validates the EK hash with the
// pattern the shared record's validation uses, and names the group, version
// and kind the service watches.
func TestCRDMatchesTheRecord(t *testing.T) {
	data, err := os.ReadFile("../../packaging/cluster/10-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Group string `json:"group"`
			Scope string `json:"scope"`
			Names struct {
				Plural string `json:"plural"`
				Kind   string `json:"kind"`
			} `json:"names"`
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema struct {
						Properties struct {
							Spec struct {
								Properties map[string]struct {
									Pattern string `json:"pattern"`
								} `json:"properties"`
							} `json:"spec"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	s := crd.Spec
	if s.Group != GVR.Group || s.Names.Plural != GVR.Resource || s.Names.Kind != attestation.EnrollmentKind || s.Scope != "Cluster" ||
		len(s.Versions) != 1 || s.Versions[0].Name != GVR.Version {
		t.Fatalf("the CRD is %+v, the service watches %v", s, GVR)
	}
	if got := s.Versions[0].Schema.OpenAPIV3Schema.Properties.Spec.Properties["ekPublicKeyHash"].Pattern; got != attestation.EKHashPattern {
		t.Errorf("the CRD's ekPublicKeyHash pattern %q, want %q", got, attestation.EKHashPattern)
	}
}
