package bootstrap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/certagent/certagent/bootstrap/kubeconfig"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// source is a way to a first client certificate: the credential it is
// asked for with, and the cluster entry kubelet.conf then gets.
type source struct {
	name    string // SourceToken or SourceAttestation
	cred    Credential
	cluster *clientcmdapi.Cluster
}

// errNoSource: a source that is not there (no bootstrap kubeconfig, no
// attestation configured).
var errNoSource = errors.New("not there")

// sources returns the ways to a first client certificate in the order they
// are tried: attestation before a bootstrap kubeconfig unless AfterToken.
func (b *Bootstrapper) sources() []func() (*source, error) {
	if b.cfg.Attestation == nil {
		return []func() (*source, error){b.tokenSource}
	}
	if b.cfg.Attestation.AfterToken {
		return []func() (*source, error){b.tokenSource, b.attestSource}
	}
	return []func() (*source, error){b.attestSource, b.tokenSource}
}

// tokenSource is the bootstrap kubeconfig, if there is one.
func (b *Bootstrapper) tokenSource() (*source, error) {
	boot, err := kubeconfig.LoadBootstrap(b.cfg.BootstrapKubeconfigPath, b.cfg.AllowInsecureBootstrap)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoSource
	}
	if err != nil {
		return nil, err
	}
	b.warnIfReadable(b.cfg.BootstrapKubeconfigPath)
	return &source{name: SourceToken, cred: Credential{Config: boot.Config, Path: boot.Path, Bootstrap: true}, cluster: boot.Cluster}, nil
}

// attestSource is TPM attestation, if it is configured.
func (b *Bootstrapper) attestSource() (*source, error) {
	a := b.cfg.Attestation
	if a == nil {
		return nil, errNoSource
	}
	ca, err := filepath.Abs(a.CAFile)
	if err != nil {
		return nil, fmt.Errorf("resolving the cluster CA path: %w", err)
	}
	rc := &rest.Config{Host: a.Server, TLSClientConfig: rest.TLSClientConfig{CAFile: ca}}
	return &source{name: SourceAttestation, cred: Credential{Config: rc, Path: a.Service, attest: a.Attest},
		cluster: &clientcmdapi.Cluster{Server: a.Server, CertificateAuthority: ca}}, nil
}

// mostHopeful is the error of the source worth trying again soonest: a
// transient one if any (the attestation service restarting, say), else the
// last.
func mostHopeful(errs []error) error {
	for _, err := range errs {
		if IsTransient(err) {
			return err
		}
	}
	return errs[len(errs)-1]
}
