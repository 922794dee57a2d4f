// Package inittls makes the attestation service's TLS material, once, with
// the operator's credentials (certagent-cluster init-tls): a CA of the
// service's own, kept in a Secret nothing mounts, and a serving certificate
// for the addresses nodes dial, in the kubernetes.io/tls Secret the
// Deployment mounts. Nodes trust the service by that CA (its PEM, or its
// hash, in their user-data), never by the system roots.
//
// Run again, it keeps the CA (so user-data stays valid) and issues a new
// serving certificate, for new SANs or before the old one expires; the
// service reloads it from the mounted Secret. The service itself never reads
// Secrets: it has no RBAC for them.
package inittls

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/protocol/attestation"
)

// Default Secret names (packaging/cluster/30-deployment.yaml mounts TLSSecret).
const (
	TLSSecret = "certagent-cluster-tls"
	CASecret  = "certagent-cluster-ca"
)

// Options configure Run.
type Options struct {
	// Client has the operator's credentials: it reads and writes the two
	// Secrets. Required.
	Client kubernetes.Interface
	// Namespace is the service's namespace. Required.
	Namespace string
	// TLSSecret and CASecret name the Secrets; the defaults if empty.
	TLSSecret, CASecret string
	// SANs are the DNS names and IP addresses nodes use to reach the
	// service (a node port's host, a load balancer, an ingress name): at
	// least one. A joining node has no kube-proxy, so the Service's cluster
	// IP and cluster DNS name are no use to it.
	SANs []string
	// Validity is the serving certificate's lifetime; a year if zero.
	Validity time.Duration
	// NewCA makes a new CA even if one exists: every node's user-data must
	// then carry the new one.
	NewCA bool
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Result is what the operator needs: the CA to put in user-data.
type Result struct {
	// CAHash is attestation.ServiceCAHash of the CA.
	CAHash string
	// CAPEM is the CA certificate.
	CAPEM []byte
	// CACreated says the CA is new (user-data must carry it), not reused.
	CACreated bool
	// NotAfter is when the serving certificate expires.
	NotAfter time.Time
}

// Run makes or reuses the CA and writes a new serving certificate.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	secrets := o.Client.CoreV1().Secrets(o.Namespace)
	ca, created, err := ensureCA(ctx, secrets, o)
	if err != nil {
		return nil, err
	}
	leafPEM, keyPEM, notAfter, err := ca.issueServing(o.SANs, o.Now(), o.Validity)
	if err != nil {
		return nil, err
	}
	tlsSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: o.TLSSecret, Namespace: o.Namespace, Labels: labels()},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			// The CA after the leaf: a node pinning the CA by hash finds it
			// in the handshake.
			corev1.TLSCertKey:       append(leafPEM, ca.certPEM...),
			corev1.TLSPrivateKeyKey: keyPEM,
			"ca.crt":                ca.certPEM,
		},
	}
	if err := createOrReplace(ctx, secrets, tlsSecret); err != nil {
		return nil, err
	}
	return &Result{CAHash: attestation.ServiceCAHash(ca.cert), CAPEM: ca.certPEM, CACreated: created, NotAfter: notAfter}, nil
}

func (o *Options) defaults() error {
	if o.Client == nil || o.Namespace == "" {
		return errors.New("init-tls: a client and --namespace are required")
	}
	if len(o.SANs) == 0 {
		return errors.New("init-tls: at least one --san is required: the address nodes use to reach the service (a node's address for the NodePort, or a load balancer's)")
	}
	for _, san := range o.SANs {
		if net.ParseIP(san) == nil && len(validation.IsDNS1123Subdomain(strings.TrimPrefix(san, "*."))) > 0 {
			return fmt.Errorf("init-tls: --san %q is neither an IP address nor a DNS name", san)
		}
	}
	if o.TLSSecret == "" {
		o.TLSSecret = TLSSecret
	}
	if o.CASecret == "" {
		o.CASecret = CASecret
	}
	if o.Validity == 0 {
		o.Validity = 365 * 24 * time.Hour
	}
	if o.Validity < time.Hour {
		return fmt.Errorf("init-tls: --validity %v is under an hour", o.Validity)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

func labels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": "certagent-cluster"}
}

// secretClient is the part of the Secrets API init-tls uses.
type secretClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error)
	Create(ctx context.Context, s *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error)
	Update(ctx context.Context, s *corev1.Secret, opts metav1.UpdateOptions) (*corev1.Secret, error)
}

// createOrReplace creates s, or replaces the data of the Secret of its name.
func createOrReplace(ctx context.Context, secrets secretClient, s *corev1.Secret) error {
	_, err := secrets.Create(ctx, s, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("creating Secret %s/%s: %w", s.Namespace, s.Name, err)
		}
		return nil
	}
	old, err := secrets.Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if old.Type != s.Type {
		return fmt.Errorf("Secret %s/%s exists with type %s, not %s: delete it or choose another name", s.Namespace, s.Name, old.Type, s.Type)
	}
	old.Data, old.StringData = s.Data, nil
	if _, err := secrets.Update(ctx, old, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// ensureCA loads the CA from its Secret, or makes one (always with NewCA)
// and stores it; created says which.
func ensureCA(ctx context.Context, secrets secretClient, o Options) (*authority, bool, error) {
	if !o.NewCA {
		s, err := secrets.Get(ctx, o.CASecret, metav1.GetOptions{})
		if err == nil {
			ca, err := parseAuthority(s.Data["ca.crt"], s.Data["ca.key"])
			if err != nil {
				return nil, false, fmt.Errorf("reading the CA in Secret %s/%s: %w; --new-ca replaces it (and every node's user-data must then carry the new one)", o.Namespace, o.CASecret, err)
			}
			return ca, false, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, false, fmt.Errorf("reading Secret %s/%s: %w", o.Namespace, o.CASecret, err)
		}
	}
	ca, err := newAuthority(o.Now())
	if err != nil {
		return nil, false, err
	}
	err = createOrReplace(ctx, secrets, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: o.CASecret, Namespace: o.Namespace, Labels: labels()},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"ca.crt": ca.certPEM, "ca.key": ca.keyPEM},
	})
	if err != nil {
		return nil, false, err
	}
	return ca, true, nil
}
