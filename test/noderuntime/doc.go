// Package noderuntime runs a real container runtime for the kubelet suite:
// Debian's containerd and runc with a configuration, state and socket of
// the test's own, a bridge CNI network from Debian's
// containernetworking-plugins, and a locally built image (BuildImage) as
// both the pod sandbox image and the test pod's image, because no registry
// is reachable from the machines the suites run on.
package noderuntime
