package bootstrap

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/cert"

	"github.com/certagent/certagent/bootstrap/apiclient"
)

// ensureCSR creates the CSR for req signed by key under its deterministic
// name, or adopts the one already there if it is ours (same signer, same
// subject, same public key). It returns the object as the server has it.
func ensureCSR(ctx context.Context, client apiclient.CSRClient, req Request, key crypto.Signer) (*certificatesv1.CertificateSigningRequest, bool, error) {
	name, err := req.CSRName(key.Public())
	if err != nil {
		return nil, false, err
	}
	subject := req.Subject()
	csrPEM, err := cert.MakeCSR(key, &subject, req.DNSNames, req.IPAddresses)
	if err != nil {
		return nil, false, fmt.Errorf("making CSR: %w", err)
	}
	obj := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    csrPEM,
			SignerName: req.Kind.Signer(),
			Usages:     req.Usages(),
		},
	}
	if req.ExpirationSeconds > 0 {
		secs := req.ExpirationSeconds
		obj.Spec.ExpirationSeconds = &secs
	}
	created, err := client.Create(ctx, obj, metav1.CreateOptions{})
	if err == nil {
		return created, true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, false, fmt.Errorf("creating CSR %s: %w", name, err)
	}
	existing, err := client.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, false, fmt.Errorf("reading existing CSR %s: %w", name, err)
	}
	if err := ensureCompatible(existing, obj, key); err != nil {
		return nil, false, fmt.Errorf("CSR %s %w: %v; certagent posts a new request with a new key", name, errNotOurs, err)
	}
	if err := sameNames(existing, req); err != nil {
		return nil, false, fmt.Errorf("CSR %s: %w", name, err)
	}
	return existing, false, nil
}

// errNotOurs marks a CSR under our name that another key or requester made.
var errNotOurs = errors.New("exists but is not ours")

// errStaleRequest marks an existing CSR of ours that asks for other names
// than the request we would make now.
var errStaleRequest = errors.New("pending CSR asks for other names")

func sameNames(existing *certificatesv1.CertificateSigningRequest, req Request) error {
	got, err := parseCSR(existing.Spec.Request)
	if err != nil {
		return err
	}
	ips := func(l []net.IP) []string {
		out := make([]string, len(l))
		for i, ip := range l {
			out[i] = ip.String()
		}
		slices.Sort(out)
		return out
	}
	dns := func(l []string) []string { c := slices.Clone(l); slices.Sort(c); return c }
	if !slices.Equal(dns(got.DNSNames), dns(req.DNSNames)) || !slices.Equal(ips(got.IPAddresses), ips(req.IPAddresses)) {
		return fmt.Errorf("%w: it has %v %v, the node now wants %v %v", errStaleRequest, got.DNSNames, got.IPAddresses, req.DNSNames, req.IPAddresses)
	}
	return nil
}

// ensureCompatible accepts an existing CSR only if it asks for the same signer
// and subject and was signed by our key (client-go's rule).
func ensureCompatible(existing, want *certificatesv1.CertificateSigningRequest, key crypto.Signer) error {
	if existing.Spec.SignerName != want.Spec.SignerName {
		return fmt.Errorf("signer %q, want %q", existing.Spec.SignerName, want.Spec.SignerName)
	}
	got, err := parseCSR(existing.Spec.Request)
	if err != nil {
		return err
	}
	exp, err := parseCSR(want.Spec.Request)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(got.Subject.CommonName, exp.Subject.CommonName) ||
		!reflect.DeepEqual(got.Subject.Organization, exp.Subject.Organization) {
		return fmt.Errorf("subject %q, want %q", got.Subject, exp.Subject)
	}
	if err := got.CheckSignature(); err != nil {
		return fmt.Errorf("checking signature: %w", err)
	}
	if !publicKeysEqual(got.PublicKey, key.Public()) {
		return fmt.Errorf("signed by another key")
	}
	return nil
}

func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("spec.request is not a PEM CERTIFICATE REQUEST")
	}
	return x509.ParseCertificateRequest(block.Bytes)
}

type equaler interface{ Equal(crypto.PublicKey) bool }

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
