package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
)

// controllerManagerReadyTimeout bounds how long the controller-manager may
// take to sign its first CSR.
const controllerManagerReadyTimeout = 120 * time.Second

// controllerManagerArgs returns kube-controller-manager's flags: only the
// CSR and bootstrap-token controllers (and, with PublishServingTrust, the
// kube-apiserver-serving trust bundle publisher, before 1.37 the
// root-ca-cert-publisher), signing with the cluster CA, no
// leader election and no serving port; the client rate limit if set.
func (cp *ControlPlane) controllerManagerArgs() []string {
	controllers := "csrsigning,csrapproving,csrcleaner,tokencleaner,bootstrapsigner"
	if cp.publishTrust && cp.TrustInConfigMaps() {
		controllers += "," + rootCAPublisher
	} else if cp.publishTrust {
		controllers += "," + servingTrustPublisher
	}
	args := []string{
		"--kubeconfig", cp.kcmKubeconfig,
		"--controllers", controllers,
		"--cluster-signing-cert-file", cp.CAFile,
		"--cluster-signing-key-file", cp.CAKeyFile,
		"--cluster-signing-duration", cp.signingDuration.String(),
		"--leader-elect=false",
		// 0 turns the serving port (and with it the delegated authn/authz
		// setup) off.
		"--secure-port", "0",
		"--profiling=false",
	}
	if cp.publishTrust {
		// Read once at start: changing it needs a restart.
		args = append(args, "--root-ca-file", cp.TrustBundleFile)
	}
	if cp.kcmQPS > 0 {
		args = append(args, "--kube-api-qps", strconv.FormatFloat(float64(cp.kcmQPS), 'f', -1, 32))
	}
	if cp.kcmBurst > 0 {
		args = append(args, "--kube-api-burst", strconv.Itoa(cp.kcmBurst))
	}
	return args
}

// startControllerManager starts kube-controller-manager and waits until it
// approves and signs a probe CSR, which proves that both the csrapproving
// and csrsigning controllers are running.
func (cp *ControlPlane) startControllerManager(ctx context.Context) error {
	p, err := startProcess("kube-controller-manager", cp.bins.ControllerManager, cp.controllerManagerArgs(),
		filepath.Join(cp.LogDir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	cp.kcm = p
	if _, err := cp.probeCSRSigning(ctx, p); err != nil {
		return fmt.Errorf("kube-controller-manager not ready: %w", err)
	}
	return nil
}

// probeCSRSigning creates a kubelet client CSR as the admin (whose
// system:masters group may create nodeclient CSRs, so csrapproving approves
// it), waits for the certificate, deletes the CSR again and returns the
// certificate (PEM).
func (cp *ControlPlane) probeCSRSigning(ctx context.Context, p *process) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, controllerManagerReadyTimeout)
	defer cancel()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate probe key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:certagent-controlplane-probe", Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create probe CSR: %w", err)
	}
	expiration := int32(600)
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "certagent-controlplane-probe-" + utilrand.String(6)},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName:        certificatesv1.KubeAPIServerClientKubeletSignerName,
			ExpirationSeconds: &expiration,
			Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		},
	}
	csrs := cp.Admin.CertificatesV1().CertificateSigningRequests()
	csr, err = csrs.Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create probe CSR: %w", err)
	}
	defer func() {
		delCtx, delCancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer delCancel()
		_ = csrs.Delete(delCtx, csr.Name, metav1.DeleteOptions{})
	}()

	for {
		if p.exited() {
			return nil, p.exitError()
		}
		got, err := csrs.Get(ctx, csr.Name, metav1.GetOptions{})
		if err == nil && len(got.Status.Certificate) > 0 {
			return got.Status.Certificate, nil
		}
		select {
		case <-ctx.Done():
			state := "no response"
			if err != nil {
				state = err.Error()
			} else if got != nil {
				state = fmt.Sprintf("conditions %v", got.Status.Conditions)
			}
			return nil, fmt.Errorf("probe CSR %s not signed (%s): %w; last lines of %s:\n%s",
				csr.Name, state, ctx.Err(), p.logPath, p.logTail())
		case <-p.done:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// StopControllerManager stops kube-controller-manager (SIGTERM, then SIGKILL
// after 10 s): CSRs stay unsigned (and unapproved by csrapproving) until
// StartControllerManager. Stopping a stopped one is a no-op.
func (cp *ControlPlane) StopControllerManager() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.kcm == nil || cp.kcm.exited() {
		cp.kcm = nil
		return nil
	}
	err := cp.kcm.terminate(10 * time.Second)
	cp.kcm = nil
	if err != nil {
		return fmt.Errorf("stop kube-controller-manager: %w", err)
	}
	cp.logf("control plane: kube-controller-manager stopped")
	return nil
}

// SetSigningDuration sets the --cluster-signing-duration of the next
// StartControllerManager (0: the one the control plane started with, or 24h).
func (cp *ControlPlane) SetSigningDuration(d time.Duration) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if d == 0 {
		d = cp.startSigningDuration
	}
	cp.signingDuration = d
}

// StartControllerManager starts kube-controller-manager again after
// StopControllerManager and waits until it signs a probe CSR.
func (cp *ControlPlane) StartControllerManager(ctx context.Context) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return fmt.Errorf("start kube-controller-manager: control plane has been stopped")
	}
	if cp.kcm != nil && !cp.kcm.exited() {
		return fmt.Errorf("start kube-controller-manager: already running")
	}
	return cp.startControllerManager(ctx)
}

// SignProbeCSR has the running controller-manager approve and sign a kubelet
// client CSR (system:node:certagent-controlplane-probe) and returns the
// certificate (PEM): which CA signs kubelet certificates now.
func (cp *ControlPlane) SignProbeCSR(ctx context.Context) ([]byte, error) {
	cp.mu.Lock()
	p := cp.kcm
	cp.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("sign probe CSR: kube-controller-manager is not running")
	}
	return cp.probeCSRSigning(ctx, p)
}
