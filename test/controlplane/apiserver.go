package controlplane

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

const (
	// apiserverReadyTimeout bounds how long kube-apiserver may take to
	// answer /readyz with ok; on a loaded 2-core machine this can approach
	// a minute.
	apiserverReadyTimeout = 120 * time.Second
	// apiserverStopGrace is how long StopAPIServer waits after SIGTERM
	// before killing the apiserver.
	apiserverStopGrace = 30 * time.Second
	// serviceClusterIPRange is the (unused) service network.
	serviceClusterIPRange = "10.96.0.0/12"
)

// apiserverArgs returns kube-apiserver's flags for this control plane.
func (cp *ControlPlane) apiserverArgs() []string {
	args := []string{
		"--etcd-servers", cp.EtcdURL,
		"--bind-address", cp.bindAddress.String(),
		"--advertise-address", cp.bindAddress.String(),
		"--secure-port", strconv.Itoa(cp.port),
		"--client-ca-file", cp.TrustBundleFile,
		"--tls-cert-file", cp.pki.ServingCert,
		"--tls-private-key-file", cp.pki.ServingKey,
		"--service-account-key-file", cp.pki.SAPub,
		"--service-account-signing-key-file", cp.pki.SAKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", serviceClusterIPRange,
		"--enable-bootstrap-token-auth",
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		// Connections to kubelets (the node proxy, logs, exec) verify the
		// kubelet's serving certificate against the cluster CA, which signs
		// kubernetes.io/kubelet-serving certificates, dial the Node's
		// InternalIP, and authenticate with a client certificate of the CA.
		"--kubelet-certificate-authority", cp.TrustBundleFile,
		"--kubelet-preferred-address-types", "InternalIP",
		"--kubelet-client-certificate", cp.pki.KubeletClientCert,
		"--kubelet-client-key", cp.pki.KubeletClientKey,
		// A loopback advertise address cannot go into the kubernetes
		// Service's endpoints; nothing here needs them.
		"--endpoint-reconciler-type", "none",
		// Without this, SIGTERM waits up to --request-timeout (60 s) for
		// the controller-manager's watches to end; with it the HTTP server
		// gets 2 s, so StopAPIServer takes a few seconds.
		"--shutdown-send-retry-after=true",
		"--profiling=false",
		"--audit-policy-file", cp.auditPolicy,
		"--audit-log-path", cp.AuditLog,
		"--audit-log-format", "json",
	}
	if cp.maxInflight[0] > 0 {
		args = append(args, "--max-requests-inflight", strconv.Itoa(cp.maxInflight[0]))
	}
	if cp.maxInflight[1] > 0 {
		args = append(args, "--max-mutating-requests-inflight", strconv.Itoa(cp.maxInflight[1]))
	}
	return args
}

// startAPIServerProcess starts kube-apiserver with cp's flags and waits until
// /readyz answers ok.
func (cp *ControlPlane) startAPIServerProcess(ctx context.Context) (*process, error) {
	p, err := startProcess("kube-apiserver", cp.bins.APIServer, cp.apiserverArgs(), filepath.Join(cp.LogDir, "kube-apiserver.log"))
	if err != nil {
		return nil, err
	}
	if err := cp.waitAPIServerReady(ctx, p); err != nil {
		p.kill()
		return p, err
	}
	return p, nil
}

// waitAPIServerReady polls /readyz with the admin client until it answers ok,
// the process exits, ctx ends or apiserverReadyTimeout passes.
func (cp *ControlPlane) waitAPIServerReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, apiserverReadyTimeout)
	defer cancel()
	var last string
	for {
		if p.exited() {
			return p.exitError()
		}
		reqCtx, reqCancel := context.WithTimeout(ctx, 10*time.Second)
		body, err := cp.Admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(reqCtx)
		reqCancel()
		if err == nil && string(body) == "ok" {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = string(body)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver at %s not ready (last /readyz: %s): %w; last lines of %s:\n%s",
				cp.URL, last, ctx.Err(), p.logPath, p.logTail())
		case <-p.done:
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after 30 s) and
// waits for it to exit, leaving etcd and the controller-manager running, to
// simulate a control-plane outage. Stopping a stopped apiserver is a no-op.
func (cp *ControlPlane) StopAPIServer() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.apiserver == nil || cp.apiserver.exited() {
		cp.apiserver = nil
		return nil
	}
	err := cp.apiserver.terminate(apiserverStopGrace)
	cp.apiserver = nil
	if err != nil {
		return fmt.Errorf("stop kube-apiserver: %w", err)
	}
	cp.logf("control plane: kube-apiserver stopped")
	return nil
}

// StartAPIServer starts kube-apiserver again, with the same flags and port,
// after StopAPIServer, and waits until it is ready. It is an error to call it
// while the apiserver is running or after Stop.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return fmt.Errorf("start kube-apiserver: control plane has been stopped")
	}
	if cp.apiserver != nil && !cp.apiserver.exited() {
		return fmt.Errorf("start kube-apiserver: already running")
	}
	start := time.Now()
	p, err := cp.startAPIServerProcess(ctx)
	if err != nil {
		return fmt.Errorf("restart kube-apiserver: %w", err)
	}
	cp.apiserver = p
	cp.logf("control plane: kube-apiserver restarted in %s", time.Since(start).Round(time.Millisecond))
	return nil
}
