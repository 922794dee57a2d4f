package bootstrap

import (
	"context"
	"encoding/pem"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/rest"
)

// TestBootstrapProvesWhileWriting: a bootstrap asks the API server once,
// with the issued certificate and key in memory, while the files are
// written; the files then hold exactly what was proven, so kubelet.conf is
// accepted and the bootstrap kubeconfig removed without a second request.
func TestBootstrapProvesWhileWriting(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	var calls, fromMemory atomic.Int32
	f.cfg.CheckIdentity = func(_ context.Context, rc *rest.Config, node string) error {
		calls.Add(1)
		if len(rc.CertData) > 0 && rc.CertFile == "" && rc.BearerToken == "" && node == "node-a" {
			fromMemory.Add(1)
		}
		return nil
	}
	b := f.bootstrapper()
	if _, err := b.EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || fromMemory.Load() != 1 {
		t.Fatalf("%d identity checks (%d with the certificate in memory, no token), want exactly 1", calls.Load(), fromMemory.Load())
	}
	if !b.Identity().Accepted || exists(f.cfg.BootstrapKubeconfigPath) {
		t.Fatalf("accepted %v, bootstrap kubeconfig left %v", b.Identity().Accepted, exists(f.cfg.BootstrapKubeconfigPath))
	}
}

// TestEarlyProofProvesOnlyTheProvenFiles: a proof of one certificate says
// nothing about files that hold another (or a key that is not its pair),
// another server or CA, or a proof that failed.
func TestEarlyProofProvesOnlyTheProvenFiles(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	b := f.bootstrapper()
	if _, err := b.EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	node, err := b.LoadNode()
	if err != nil {
		t.Fatal(err)
	}
	boot := &rest.Config{Host: node.Config.Host, TLSClientConfig: rest.TLSClientConfig{CAFile: node.Config.CAFile}}
	pemData, err := os.ReadFile(node.Config.CertFile) // certificate and key, as stored
	if err != nil {
		t.Fatal(err)
	}
	other := newFixture(t)
	other.autoApprove()
	ob := other.bootstrapper()
	if _, err := ob.EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := os.ReadFile(CurrentPath(other.cfg.CertDir, Client))
	proof := func(data []byte, err error) *earlyProof {
		block, _ := pem.Decode(data)
		p := &earlyProof{cert: block.Bytes, done: make(chan error, 1)}
		p.done <- err
		return p
	}
	otherServer := *boot
	otherServer.Host = "https://10.9.9.9:6443"
	otherCA := *boot
	otherCA.CAFile = other.cfg.CertDir
	for _, c := range []struct {
		name string
		p    *earlyProof
		boot *rest.Config
		want bool
	}{
		{"the files proven", proof(pemData, nil), boot, true},
		{"no proof", nil, boot, false},
		{"the proof failed", proof(pemData, context.DeadlineExceeded), boot, false},
		{"another certificate", proof(otherPEM, nil), boot, false},
		{"another server", proof(pemData, nil), &otherServer, false},
		{"another CA", proof(pemData, nil), &otherCA, false},
	} {
		if got := c.p.provesFiles(context.Background(), node, c.boot); got != c.want {
			t.Errorf("%s: provesFiles = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestLoadNodeReadsWhatWasWrittenWithoutParsingIt: kubelet.conf written by
// a bootstrap is parsed while it is committed, and LoadNode takes that
// parse for the file holding exactly those bytes; a file changed since is
// parsed afresh.
func TestLoadNodeReadsWhatWasWrittenWithoutParsingIt(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	b := f.bootstrapper()
	if _, err := b.EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	written := b.written.rc
	b.mu.Unlock()
	b.node = nodeCache{} // as a restarted LoadNode would find it
	node, err := b.LoadNode()
	if err != nil {
		t.Fatal(err)
	}
	if written == nil || node.Config != written {
		t.Fatal("LoadNode parsed kubelet.conf again instead of taking the parse of what was written")
	}
	data, err := os.ReadFile(f.cfg.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(data), "namespace: default", "namespace: kube-system", 1)
	if changed == string(data) {
		t.Fatal("kubelet.conf has no namespace to change")
	}
	if err := os.WriteFile(f.cfg.KubeconfigPath, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	if node, err = b.LoadNode(); err != nil {
		t.Fatal(err)
	}
	if node.Config == written {
		t.Fatal("LoadNode took the parse of what was written for a file that changed since")
	}
}
