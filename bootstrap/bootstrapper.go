package bootstrap

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/certagent/certagent/internal/failpoint"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/internal/atomicfile"
)

// Config configures a Bootstrapper.
type Config struct {
	// NodeName is the node's name; the certificates are for system:node:<NodeName>.
	NodeName string
	// CertDir holds kubelet-{client,server}-*.pem and the pending keys.
	CertDir string
	// KubeconfigPath is kubelet.conf, written after the client certificate.
	KubeconfigPath string
	// BootstrapKubeconfigPath holds the bootstrap token; deleted once kubelet.conf works.
	BootstrapKubeconfigPath string
	// IssuerCAFile, if set, is the CA issued certificates must chain to;
	// otherwise the cluster CA of the kubeconfig used to ask for them.
	IssuerCAFile string
	// AllowInsecureBootstrap accepts a bootstrap kubeconfig with insecure-skip-tls-verify.
	AllowInsecureBootstrap bool
	// ServingDNSNames and ServingIPs are added to the serving certificate's SANs.
	ServingDNSNames []string
	ServingIPs      []net.IP
	// PrimaryIP returns the node's primary address for the serving SANs; default PrimaryIP.
	PrimaryIP func() net.IP
	// ExpirationSeconds, if non-zero, is the requested certificate lifetime (minimum 600).
	ExpirationSeconds int32
	// Skew is how far in the future an issued certificate's NotBefore may be; default 2m.
	Skew time.Duration
	// Clock is the time source; default the real clock.
	Clock clock.PassiveClock
	// Logger receives structured progress; default a no-op logger.
	Logger *zap.Logger
	// NewCSRClient builds the CSR client for a credential; default client-go's typed client.
	NewCSRClient func(*rest.Config) (CSRClient, error)
	// CheckIdentity proves that a new kubeconfig authenticates as the node; default CheckIdentity.
	CheckIdentity func(ctx context.Context, rc *rest.Config, node string) error
	// OnWaiting, if set, is called when a CSR has been posted (or found) and is being waited on.
	OnWaiting func(kind Kind, csrName string)
	// OnStored, if set, is called after a certificate was stored at path (the current link).
	OnStored func(kind Kind, path string, leaf *x509.Certificate)
	// Keep is how many dated files of each kind are kept when pruning; default 3.
	Keep int
}

