package command

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/cluster/inittls"
)

// initTLSCommand makes the service's TLS Secrets with the operator's
// kubeconfig and prints the CA for the nodes' user-data.
func initTLSCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("certagent-cluster init-tls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kubeconfig, kubeContext, output string
		o                               inittls.Options
	)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "the operator's kubeconfig `file` (default: $KUBECONFIG, else ~/.kube/config)")
	fs.StringVar(&kubeContext, "context", "", "kubeconfig context (default: the current one)")
	fs.StringVar(&o.Namespace, "namespace", "certagent-system", "the service's namespace")
	fs.Func("san", "DNS name or IP address nodes reach the service at (repeat, or comma-separate): a node's address for the NodePort, a load balancer's, never the cluster IP (a joining node has no kube-proxy)", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				o.SANs = append(o.SANs, s)
			}
		}
		return nil
	})
	fs.DurationVar(&o.Validity, "validity", 365*24*time.Hour, "serving certificate lifetime (run init-tls again before it ends; the CA is kept)")
	fs.BoolVar(&o.NewCA, "new-ca", false, "make a new CA even if one exists (every node's user-data must then carry the new one)")
	fs.StringVar(&o.TLSSecret, "tls-secret", inittls.TLSSecret, "Secret the Deployment mounts (tls.crt, tls.key, ca.crt)")
	fs.StringVar(&o.CASecret, "ca-secret", inittls.CASecret, "Secret keeping the CA and its key (nothing mounts it)")
	fs.StringVar(&output, "o", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || output != "text" && output != "json" {
		fmt.Fprintf(stderr, "certagent-cluster init-tls: unexpected arguments %q or -o %q (text or json)\n", fs.Args(), output)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, err := operatorConfig(kubeconfig, kubeContext)
	if err == nil {
		o.Client, err = kubernetes.NewForConfig(cfg)
	}
	var r *inittls.Result
	if err == nil {
		r, err = inittls.Run(ctx, o)
	}
	if err != nil {
		fmt.Fprintf(stderr, "certagent-cluster init-tls: %v\n", err)
		return 1
	}
	printResult(stdout, output, o, r)
	return 0
}

func printResult(w io.Writer, output string, o inittls.Options, r *inittls.Result) {
	if output == "json" {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"caHash": r.CAHash, "caPEM": string(r.CAPEM), "caCreated": r.CACreated,
			"tlsSecret": o.Namespace + "/" + o.TLSSecret, "sans": o.SANs, "notAfter": r.NotAfter,
		})
		return
	}
	fmt.Fprintf(w, "Secret %s/%s holds a serving certificate for %s, valid until %s.\n",
		o.Namespace, o.TLSSecret, strings.Join(o.SANs, ", "), r.NotAfter.UTC().Format(time.RFC3339))
	if r.CACreated {
		fmt.Fprintf(w, "A new CA is kept in Secret %s/%s: every node's user-data must carry it (its hash or its PEM).\n", o.Namespace, o.CASecret)
	} else {
		fmt.Fprintf(w, "The CA in Secret %s/%s is unchanged: user-data that carries it stays valid.\n", o.Namespace, o.CASecret)
	}
	fmt.Fprintf(w, "\nThe attestation service's CA, for the nodes' user-data:\n\nca-hash: %s\nca-pem: |\n", r.CAHash)
	for _, line := range strings.Split(strings.TrimSpace(string(r.CAPEM)), "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
}
