package controlplane_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// TestCARotationPhases runs the five phases of a CA rotation back to back
// and checks that each did what it says: the published bundles, the
// certificate the API server presents, the CA kubelet CSRs are signed by.
func TestCARotationPhases(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bins, err := controlplane.EnsureBinaries(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.Start(ctx, bins, controlplane.Options{Dir: t.TempDir(), Logf: t.Logf, PublishServingTrust: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	old := cp.CACertPEM
	if err := cp.WaitPublished(ctx, controlplane.ServingSigner, old); err != nil {
		t.Fatal(err)
	}

	run(t, "AddCA", cp.AddCA(ctx))
	both := append(append([]byte(nil), old...), cp.NewCACertPEM()...)
	published(ctx, t, cp, controlplane.ServingSigner, both)
	newCA := parse(t, cp.NewCACertPEM())

	run(t, "SwitchServing", cp.SwitchServing(ctx))
	if c, err := cp.ServingCert(ctx); err != nil || c.CheckSignatureFrom(newCA) != nil {
		t.Fatalf("after SwitchServing the API server presents %v (%v), not a certificate of the new CA", c.Issuer, err)
	}

	if c := probe(ctx, t, cp); c.CheckSignatureFrom(parse(t, old)) != nil {
		t.Fatalf("before SwitchSigners a kubelet CSR was signed by %s", c.Issuer)
	}
	run(t, "SwitchSigners", cp.SwitchSigners(ctx))
	if c := probe(ctx, t, cp); c.CheckSignatureFrom(newCA) != nil {
		t.Fatalf("after SwitchSigners a kubelet CSR was signed by %s", c.Issuer)
	}
	for _, s := range controlplane.KubeletSigners {
		published(ctx, t, cp, s, both)
	}

	run(t, "SwitchKubeletClient", cp.SwitchKubeletClient(ctx))
	run(t, "RemoveOldCA", cp.RemoveOldCA(ctx))
	for _, s := range append([]string{controlplane.ServingSigner}, controlplane.KubeletSigners...) {
		published(ctx, t, cp, s, cp.NewCACertPEM())
	}
	if _, err := cp.Admin.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("the admin, re-issued by the new CA, after RemoveOldCA: %v", err)
	}
}

func run(t *testing.T, phase string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", phase, err)
	}
	t.Logf("%s done", phase)
}

func published(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, signer string, want []byte) {
	t.Helper()
	got, err := cp.PublishedCAs(ctx, signer)
	if err != nil || !controlplane.SameCAs(got, want) {
		var names []string
		for _, c := range got {
			names = append(names, c.Subject.CommonName)
		}
		t.Fatalf("published bundle of %s: %v (%v), want the %d CAs of %q", signer, names, err, len(parseAll(t, want)), want)
	}
}

func probe(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane) *x509.Certificate {
	t.Helper()
	pemData, err := cp.SignProbeCSR(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, pemData)
}

func parse(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()
	return parseAll(t, pemData)[0]
}

func parseAll(t *testing.T, pemData []byte) []*x509.Certificate {
	t.Helper()
	certs, err := controlplane.ParseCerts(pemData)
	if err != nil || len(certs) == 0 {
		t.Fatalf("parsing %q: %v", pemData, err)
	}
	return certs
}
