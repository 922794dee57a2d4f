package server

import (
	"context"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/cluster/issuer"
	"github.com/certagent/certagent/protocol/attestation"
)

// permission is one thing the service does with the API, and why: exactly
// what packaging/cluster/20-rbac.yaml grants (a test keeps the two in step).
type permission struct {
	attrs authorizationv1.ResourceAttributes
	why   string
}

// EventsNamespace is where Events about TPMEnrollments go: they are
// cluster-scoped, and client-go records Events about cluster-scoped objects
// in "default".
const EventsNamespace = "default"

func csrPerm(verb, sub, why string) permission {
	return permission{authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Subresource: sub, Verb: verb}, why}
}

// permissions are all the service needs.
var permissions = []permission{
	csrPerm("create", "", "to post each attested node's CSR"),
	csrPerm("get", "", "to read the CSR a retried request finds"),
	csrPerm("list", "", "to watch for the signer's certificate (an informer)"),
	csrPerm("watch", "", "to watch for the signer's certificate (an informer)"),
	csrPerm("update", "approval", "to approve attested CSRs"),
	{authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "signers", Name: issuer.SignerName, Verb: "approve"},
		"to approve CSRs for the kubelet client signer"},
	{authorizationv1.ResourceAttributes{Group: attestation.EnrollmentGroup, Resource: attestation.EnrollmentResource, Verb: "list"},
		"to read the enrolments (an informer)"},
	{authorizationv1.ResourceAttributes{Group: attestation.EnrollmentGroup, Resource: attestation.EnrollmentResource, Verb: "watch"},
		"to read the enrolments (an informer)"},
	{authorizationv1.ResourceAttributes{Namespace: EventsNamespace, Resource: "events", Verb: "create"},
		"to record Events on TPMEnrollments"},
	{authorizationv1.ResourceAttributes{Namespace: EventsNamespace, Resource: "events", Verb: "patch"},
		"to record repeated Events on TPMEnrollments"},
}

// String is the permission as an operator reads it: "approve on
// certificates.k8s.io signers kubernetes.io/kube-apiserver-client-kubelet".
func (p permission) String() string {
	a := p.attrs
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

// checkPermissions asks the API server (SelfSubjectAccessReview, which every
// authenticated user may) whether the service may do each thing it needs,
// and fails naming every permission it lacks: a service that could not
// issue should say so at start, not at a node's first attestation.
func checkPermissions(ctx context.Context, client kubernetes.Interface) error {
	var missing []string
	for _, p := range permissions {
		attrs := p.attrs
		review, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}},
			metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("checking the service's permissions (%s): %w", p, err)
		}
		if !review.Status.Allowed {
			missing = append(missing, p.String()+" ("+p.why+")")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing RBAC: the service account may not %s; apply packaging/cluster/20-rbac.yaml (and bind it to this service account)",
			strings.Join(missing, "; nor "))
	}
	return nil
}
