// Package trust is the node side of following a cluster CA rotation
// (docs/ca-rotation.md): it reads the trust the cluster publishes as
// ClusterTrustBundles, over the node's own connection (which kubelet.conf's
// current CA authenticates), and decides, without side effects, what the
// node should trust and whether its certificates must be re-issued. The
// agent writes the files and asks for the certificates.
//
// Published trust is refused whole, and nothing changes, when it is empty,
// malformed, holds a certificate that is not a CA, or would no longer
// verify the API server the node is talking to now.
package trust
