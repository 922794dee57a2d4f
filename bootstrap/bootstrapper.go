package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/bootstrap/apiclient"
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
	// TrustCAFile, if set, is the file kubelet.conf names as its CA
	// (trust.follow): written with the CA of the kubeconfig the client
	// certificate came with, then kept by the agent.
	TrustCAFile string
	// Attestation, if set, is a way to a first client certificate beside the
	// bootstrap kubeconfig (and before it unless AfterToken).
	Attestation *Attestation
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
	// Clock is the time source (also for the waits between watches); default the real clock.
	Clock clock.Clock
	// Logger receives structured progress; default a no-op logger.
	Logger *zap.Logger
	// Clients builds the API clients, one transport per credential; default
	// a Clients of this Bootstrapper's own (NewClients).
	Clients *apiclient.Clients
	// NewCSRClient, if set, builds the CSR client for a credential instead
	// of Clients (tests inject a fake API).
	NewCSRClient func(*rest.Config) (apiclient.CSRClient, error)
	// NewEventClient, if set, builds the Event client for the node's
	// credential instead of Clients (tests inject a fake).
	NewEventClient func(*rest.Config) (apiclient.EventClient, error)
	// CheckIdentity, if set, proves that a kubeconfig authenticates as the
	// node instead of a SelfSubjectReview over Clients.
	CheckIdentity func(ctx context.Context, rc *rest.Config, node string) error
	// OnWaiting, if set, hears when a CSR has been posted (or found) and is
	// being waited on (csrName), and when the wait is over (csrName "").
	OnWaiting func(kind Kind, csrName string)
	// OnServingNames, if set, hears, once a serving CSR waits for approval,
	// which of its names the node's Node object does not report, in plain
	// words (none: every name is reported).
	OnServingNames func(csrName string, unreported []string)
	// NodeAddresses, if set, reads the Node's status.addresses with the
	// credential instead of Clients (tests inject a fake).
	NodeAddresses func(ctx context.Context, cred Credential, name string) ([]corev1.NodeAddress, error)
	// BeforeStore, if set, runs just before a certificate is stored; an error stops the store.
	BeforeStore func(kind Kind) error
	// OnIdentity, if set, hears every change of what is known about
	// kubelet.conf: accepted by the API server, rejected, or not confirmed.
	OnIdentity func(Identity)
	// OnBootstrapRemoved, if set, hears that the bootstrap kubeconfig at path
	// was removed (kubelet.conf was proven to work).
	OnBootstrapRemoved func(path string)
	// Keep is how many dated files of each kind are kept when pruning; default 3.
	Keep int
}

// Bootstrapper obtains and stores the kubelet's certificates.
type Bootstrapper struct {
	cfg Config
	log *zap.Logger

	mu       sync.Mutex
	identity identityRecord
	node     nodeCache // the last kubelet.conf parsed
	usable   map[Kind]usableCache
	// discarding is closed when the pending key of kind, whose certificate was stored, is removed.
	discarding map[Kind]chan struct{}
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Bootstrapper, error) {
	switch {
	case cfg.NodeName == "":
		return nil, errors.New("node name is empty")
	case cfg.CertDir == "" || cfg.KubeconfigPath == "" || cfg.BootstrapKubeconfigPath == "":
		return nil, errors.New("certDir, kubeconfig and bootstrapKubeconfig must all be set")
	case cfg.Attestation != nil && (cfg.Attestation.Attest == nil || cfg.Attestation.Server == "" || cfg.Attestation.CAFile == ""):
		return nil, errors.New("attestation needs the exchange, the API server and the cluster CA file")
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
	if cfg.Clients == nil {
		cfg.Clients = apiclient.NewClients()
	}
	b := &Bootstrapper{cfg: cfg, log: cfg.Logger, discarding: map[Kind]chan struct{}{}}
	if b.cfg.CheckIdentity == nil {
		b.cfg.CheckIdentity = b.checkIdentity
	}
	return b, nil
}

// Recover finishes what a crash interrupted: it removes temporary files left
// in the certificate and kubeconfig directories. Only the one writer of the
// directory may call it (package agent holds the lock).
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

// ServingRequest is the serving request this node would make now.
func (b *Bootstrapper) ServingRequest() Request {
	dns, ips := ServingSANs(b.cfg.NodeName, b.cfg.PrimaryIP(), b.cfg.ServingDNSNames, b.cfg.ServingIPs)
	return Request{Kind: Serving, NodeName: b.cfg.NodeName, DNSNames: dns, IPAddresses: ips, ExpirationSeconds: b.cfg.ExpirationSeconds}
}

// csrClient is the CSR client of cred.
func (b *Bootstrapper) csrClient(cred Credential) (apiclient.CSRClient, error) {
	if b.cfg.NewCSRClient != nil {
		return b.cfg.NewCSRClient(cred.Config)
	}
	forCredential := b.cfg.Clients.ForNode
	if cred.Bootstrap {
		forCredential = b.cfg.Clients.ForBootstrap
	}
	api, err := forCredential(cred.Config)
	if err != nil {
		return nil, err
	}
	return api.CSRs()
}

// NodeEventClient is the Event client of the node's own credential,
// kubelet.conf as it is now.
func (b *Bootstrapper) NodeEventClient() (apiclient.EventClient, error) {
	node, err := b.LoadNode()
	if err != nil {
		return nil, fmt.Errorf("no node credential for events: %w", err)
	}
	if b.cfg.NewEventClient != nil {
		return b.cfg.NewEventClient(node.Config)
	}
	api, err := b.cfg.Clients.ForNode(node.Config)
	if err != nil {
		return nil, err
	}
	return api.Events()
}

// CloseIdleConnections closes the idle connections of this Bootstrapper's
// clients (Clients.CloseIdleConnections) and returns the number of
// transports.
func (b *Bootstrapper) CloseIdleConnections() int { return b.cfg.Clients.CloseIdleConnections() }

// request builds the request of kind for this node.
func (b *Bootstrapper) request(kind Kind) Request {
	if kind == Serving {
		return b.ServingRequest()
	}
	return Request{Kind: Client, NodeName: b.cfg.NodeName, ExpirationSeconds: b.cfg.ExpirationSeconds}
}
