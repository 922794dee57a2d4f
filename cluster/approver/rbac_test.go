package approver

import (
	"context"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/certagent/certagent/cluster/rbac"
	"github.com/certagent/certagent/cluster/rbac/rbactest"
)

// TestApproverPermissionsAreWhatRBACGrants: what the approver checks at
// start is exactly what its shipped RBAC grants, no more, no less.
func TestApproverPermissionsAreWhatRBACGrants(t *testing.T) {
	rbactest.GrantsExactly(t, "../../"+Manifest, permissions)
}

// TestApproverNamesMissingPermissions: a service account without the
// approve grant on the kubelet serving signer is told so, with the manifest.
func TestApproverNamesMissingPermissions(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		r.Status.Allowed = r.Spec.ResourceAttributes.Verb != "approve"
		return true, r, nil
	})
	err := rbac.Check(context.Background(), c, permissions, Manifest)
	for _, want := range []string{"missing RBAC", "approve on certificates.k8s.io signers kubernetes.io/kubelet-serving", Manifest} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}
