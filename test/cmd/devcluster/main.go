// Command devcluster runs the end-to-end suite's control plane (etcd,
// kube-apiserver, kube-controller-manager) for manual work with certagent:
// it builds the binaries if needed, starts the control plane, creates a
// bootstrap token, writes a bootstrap kubeconfig, prints where everything is,
// and runs until interrupted.
//
// Usage (from the test module):
//
//	go run ./cmd/devcluster [-dir DIR] [-auto-approve=false] [-signing-duration 24h] [-kcm-qps 500]
//	go run ./cmd/devcluster -build-only
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/certagent/certagent/test/controlplane"
)

func main() {
	dir := flag.String("dir", "", "working directory for PKI, data, kubeconfigs and logs (default: a new temp dir, removed on exit)")
	autoApprove := flag.Bool("auto-approve", true, "bootstrap token in kubeadm's auto-approved group (false: client CSRs stay Pending until approved)")
	signing := flag.Duration("signing-duration", 24*time.Hour, "kube-controller-manager --cluster-signing-duration")
	buildOnly := flag.Bool("build-only", false, "only build (or find cached) control-plane binaries, then exit")
	kcmQPS := flag.Float64("kcm-qps", 0, "kube-controller-manager --kube-api-qps (0: its default, 20), burst twice that")
	flag.Parse()
	log.SetFlags(log.Ltime)

	if err := run(*dir, *autoApprove, *signing, *buildOnly, float32(*kcmQPS)); err != nil {
		log.Fatal(err)
	}
}

func run(dir string, autoApprove bool, signing time.Duration, buildOnly bool, kcmQPS float32) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	bins, err := controlplane.EnsureBinaries(ctx, log.Printf)
	if err != nil {
		return err
	}
	if buildOnly {
		fmt.Printf("etcd:                    %s\nkube-apiserver:          %s\nkube-controller-manager: %s\n",
			bins.Etcd, bins.APIServer, bins.ControllerManager)
		return nil
	}

	if dir == "" {
		tmp, err := os.MkdirTemp("", "certagent-devcluster-")
		if err != nil {
			return fmt.Errorf("create temp dir: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}

	cp, err := controlplane.Start(ctx, bins, controlplane.Options{Dir: dir, SigningDuration: signing, Logf: log.Printf,
		ControllerManagerQPS: kcmQPS, ControllerManagerBurst: int(2 * kcmQPS)})
	if err != nil {
		return err
	}
	defer cp.Stop()

	token, err := cp.CreateBootstrapToken(ctx, controlplane.TokenOptions{AutoApprove: autoApprove})
	if err != nil {
		return err
	}
	bootstrapPath := filepath.Join(cp.Dir, "bootstrap-kubelet.conf")
	if err := cp.WriteBootstrapKubeconfig(bootstrapPath, token, true); err != nil {
		return err
	}

	fmt.Printf(`control plane running (Ctrl-C to stop)
  URL:                  %s
  CA:                   %s
  admin kubeconfig:     %s
  bootstrap kubeconfig: %s
  bootstrap token:      %s (auto-approve: %v)
  logs:                 %s

  kubectl --kubeconfig %s get csr
`, cp.URL, cp.CAFile, cp.AdminKubeconfig, bootstrapPath, token, autoApprove, cp.LogDir, cp.AdminKubeconfig)

	<-ctx.Done()
	log.Print("stopping control plane")
	return nil
}
