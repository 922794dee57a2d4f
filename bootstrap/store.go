package bootstrap

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/bootstrap/kubeconfig"
	"github.com/certagent/certagent/internal/failpoint"

	"github.com/certagent/certagent/internal/atomicfile"
)

// The kubelet's layout (client-go util/certificate FileStore): each issued
// certificate is <prefix>-YYYY-MM-DD-HH-MM-SS.pem holding the certificate chain
// then the key (0600), and <prefix>-current.pem is a symlink to the newest.
// Unlike the kubelet we swap the link atomically (rename over it), fsync the
// directory and prune old files.

// TimestampLayout is the time stamp in the dated file names (UTC).
const TimestampLayout = "2006-01-02-15-04-05"

// CurrentPath is the path of the <prefix>-current.pem link for kind.
func CurrentPath(certDir string, kind Kind) string {
	return filepath.Join(certDir, kind.FilePrefix()+"-current.pem")
}

// EnsureCertDir creates the certificate directory (0700) if it is missing,
// durably (a key written into it next must not outlive the directory).
func EnsureCertDir(certDir string) error {
	if err := atomicfile.MkdirAll(certDir, 0o700); err != nil {
		return fmt.Errorf("creating certificate directory: %w", err)
	}
	return nil
}

// storeCertificate writes chain+key as a new dated file and points the
// current link at it. On error the previous current link is untouched.
func storeCertificate(certDir string, kind Kind, chainPEM, keyPEM []byte, now time.Time) (string, error) {
	name := fmt.Sprintf("%s-%s.pem", kind.FilePrefix(), now.UTC().Format(TimestampLayout))
	path := filepath.Join(certDir, name)
	data := make([]byte, 0, len(chainPEM)+len(keyPEM)+1)
	data = append(data, chainPEM...)
	if len(chainPEM) > 0 && chainPEM[len(chainPEM)-1] != '\n' {
		data = append(data, '\n')
	}
	data = append(data, keyPEM...)
	if _, err := tls.X509KeyPair(data, data); err != nil {
		return "", fmt.Errorf("refusing to store a certificate and key that do not form a pair: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("writing %s certificate: %w", kind, err)
	}
	// A relative target keeps working if the directory is moved or mounted elsewhere.
	if err := atomicfile.Symlink(name, CurrentPath(certDir, kind)); err != nil {
		return "", fmt.Errorf("updating %s: %w", CurrentPath(certDir, kind), err)
	}
	touchPrevious(certDir, kind, name)
	return CurrentPath(certDir, kind), nil
}

// touchPrevious tells inotify watchers of the -current.pem link that it
// moved. The kubelet watches tlsCertFile with inotify (k8s.io/apiserver
// dynamiccertificates through fsnotify), which follows the link when the
// watch is set: it watches the dated file that was current then, and swapping
// the link changes nothing in that file, so the kubelet went on serving the
// certificate it started with past its expiry (TestKubeletLivesOnCertagentFiles).
// A chmod to the mode the file has changes nothing either but raises an
// attribute event on each older dated file, and the kubelet re-reads
// tlsCertFile by its path on any event; a file pruned later raises its own
// (delete) event, on which the kubelet watches the link afresh. Failures are
// ignored: the certificate is stored; this only spares watchers a wait.
func touchPrevious(certDir string, kind Kind, current string) {
	names, _ := datedFiles(certDir, kind)
	for _, n := range names {
		p := filepath.Join(certDir, n)
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && n != current {
			_ = os.Chmod(p, fi.Mode().Perm())
		}
	}
}

// LoadCurrent reads <prefix>-current.pem. It returns an error wrapping
// os.ErrNotExist when there is none.
func LoadCurrent(certDir string, kind Kind) (*tls.Certificate, error) {
	return LoadPair(CurrentPath(certDir, kind))
}

// CurrentLeaf is the certificate (not the key) of kind's current file: for
// reporting and for comparing public keys, where LoadPair's check that the
// key matches (a scalar multiplication) would be wasted.
func CurrentLeaf(certDir string, kind Kind) (*x509.Certificate, error) {
	data, err := os.ReadFile(CurrentPath(certDir, kind))
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// LoadPair reads a PEM file holding a certificate chain and its key and
// checks that they match.
func LoadPair(path string) (*tls.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(data, data)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", path, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", path, err)
		}
	}
	return &pair, nil
}

// ValidAt reports whether c is within its validity period at t.
func ValidAt(c *x509.Certificate, t time.Time) bool {
	return !t.Before(c.NotBefore) && t.Before(c.NotAfter)
}

// usableNow reports whether a stored certificate can be used now: valid, or
// starting within the clock skew certagent tolerates when it accepts a new
// certificate. Judging stored certificates more strictly than new ones made
// a node whose clock was a few minutes behind request certificate after
// certificate, each "not yet valid" (found by the simulation).
func (b *Bootstrapper) usableNow(c *x509.Certificate) bool {
	now := b.cfg.Clock.Now()
	return !now.Add(b.cfg.Skew).Before(c.NotBefore) && now.Before(c.NotAfter)
}

// Prune removes dated files of kind beyond the newest keep, never the one the
// current link points to. It returns the removed names.
func Prune(certDir string, kind Kind, keep int) ([]string, error) {
	dated, err := datedFiles(certDir, kind)
	if err != nil {
		return nil, err
	}
	current, _ := os.Readlink(CurrentPath(certDir, kind))
	var removed []string
	for i, n := range dated {
		if i < keep || n == filepath.Base(current) {
			continue
		}
		failpoint.Inject("prune.remove")
		if err := os.Remove(filepath.Join(certDir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("pruning: %w", err)
		}
		removed = append(removed, n)
	}
	if len(removed) > 0 {
		return removed, atomicfile.SyncDir(certDir)
	}
	return nil, nil
}

// datedFiles lists the names of kind's dated files in certDir, newest first.
func datedFiles(certDir string, kind Kind) ([]string, error) {
	entries, err := os.ReadDir(certDir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", certDir, err)
	}
	prefix := kind.FilePrefix() + "-"
	var dated []string
	for _, e := range entries {
		n := e.Name()
		stamp := strings.TrimSuffix(strings.TrimPrefix(n, prefix), ".pem")
		if !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, ".pem") || len(stamp) != len(TimestampLayout) {
			continue
		}
		if _, err := time.Parse(TimestampLayout, stamp); err != nil {
			continue
		}
		dated = append(dated, n)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dated))) // newest first
	return dated, nil
}

// writeKubeletKubeconfig writes kubelet.conf for cluster atomically (through
// a symlink: the link stays and its target is replaced).
func (b *Bootstrapper) writeKubeletKubeconfig(cluster *clientcmdapi.Cluster) error {
	cluster, err := b.withTrustFile(cluster)
	if err != nil {
		return err
	}
	data, err := kubeconfig.EncodeKubelet(cluster, CurrentPath(b.cfg.CertDir, Client))
	if err != nil {
		return err
	}
	target, err := kubeconfig.LinkTarget(b.cfg.KubeconfigPath)
	if err != nil {
		return err
	}
	if err := CheckDirSafe(filepath.Dir(target)); err != nil {
		return err
	}
	if err := atomicfile.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("creating directory for %s: %w", target, err)
	}
	if err := atomicfile.WriteFile(target, data, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", target, err)
	}
	return nil
}
