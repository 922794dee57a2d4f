package apiclient

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// NodeAddresses reads the Node name's status.addresses (the Node authorizer
// lets a node get its own Node). The Node is read as JSON into its
// addresses only: the lean scheme stays without the core API group.
func (a *API) NodeAddresses(ctx context.Context, name string) ([]corev1.NodeAddress, error) {
	c, err := a.coreClient()
	if err != nil {
		return nil, fmt.Errorf("building the Node client: %w", err)
	}
	raw, err := c.Get().Timeout(RequestTimeout).Resource("nodes").Name(name).DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	var node struct {
		Status struct {
			Addresses []corev1.NodeAddress `json:"addresses"`
		} `json:"status"`
	}
	if err := json.Unmarshal(raw, &node); err != nil {
		return nil, fmt.Errorf("reading Node %s: %w", name, err)
	}
	return node.Status.Addresses, nil
}
