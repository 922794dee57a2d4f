package bootstrap

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	certificatesv1 "k8s.io/api/certificates/v1"
)

// TestCertificateStoredNamesItsCSR: the "certificate stored" line says which
// certificate, from which CSR of which signer, where, and until when: the
// line an operator greps for, and the fleet suite reads (its signer tells a
// serving certificate).
func TestCertificateStoredNamesItsCSR(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	core, logs := observer.New(zapcore.InfoLevel)
	f.cfg.Logger = zap.New(core)
	b := f.bootstrapper()
	if _, err := b.EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := b.EnsureServing(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"client": certificatesv1.KubeAPIServerClientKubeletSignerName, "server": certificatesv1.KubeletServingSignerName}
	stored := logs.FilterMessage("certificate stored").All()
	if len(stored) != 2 {
		t.Fatalf("%d \"certificate stored\" lines, want 2", len(stored))
	}
	for _, e := range stored {
		fields := e.ContextMap()
		kind, _ := fields["certificate"].(string)
		if fields["signer"] != want[kind] || fields["csr"] == nil || fields["path"] == nil || fields["not_after"] == nil {
			t.Errorf("the %q line of the %s certificate has fields %v, want its csr, signer %s, path and not_after", e.Message, kind, fields, want[kind])
		}
	}
}
