// Package controlplane runs a real, minimal Kubernetes control plane (etcd,
// kube-apiserver and kube-controller-manager) on loopback ports for
// certagent's end-to-end tests.
//
// The control plane is configured the way kubeadm configures a cluster for
// kubelet TLS bootstrap: bootstrap-token authentication, Node and RBAC
// authorization, the NodeRestriction admission plugin, a controller-manager
// that signs, approves and cleans up CSRs with the cluster CA, and kubeadm's
// ClusterRoleBindings for the bootstrap and node groups.
//
// Typical use:
//
//	bins, err := controlplane.EnsureBinaries(ctx, t.Logf)
//	...
//	cp, err := controlplane.Start(ctx, bins, controlplane.Options{Dir: t.TempDir(), Logf: t.Logf})
//	...
//	t.Cleanup(cp.Stop)
//	token, err := cp.CreateBootstrapToken(ctx, controlplane.TokenOptions{AutoApprove: true})
//	err = cp.WriteBootstrapKubeconfig(path, token, true)
//
// With Options.PublishServingTrust the controller-manager publishes the API
// server's serving CAs as a ClusterTrustBundle, and AddCA, SwitchServing,
// SwitchSigners, SwitchKubeletClient and RemoveOldCA rotate the cluster CA
// phase by phase as an operator does (docs/ca-rotation.md).
//
// The binaries are built from the Go module proxy (k8s.io/kubernetes of the
// minor in $CERTAGENT_K8S, pinned by its module under test/k8s, default
// Newest; go.etcd.io/etcd/server/v3, pinned by test/tools/etcd) once per
// dependency set and Go version, and cached; see EnsureBinaries.
package controlplane
