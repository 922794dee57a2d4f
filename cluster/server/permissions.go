package server

import (
	"context"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/cluster/issuer"
	"github.com/certagent/certagent/cluster/rbac"
	"github.com/certagent/certagent/protocol/attestation"
)

// EventsNamespace is where Events about TPMEnrollments go: they are
// cluster-scoped, and client-go records Events about cluster-scoped objects
// in "default".
const EventsNamespace = "default"

func csrPerm(verb, sub, why string) rbac.Permission {
	return rbac.Permission{Attrs: authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Subresource: sub, Verb: verb}, Why: why}
}

// permissions are all the service needs: exactly what
// packaging/cluster/20-rbac.yaml grants (TestPermissionsAreWhatRBACGrants).
var permissions = []rbac.Permission{
	csrPerm("create", "", "to post each attested node's CSR"),
	csrPerm("get", "", "to read the CSR a retried request finds"),
	csrPerm("list", "", "to watch for the signer's certificate (an informer)"),
	csrPerm("watch", "", "to watch for the signer's certificate (an informer)"),
	csrPerm("update", "approval", "to approve attested CSRs"),
	{Attrs: authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "signers", Name: issuer.SignerName, Verb: "approve"},
		Why: "to approve CSRs for the kubelet client signer"},
	{Attrs: authorizationv1.ResourceAttributes{Group: attestation.EnrollmentGroup, Resource: attestation.EnrollmentResource, Verb: "list"},
		Why: "to read the enrolments (an informer)"},
	{Attrs: authorizationv1.ResourceAttributes{Group: attestation.EnrollmentGroup, Resource: attestation.EnrollmentResource, Verb: "watch"},
		Why: "to read the enrolments (an informer)"},
	{Attrs: authorizationv1.ResourceAttributes{Namespace: EventsNamespace, Resource: "events", Verb: "create"},
		Why: "to record Events on TPMEnrollments"},
	{Attrs: authorizationv1.ResourceAttributes{Namespace: EventsNamespace, Resource: "events", Verb: "patch"},
		Why: "to record repeated Events on TPMEnrollments"},
}

// checkPermissions fails naming every permission the service lacks: a
// service that could not issue should say so at start, not at a node's
// first attestation.
func checkPermissions(ctx context.Context, client kubernetes.Interface) error {
	return rbac.Check(ctx, client, permissions, "packaging/cluster/20-rbac.yaml")
}
