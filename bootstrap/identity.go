package bootstrap

import (
	"context"
	"fmt"
	"slices"

	"k8s.io/client-go/rest"
)

// CheckIdentity asks the API server who rc authenticates as (a
// SelfSubjectReview) and requires system:node:<node> in group system:nodes.
func CheckIdentity(ctx context.Context, rc *rest.Config, node string) error {
	review, err := selfSubjectReview(ctx, rc)
	if err != nil {
		return fmt.Errorf("asking the API server who the new kubeconfig is: %w", err)
	}
	info := review.Status.UserInfo
	want := "system:node:" + node
	if info.Username != want || !slices.Contains(info.Groups, "system:nodes") {
		return fmt.Errorf("the new kubeconfig authenticates as %q in groups %v, want %q in system:nodes", info.Username, info.Groups, want)
	}
	return nil
}
