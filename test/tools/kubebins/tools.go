//go:build tools

// Package kubebins pins the control-plane commands the end-to-end suite builds
// (kube-apiserver, kube-controller-manager) so that go mod tidy keeps them.
package kubebins

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
