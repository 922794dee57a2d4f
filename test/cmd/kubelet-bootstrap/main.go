// Command kubelet-bootstrap runs the kubelet's own client-certificate
// bootstrap (k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap.LoadClientCert)
// as a process of its own, so that the benchmark can compare it with
// `certagent run --once --serving=false` on the same control plane.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubelet.conf to write")
	bootstrapKubeconfig := flag.String("bootstrap-kubeconfig", "", "bootstrap-token kubeconfig")
	certDir := flag.String("cert-dir", "", "certificate directory")
	nodeName := flag.String("node-name", "", "node name")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := bootstrap.LoadClientCert(ctx, *kubeconfig, *bootstrapKubeconfig, *certDir, types.NodeName(*nodeName)); err != nil {
		fmt.Fprintln(os.Stderr, "kubelet-bootstrap:", err)
		os.Exit(1)
	}
}
