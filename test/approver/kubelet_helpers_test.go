package approver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/certagent/certagent/test/kubelettest"
)

// waitLeaf waits a minute for certDir's <prefix>-current.pem and returns
// its certificate; log is certagent's output, shown if it does not come.
func waitLeaf(t *testing.T, certDir, prefix string, log fmt.Stringer) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		leaf = kubelettest.CurrentLeaf(certDir, prefix)
		return leaf != nil, nil
	})
	if err != nil {
		t.Fatalf("no %s certificate after a minute:\n%s", prefix, log)
	}
	return leaf
}

// writeForeignServing points kubelet-server-current.pem at a certificate
// with like's subject and names, issued by a CA of the test's own (not the
// cluster's), and returns it.
func writeForeignServing(t *testing.T, certDir string, like *x509.Certificate) *x509.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the cluster CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: like.Subject,
		DNSNames: like.DNSNames, IPAddresses: like.IPAddresses, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...)
	file := "kubelet-server-foreign.pem"
	current := filepath.Join(certDir, "kubelet-server-current.pem")
	if err := os.WriteFile(filepath.Join(certDir, file), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(current); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(file, current); err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return leaf
}

// waitServes waits a minute for k to present want on its port and for its
// Node to name that port (the API server dials the Node's kubelet port).
func waitServes(ctx context.Context, t *testing.T, k *kubelettest.Kubelet, want *x509.Certificate) {
	t.Helper()
	_, port, _ := net.SplitHostPort(k.Watch.Addr)
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", k.Watch.Addr, &tls.Config{InsecureSkipVerify: true}) // the certificate is what is looked at
		if err != nil {
			return false, nil
		}
		served := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		n, err := cp.Admin.CoreV1().Nodes().Get(ctx, k.Watch.Node, metav1.GetOptions{})
		return err == nil && served.SerialNumber.Cmp(want.SerialNumber) == 0 &&
			fmt.Sprint(n.Status.DaemonEndpoints.KubeletEndpoint.Port) == port, nil
	})
	if err != nil {
		t.Fatalf("the restarted kubelet does not serve the foreign certificate on the Node's kubelet port a minute on: %v\n%s", err, kubelettest.TailFile(k.Watch.Log, 30))
	}
}

// proxyHealthz GETs /api/v1/nodes/<node>/proxy/healthz as the admin; an
// error carries the response's body, where the API server says why it could
// not reach the kubelet.
func proxyHealthz(ctx context.Context, k *kubelettest.Kubelet) error {
	reqCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	body, err := cp.Admin.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", k.Watch.Node, "proxy", "healthz").DoRaw(reqCtx)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %s", err, body)
	case string(body) != "ok":
		return fmt.Errorf("body %q", body)
	}
	return nil
}

// deletePodNow deletes the pod while the kubelet runs and waits for it to
// be gone.
func deletePodNow(ctx context.Context, t *testing.T, pod string) {
	t.Helper()
	pods := cp.Admin.CoreV1().Pods(corev1.NamespaceDefault)
	if err := pods.Delete(ctx, pod, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, pod, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("pod %s not gone 30 s after its deletion: %v", pod, err)
	}
}