// Bootstrapper obtains and stores the kubelet's certificates.
type Bootstrapper struct {
	cfg Config
	log *zap.Logger
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Bootstrapper, error) {
	switch {
	case cfg.NodeName == "":
		return nil, errors.New("node name is empty")
	case cfg.CertDir == "" || cfg.KubeconfigPath == "" || cfg.BootstrapKubeconfigPath == "":
		return nil, errors.New("certDir, kubeconfig and bootstrapKubeconfig must all be set")
	case cfg.ExpirationSeconds != 0 && cfg.ExpirationSeconds < 600:
		return nil, fmt.Errorf("requested duration %ds is below the API minimum of 600s", cfg.ExpirationSeconds)
	}
	if cfg.PrimaryIP == nil {
		cfg.PrimaryIP = PrimaryIP
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 3
	}
	if cfg.Skew == 0 {
		cfg.Skew = 2 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.NewCSRClient == nil {
		cfg.NewCSRClient = NewCSRClient
	}
	if cfg.CheckIdentity == nil {
		cfg.CheckIdentity = CheckIdentity
	}
	return &Bootstrapper{cfg: cfg, log: cfg.Logger}, nil
}

// Recover finishes what a crash interrupted: it removes temporary files left
// in the certificate and kubeconfig directories.
func (b *Bootstrapper) Recover() error {
	for _, dir := range []string{b.cfg.CertDir, filepath.Dir(b.cfg.KubeconfigPath)} {
		removed, err := atomicfile.Cleanup(dir)
		if err != nil {
			return err
		}
		for _, n := range removed {
			b.log.Info("removed temporary file left by an interrupted write", zap.String("path", filepath.Join(dir, n)))
		}
	}
	return nil
}

// ValidClient loads kubelet.conf and returns it with its client certificate
// if that certificate is valid now.
func (b *Bootstrapper) ValidClient() (*rest.Config, *x509.Certificate, error) {
	rc, err := LoadKubeletKubeconfig(b.cfg.KubeconfigPath)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := ClientCertificate(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig %s: %w", b.cfg.KubeconfigPath, err)
	}
	if now := b.cfg.Clock.Now(); !ValidAt(leaf, now) {
		return nil, leaf, fmt.Errorf("the client certificate of %s is valid from %s to %s, not now", b.cfg.KubeconfigPath,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return rc, leaf, nil
}

// EnsureClient makes sure kubelet.conf holds a valid client certificate,
// bootstrapping from the bootstrap kubeconfig if it does not, and returns a
// client configuration with the node's identity. It reports whether it
// obtained a new certificate.
func (b *Bootstrapper) EnsureClient(ctx context.Context) (*rest.Config, bool, error) {
	rc, _, err := b.ValidClient()
	if err == nil {
		b.RemoveBootstrapIfProven(ctx, rc)
		return rc, false, nil
	}
	rc, err = b.Bootstrap(ctx, err)
	return rc, err == nil, err
}

// Bootstrap obtains the client certificate with the bootstrap kubeconfig
// (reason says why kubelet.conf will not do), writes kubelet.conf, proves it
// works and deletes the bootstrap kubeconfig. It returns the node's
// credentials.
func (b *Bootstrapper) Bootstrap(ctx context.Context, reason error) (*rest.Config, error) {
	if errors.Is(reason, os.ErrNotExist) {
		reason = fmt.Errorf("%s does not exist", b.cfg.KubeconfigPath)
	}
	boot, err := LoadBootstrapKubeconfig(b.cfg.BootstrapKubeconfigPath, b.cfg.AllowInsecureBootstrap)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %v, and there is no bootstrap kubeconfig at %s: write a bootstrap-token kubeconfig there (see the README)", ErrNoCredentials, reason, b.cfg.BootstrapKubeconfigPath)
	}
	if err != nil {
		return nil, err
	}
	b.warnIfReadable(b.cfg.BootstrapKubeconfigPath)
	b.log.Info("bootstrapping the client certificate", zap.String("reason", reason.Error()),
		zap.String("bootstrap_kubeconfig", b.cfg.BootstrapKubeconfigPath), zap.String("server", boot.Host))
	if b.storedClientUsable(boot) {
		// A bootstrap interrupted after storing the certificate: finish it
		// with that certificate instead of asking for another.
		b.log.Info("finishing an interrupted bootstrap with the client certificate already stored", zap.String("path", CurrentPath(b.cfg.CertDir, Client)))
	} else if _, err := b.Obtain(ctx, Client, boot, b.cfg.BootstrapKubeconfigPath); err != nil {
		return nil, err
	}
	if err := writeKubeletKubeconfig(b.cfg.KubeconfigPath, boot, CurrentPath(b.cfg.CertDir, Client)); err != nil {
		return nil, err
	}
	failpoint.Inject("client.kubeconfig-written")
	rc, err := LoadKubeletKubeconfig(b.cfg.KubeconfigPath)
	if err != nil {
		return nil, fmt.Errorf("reading back %s: %w", b.cfg.KubeconfigPath, err)
	}
	if err := b.cfg.CheckIdentity(ctx, rc, b.cfg.NodeName); err != nil {
		return nil, fmt.Errorf("%s was written but does not work yet, so the bootstrap kubeconfig is kept: %w", b.cfg.KubeconfigPath, err)
	}
	b.log.Info("kubelet.conf works", zap.String("kubeconfig", b.cfg.KubeconfigPath), zap.String("user", "system:node:"+b.cfg.NodeName))
	failpoint.Inject("client.proven")
	return rc, b.removeBootstrap()
}

// RemoveBootstrapIfProven deletes a bootstrap kubeconfig still lying next to
// a working kubelet.conf (a crash between proving and deleting, or a token
// dropped on a healthy node). Failures are logged: the node works either way.
func (b *Bootstrapper) RemoveBootstrapIfProven(ctx context.Context, rc *rest.Config) {
	if _, err := os.Stat(b.cfg.BootstrapKubeconfigPath); err != nil {
		return
	}
	if err := b.cfg.CheckIdentity(ctx, rc, b.cfg.NodeName); err != nil {
		b.log.Warn("keeping the bootstrap kubeconfig: kubelet.conf could not be proven to work", zap.Error(err))
		return
	}
	if err := b.removeBootstrap(); err != nil {
		b.log.Warn("removing the bootstrap kubeconfig", zap.Error(err))
	}
}

func (b *Bootstrapper) removeBootstrap() error {
	if err := os.Remove(b.cfg.BootstrapKubeconfigPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing bootstrap kubeconfig: %w", err)
	}
	b.log.Info("removed the bootstrap kubeconfig", zap.String("path", b.cfg.BootstrapKubeconfigPath))
	// No directory fsync: kubelet.conf is already durable, and a removal lost
	// in a crash is redone at the next start (removeBootstrapIfProven).
	return nil
}

// ServingRequest is the serving request this node would make now.
func (b *Bootstrapper) ServingRequest() Request {
	dns, ips := ServingSANs(b.cfg.NodeName, b.cfg.PrimaryIP(), b.cfg.ServingDNSNames, b.cfg.ServingIPs)
	return Request{Kind: Serving, NodeName: b.cfg.NodeName, DNSNames: dns, IPAddresses: ips, ExpirationSeconds: b.cfg.ExpirationSeconds}
}

// EnsureServing makes sure a valid serving certificate covering the wanted
// SANs is stored, requesting one with the node's identity node if not. It
// reports whether it obtained a new certificate.
func (b *Bootstrapper) EnsureServing(ctx context.Context, node *rest.Config) (bool, error) {
	pair, err := LoadCurrent(b.cfg.CertDir, Serving)
	if err == nil && b.ServingOK(pair.Leaf) {
		return false, nil
	}
	if _, err := b.Obtain(ctx, Serving, node, b.cfg.KubeconfigPath); err != nil {
		return false, err
	}
	return true, nil
}

// ServingOK reports whether c is valid now and carries every name the node
// wants on its serving certificate.
func (b *Bootstrapper) ServingOK(c *x509.Certificate) bool {
	return ValidAt(c, b.cfg.Clock.Now()) && covers(c, b.ServingRequest())
}

func covers(c *x509.Certificate, req Request) bool {
	for _, d := range req.DNSNames {
		if !slices.Contains(c.DNSNames, d) {
			return false
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// request builds the request of kind for this node.
func (b *Bootstrapper) request(kind Kind) Request {
	if kind == Serving {
		return b.ServingRequest()
	}
	return Request{Kind: Client, NodeName: b.cfg.NodeName, ExpirationSeconds: b.cfg.ExpirationSeconds}
}

// RenewClient renews a valid client certificate with the node's own identity
// rc and, if kubelet.conf does not yet reference the current link (say it was
// written by kubeadm with an embedded certificate), rewrites it to do so.
func (b *Bootstrapper) RenewClient(ctx context.Context, rc *rest.Config) error {
	if _, err := b.Obtain(ctx, Client, rc, b.cfg.KubeconfigPath); err != nil {
		return err
	}
	current := CurrentPath(b.cfg.CertDir, Client)
	if rc.CertFile == current && rc.KeyFile == current {
		return nil
	}
	b.log.Info("rewriting kubelet.conf to reference the renewed certificate", zap.String("kubeconfig", b.cfg.KubeconfigPath))
	return writeKubeletKubeconfig(b.cfg.KubeconfigPath, rc, current)
}

// storedClientUsable reports whether kubelet-client-current.pem already holds
// a certificate for this node that verifies against the cluster CA of boot
// and is valid now.
func (b *Bootstrapper) storedClientUsable(boot *rest.Config) bool {
	path := CurrentPath(b.cfg.CertDir, Client)
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	pair, err := LoadPair(path)
	if err != nil {
		return false
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return false
	}
	roots, err := caPool(boot, b.cfg.IssuerCAFile)
	if err != nil {
		return false
	}
	_, err = VerifyIssued(data, key, b.request(Client), VerifyOptions{Roots: roots, Now: b.cfg.Clock.Now(), Skew: b.cfg.Skew})
	return err == nil
}
