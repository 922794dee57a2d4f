// Command demo shows certagent bootstrapping a node against a real local
// control plane: it starts etcd, kube-apiserver and kube-controller-manager,
// writes a bootstrap-token kubeconfig, runs `certagent run --once`, approves
// the serving CSR once certagent says it is waiting (as an operator would
// with kubectl certificate approve), prints `certagent status`, and cleans up.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
)

func main() {
	bin := flag.String("certagent", "", "certagent binary (required)")
	keep := flag.Bool("keep", false, "keep the working directory")
	flag.Parse()
	if err := demo(*bin, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func demo(bin string, keep bool) error {
	if bin == "" {
		return fmt.Errorf("-certagent is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp("", "certagent-demo-")
	if err != nil {
		return err
	}
	if keep {
		say("working directory: %s (kept)", work)
	} else {
		defer os.RemoveAll(work)
	}

	say("building the control plane (cached after the first run)")
	bins, err := controlplane.EnsureBinaries(ctx, func(f string, a ...any) { fmt.Printf("    "+f+"\n", a...) })
	if err != nil {
		return err
	}
	say("starting etcd, kube-apiserver and kube-controller-manager")
	cp, err := controlplane.Start(ctx, bins, controlplane.Options{Dir: filepath.Join(work, "control-plane")})
	if err != nil {
		return err
	}
	defer cp.Stop()
	fmt.Printf("    API server: %s\n", cp.URL)

	node := "demo-node"
	etc, pki := filepath.Join(work, "node", "etc", "kubernetes"), filepath.Join(work, "node", "var", "lib", "kubelet", "pki")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	token, err := cp.CreateBootstrapToken(ctx, controlplane.TokenOptions{AutoApprove: true})
	if err != nil {
		return err
	}
	bootstrap := filepath.Join(etc, "bootstrap-kubelet.conf")
	if err := cp.WriteBootstrapKubeconfig(bootstrap, token, false); err != nil {
		return err
	}
	config := filepath.Join(work, "node", "config.yaml")
	if err := os.WriteFile(config, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\n"), 0o600); err != nil {
		return err
	}
	say("wrote a bootstrap-token kubeconfig for node %q: %s", node, bootstrap)
	common := []string{"--config", config, "--node-name", node, "--bootstrap-kubeconfig", bootstrap,
		"--kubeconfig", filepath.Join(etc, "kubelet.conf"), "--cert-dir", pki}

	args := append([]string{"run", "--once"}, common...)
	say("certagent %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, bin, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	waiting := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Println("    | " + line)
			if m := approveRE.FindStringSubmatch(line); m != nil {
				select {
				case waiting <- m[1]:
				default:
				}
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()

	select {
	case name := <-waiting:
		csr, err := cp.Admin.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName {
			return fmt.Errorf("CSR %s has signer %s", name, csr.Spec.SignerName)
		}
		say("certagent is waiting for the serving CSR %s (requested by %s); approving it: kubectl certificate approve %s", name, csr.Spec.Username, name)
		if err := cp.ApproveCSR(ctx, name); err != nil {
			return err
		}
	case err := <-done:
		return fmt.Errorf("certagent exited before asking for approval: %v", err)
	case <-time.After(3 * time.Minute):
		return fmt.Errorf("certagent did not ask for approval within 3 minutes")
	}
	if err := <-done; err != nil {
		return fmt.Errorf("certagent: %w", err)
	}
	say("certagent exited 0; the bootstrap kubeconfig is gone: %v", !exists(bootstrap))

	say("certagent status")
	st := exec.CommandContext(ctx, bin, append([]string{"status"}, common...)...)
	st.Stdout, st.Stderr = os.Stdout, os.Stderr
	if err := st.Run(); err != nil {
		return fmt.Errorf("certagent status: %w", err)
	}
	say("files in %s", pki)
	entries, _ := os.ReadDir(pki)
	for _, e := range entries {
		info := ""
		if t, err := os.Readlink(filepath.Join(pki, e.Name())); err == nil {
			info = " -> " + t
		}
		fmt.Printf("    %s%s\n", e.Name(), info)
	}
	say("done; stopping the control plane")
	return nil
}

var approveRE = regexp.MustCompile(`kubectl certificate approve (node-csr-[A-Za-z0-9_-]+)`)

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
