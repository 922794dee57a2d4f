package kubelettest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/noderuntime"
)

// Watch records what the test sees of a running kubelet over time.
type Watch struct {
	CP      *controlplane.ControlPlane // read for each request: its admin client may change
	Node    string                     // the node's name
	CertDir string                     // certagent's --cert-dir
	Start   time.Time
	Addr    string // the kubelet's server, nodeIP:port
	Roots   *x509.CertPool
	Log     string // the kubelet's log

	Client, Serving, Served CertSeries // distinct serials in the order seen
	Leases                  []time.Time
	DialErrs                []string
	Pod                     string // the test pod, running on the node
	Kubectl                 string // kubectl's binary
	Proxy, Logs, Exec       Tally  // requests the API server forwards to the kubelet
}

// CertSeen is one certificate as the test first saw it.
type CertSeen struct {
	Serial   string
	NotAfter time.Time
	Seen     time.Time
}

// CertSeries are certificates in the order seen.
type CertSeries []CertSeen

// String is "[1a2b3c4d seen 12:30:01 until 2027-12-04 12:25:01, …]" (UTC;
// a certificate's end is days or months after it is seen).
func (s CertSeries) String() string {
	var parts []string
	for _, c := range s {
		parts = append(parts, fmt.Sprintf("%s seen %s until %s", c.Serial,
			c.Seen.UTC().Format("15:04:05"), c.NotAfter.UTC().Format("2006-01-02 15:04:05")))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (s *CertSeries) add(c *x509.Certificate, at time.Time) {
	if c == nil {
		return
	}
	serial := ShortSerial(c.SerialNumber)
	if len(*s) == 0 || (*s)[len(*s)-1].Serial != serial {
		*s = append(*s, CertSeen{Serial: serial, NotAfter: c.NotAfter, Seen: at})
	}
}

// ShortSerial is a serial number's first 8 hex digits.
func ShortSerial(n *big.Int) string {
	s := n.Text(16)
	if len(s) > 8 {
		s = s[:8]
	}
	return s
}

// Observe records the certificates on disk, the one the kubelet presents
// and the Lease's renewTime.
func (w *Watch) Observe(ctx context.Context) {
	now := time.Now()
	w.Client.add(CurrentLeaf(w.CertDir, "kubelet-client"), now)
	w.Serving.add(CurrentLeaf(w.CertDir, "kubelet-server"), now)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", w.Addr, &tls.Config{RootCAs: w.Roots})
	if err != nil {
		w.DialErrs = append(w.DialErrs, fmt.Sprintf("+%s: %v", now.Sub(w.Start).Round(time.Second), err))
	} else {
		w.Served.add(conn.ConnectionState().PeerCertificates[0], now)
		conn.Close()
	}
	lease, err := w.CP.Admin.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, w.Node, metav1.GetOptions{})
	if err == nil && lease.Spec.RenewTime != nil {
		rt := lease.Spec.RenewTime.Time
		if len(w.Leases) == 0 || rt.After(w.Leases[len(w.Leases)-1]) {
			w.Leases = append(w.Leases, rt)
		}
	}
}

// CurrentLeaf is the certificate in certDir's <prefix>-current.pem, nil if
// there is none (read here, not with client-go's FileStore, which logs each
// load: tests poll every 2 seconds for many minutes).
func CurrentLeaf(certDir, prefix string) *x509.Certificate {
	data, err := os.ReadFile(filepath.Join(certDir, prefix+"-current.pem"))
	if err != nil {
		return nil
	}
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type == "CERTIFICATE" {
			c, _ := x509.ParseCertificate(block.Bytes)
			return c
		}
	}
	return nil
}

// Tally counts requests that reach the kubelet through the API server,
// which verifies its serving certificate against the cluster CA.
type Tally struct {
	Before int // successes before the first serving renewal
	After  int // and after the kubelet presented a renewed one
	Errs   []string
}

func (t Tally) String() string { return fmt.Sprintf("%d/%d/%d", t.Before, t.After, len(t.Errs)) }

// ThroughAPIServer asks the kubelet, through the API server, for /healthz
// (node proxy), the test pod's last log line (kubectl logs) and a command
// run in it (kubectl exec).
func (w *Watch) ThroughAPIServer(ctx context.Context) {
	reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, err := w.CP.Admin.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", w.Node, "proxy", "healthz").DoRaw(reqCtx)
	w.count(&w.Proxy, string(body), err, func(out string) bool { return out == "ok" })
	out, err := exec.CommandContext(reqCtx, w.Kubectl, "--kubeconfig", w.CP.AdminKubeconfig, "logs", "-n", "default", w.Pod, "--tail=1").CombinedOutput()
	w.count(&w.Logs, string(out), err, func(out string) bool { return strings.HasPrefix(out, "hello from "+w.Node+" ") })
	execOut, err := w.exec(reqCtx)
	w.count(&w.Exec, execOut, err, execOK)
}

// exec runs a command in the test pod through the API server (kubectl
// exec), for up to 10 s.
func (w *Watch) exec(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, w.Kubectl, "--kubeconfig", w.CP.AdminKubeconfig, "exec", "-n", "default", w.Pod, "--", noderuntime.ImageBinary, "echo", "exec", "ok").CombinedOutput()
	return string(out), err
}

// ExecUncounted runs the command in the test pod through the API server
// once, outside the tallies: nil if it answered.
func (w *Watch) ExecUncounted(ctx context.Context) error {
	out, err := w.exec(ctx)
	if err == nil && !execOK(out) {
		err = fmt.Errorf("exec answered %q", out)
	}
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(out))
	}
	return nil
}

// execOK: the command exec ran answered.
func execOK(out string) bool { return strings.TrimSpace(out) == "exec ok" }

func (w *Watch) count(t *Tally, out string, err error, ok func(string) bool) {
	if err != nil || !ok(out) {
		t.Errs = append(t.Errs, fmt.Sprintf("+%s: %q %v", time.Since(w.Start).Round(time.Second), out, err))
		return
	}
	switch {
	case len(w.Serving) < 2:
		t.Before++
	case len(w.Served) > 0 && w.Served[len(w.Served)-1].Serial != w.Serving[0].Serial:
		t.After++
	}
}

// ServedSince is when the kubelet first presented serial.
func (w *Watch) ServedSince(serial string) (time.Time, bool) {
	for _, s := range w.Served {
		if s.Serial == serial {
			return s.Seen, true
		}
	}
	return time.Time{}, false
}

// MaxLeaseGap is the longest time between successive Lease renewals seen,
// counting from the last one to now.
func (w *Watch) MaxLeaseGap(now time.Time) time.Duration {
	var gap time.Duration
	for i := 1; i < len(w.Leases); i++ {
		gap = max(gap, w.Leases[i].Sub(w.Leases[i-1]))
	}
	if len(w.Leases) > 0 {
		gap = max(gap, now.Sub(w.Leases[len(w.Leases)-1]))
	}
	return gap
}

func x509Pool(pemData []byte) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	return pool
}
