// Package rbac checks at start that a cluster-side command's service
// account may do each thing it needs (SelfSubjectAccessReview, which every
// authenticated user may ask), and names every permission it lacks: a
// service that cannot do its job says so at start, not at its first request.
// Package rbactest keeps each command's list and its shipped manifest in step.
package rbac

import (
	"context"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Permission is one thing a command does with the API, and why.
type Permission struct {
	Attrs authorizationv1.ResourceAttributes
	Why   string
}

// String is the permission as an operator reads it: "approve on
// certificates.k8s.io signers kubernetes.io/kube-apiserver-client-kubelet".
func (p Permission) String() string {
	a := p.Attrs
	res := a.Resource
	if a.Subresource != "" {
		res += "/" + a.Subresource
	}
	if a.Group != "" {
		res = a.Group + " " + res
	}
	s := a.Verb + " on " + res
	if a.Name != "" {
		s += " " + a.Name
	}
	if a.Namespace != "" {
		s += " in namespace " + a.Namespace
	}
	return s
}

// Check asks whether the client may do each of perms and fails naming every
// one it may not, and the manifest that grants them.
func Check(ctx context.Context, client kubernetes.Interface, perms []Permission, manifest string) error {
	var missing []string
	for _, p := range perms {
		attrs := p.Attrs
		review, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}},
			metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("checking the service account's permissions (%s): %w", p, err)
		}
		if !review.Status.Allowed {
			missing = append(missing, p.String()+" ("+p.Why+")")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing RBAC: the service account may not %s; apply %s (and bind it to this service account)",
			strings.Join(missing, "; nor "), manifest)
	}
	return nil
}
