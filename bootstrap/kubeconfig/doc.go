// Package kubeconfig reads kubeconfigs as the node's tools read them (node
// side): a bootstrap kubeconfig, checked with a message that names the file
// and what to change, and kubelet.conf exactly as a kubelet started with
// --kubeconfig reads it; and it encodes the kubelet.conf certagent writes,
// carrying every connection setting of the cluster entry it came from.
//
// It parses and encodes; it writes no file (package bootstrap does,
// atomically), talks to no API server and holds no secret beyond the call.
package kubeconfig
