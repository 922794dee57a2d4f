package approver

import (
	authorizationv1 "k8s.io/api/authorization/v1"

	"github.com/certagent/certagent/cluster/rbac"
	"github.com/certagent/certagent/protocol/attestation"
)

// Manifest is the RBAC that grants the approver's permissions.
const Manifest = "packaging/cluster/approver/20-rbac.yaml"

// EventsNamespace is where client-go records Events about CSRs (cluster-scoped).
const EventsNamespace = "default"

func perm(group, resource, sub, name, verb, why string) rbac.Permission {
	return rbac.Permission{Attrs: authorizationv1.ResourceAttributes{Group: group, Resource: resource, Subresource: sub, Name: name, Verb: verb}, Why: why}
}

// permissions are all the approver needs: exactly what Manifest grants
// (TestApproverPermissionsAreWhatRBACGrants); Run checks them at start.
var permissions = []rbac.Permission{
	perm("certificates.k8s.io", "certificatesigningrequests", "", "", "list", "to watch kubelet serving CSRs (an informer)"),
	perm("certificates.k8s.io", "certificatesigningrequests", "", "", "watch", "to watch kubelet serving CSRs (an informer)"),
	perm("certificates.k8s.io", "certificatesigningrequests", "approval", "", "update", "to approve or deny them"),
	perm("certificates.k8s.io", "signers", "", SignerName, "approve", "to approve CSRs for the kubelet serving signer"),
	perm("", "nodes", "", "", "list", "to read the Nodes' addresses (an informer)"),
	perm("", "nodes", "", "", "watch", "to read the Nodes' addresses (an informer)"),
	perm(attestation.EnrollmentGroup, attestation.EnrollmentResource, "", "", "list", "to read the names nodes were enrolled with (an informer)"),
	perm(attestation.EnrollmentGroup, attestation.EnrollmentResource, "", "", "watch", "to read the names nodes were enrolled with (an informer)"),
	{Attrs: authorizationv1.ResourceAttributes{Namespace: EventsNamespace, Resource: "events", Verb: "create"}, Why: "to record Events on CSRs"},
	{Attrs: authorizationv1.ResourceAttributes{Namespace: EventsNamespace, Resource: "events", Verb: "patch"}, Why: "to record repeated Events on CSRs"},
}
