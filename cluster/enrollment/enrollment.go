// Package enrollment is where the attestation service learns which TPM is
// which node: it watches the TPMEnrollment custom resources (packaging/
// cluster/10-crd.yaml; one per node, named after it) through a shared informer
// and answers attestor.Enrollments from the informer's cache, indexed by the
// EK hash, so a lookup costs the API server nothing.
//
// It owns the rule that one EK names one node (checkUniqueEnrollment). It
// must not write records: enrolling is the operator's act, and the service's
// RBAC grants it get, list and watch only.
package enrollment

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/certagent/certagent/protocol/attestation"
)

// GVR is the TPMEnrollment resource.
var GVR = schema.GroupVersionResource{
	Group:    attestation.EnrollmentGroup,
	Version:  attestation.EnrollmentVersion,
	Resource: attestation.EnrollmentResource,
}

// ekHashIndex indexes records by spec.ekPublicKeyHash.
const ekHashIndex = "ekPublicKeyHash"

// NewInformer returns a shared informer over every TPMEnrollment, indexed
// by EK hash. Run it (or the factory's Start) before using a Store on it.
func NewInformer(client dynamic.Interface, resync time.Duration) cache.SharedIndexInformer {
	return dynamicinformer.NewFilteredDynamicInformer(client, GVR, "", resync,
		cache.Indexers{ekHashIndex: indexByEKHash}, nil).Informer()
}

// indexByEKHash is the index function: a record's EK hash, none if it has
// no string there (the CRD's schema makes every stored record have one).
func indexByEKHash(obj any) ([]string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("indexing TPMEnrollments: got a %T", obj)
	}
	hash, found, err := unstructured.NestedString(u.Object, "spec", "ekPublicKeyHash")
	if err != nil || !found {
		return nil, nil
	}
	return []string{hash}, nil
}

// Store answers attestor.Enrollments from an informer made by NewInformer.
type Store struct {
	informer cache.SharedIndexInformer
}

// New returns a Store over informer, which must carry the EK hash index
// (NewInformer's does).
func New(informer cache.SharedIndexInformer) (*Store, error) {
	if _, ok := informer.GetIndexer().GetIndexers()[ekHashIndex]; !ok {
		return nil, errors.New("enrollment: the informer has no EK hash index; make it with NewInformer")
	}
	return &Store{informer: informer}, nil
}

// HasSynced is true once the cache holds every record the API server had
// when the watch began: until then a missing record proves nothing.
func (s *Store) HasSynced() bool { return s.informer.HasSynced() }

// NodeName implements attestor.Enrollments.
func (s *Store) NodeName(_ context.Context, ekHash string) (string, bool, error) {
	if !s.HasSynced() {
		return "", false, errors.New("the TPMEnrollment cache has not synced yet")
	}
	records, err := s.records(ekHash)
	if err != nil {
		return "", false, err
	}
	names := make([]string, 0, len(records))
	for _, r := range records {
		if r.GetDeletionTimestamp() == nil {
			names = append(names, r.GetName())
		}
	}
	name, ok, rerr := checkUniqueEnrollment(ekHash, names)
	if rerr != nil {
		return "", false, rerr
	}
	return name, ok, nil
}

// checkUniqueEnrollment: at most one node is enrolled for the EK. Two
// records naming one EK are an operator's mistake the service cannot
// resolve (which node is this TPM?), so it enrols the TPM as neither and
// names both, rather than pick one.
func checkUniqueEnrollment(ekHash string, names []string) (string, bool, *attestation.Error) {
	switch len(names) {
	case 0:
		return "", false, nil
	case 1:
		return names[0], true, nil
	}
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	return "", false, attestation.Refuse(attestation.ReasonAmbiguousEnrollment,
		"EK %s is enrolled for %d nodes (TPMEnrollments %s); one TPM is one node: delete all but one of them",
		ekHash, len(sorted), strings.Join(sorted, ", "))
}

// References are the records naming ekHash, for Events about that TPM
// (none if it is not enrolled).
func (s *Store) References(ekHash string) []corev1.ObjectReference {
	records, err := s.records(ekHash)
	if err != nil {
		return nil
	}
	refs := make([]corev1.ObjectReference, 0, len(records))
	for _, r := range records {
		refs = append(refs, corev1.ObjectReference{
			APIVersion:      attestation.EnrollmentAPIVersion,
			Kind:            attestation.EnrollmentKind,
			Name:            r.GetName(),
			UID:             r.GetUID(),
			ResourceVersion: r.GetResourceVersion(),
		})
	}
	return refs
}

// Counts returns how many records the cache holds and how many EK hashes
// are named by more than one of them (each such TPM is refused).
func (s *Store) Counts() (records, ambiguous int) {
	idx := s.informer.GetIndexer()
	for _, hash := range idx.ListIndexFuncValues(ekHashIndex) {
		if objs, err := idx.ByIndex(ekHashIndex, hash); err == nil && len(objs) > 1 {
			ambiguous++
		}
	}
	return len(idx.ListKeys()), ambiguous
}

func (s *Store) records(ekHash string) ([]*unstructured.Unstructured, error) {
	objs, err := s.informer.GetIndexer().ByIndex(ekHashIndex, ekHash)
	if err != nil {
		return nil, fmt.Errorf("looking up TPMEnrollments by EK hash: %w", err)
	}
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out, nil
}
