package server

import (
	"testing"

	"github.com/certagent/certagent/cluster/rbac/rbactest"
)

// TestPermissionsAreWhatRBACGrants: the permissions the service checks at
// start are exactly the rules packaging/cluster/20-rbac.yaml grants its
// service account: a rule the service does not need fails this test, and so
// does a need the manifest does not grant.
func TestPermissionsAreWhatRBACGrants(t *testing.T) {
	rbactest.GrantsExactly(t, "../../packaging/cluster/20-rbac.yaml", permissions)
}
