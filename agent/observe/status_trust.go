package observe

import (
	"crypto/x509"
	"fmt"
	"io"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap/kubeconfig"
	"github.com/certagent/certagent/trust"
)

// TrustStatus is the trust the agent keeps from the cluster's published
// bundles (trust.follow): each file and the CAs in it.
type TrustStatus struct {
	CAFile              TrustFileStatus  `json:"caFile"`
	KubeletClientCAFile *TrustFileStatus `json:"kubeletClientCAFile,omitempty"`
}

// TrustFileStatus is one trust file.
type TrustFileStatus struct {
	Path  string   `json:"path"`
	CAs   []string `json:"cas,omitempty"` // each as trust.Describe says it
	Error string   `json:"error,omitempty"`
}

// readTrust is the trust section of the status, nil when not following.
func readTrust(cfg config.Config) *TrustStatus {
	if !cfg.Trust.Follow {
		return nil
	}
	st := &TrustStatus{CAFile: trustFile(cfg.TrustCAFile())}
	if p := cfg.Trust.KubeletClientCAFile; p != "" {
		f := trustFile(p)
		st.KubeletClientCAFile = &f
	}
	return st
}

func trustFile(path string) TrustFileStatus {
	st := TrustFileStatus{Path: path}
	b, err := trust.ReadBundle(path)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	for _, c := range b.CAs {
		st.CAs = append(st.CAs, trust.Describe(c))
	}
	return st
}

// knownCAs are the CAs the node has on disk: kubelet.conf's, the trust
// file's and issuerCAFile's.
func knownCAs(cfg config.Config) trust.Bundle {
	var parts []trust.Bundle
	if rc, err := kubeconfig.LoadKubelet(cfg.Kubeconfig); err == nil {
		if b, err := trust.ParseBundle(rc.CAData); err == nil {
			parts = append(parts, b)
		} else if b, err := trust.ReadBundle(rc.CAFile); err == nil {
			parts = append(parts, b)
		}
	}
	for _, p := range []string{cfg.IssuerCAFile, trustCAFileIfFollowing(cfg)} {
		if b, err := trust.ReadBundle(p); p != "" && err == nil {
			parts = append(parts, b)
		}
	}
	return trust.Merge(parts...)
}

func trustCAFileIfFollowing(cfg config.Config) string {
	if cfg.Trust.Follow {
		return cfg.TrustCAFile()
	}
	return ""
}

// signedBy names the CA of known that signed leaf, else leaf's issuer.
func signedBy(known trust.Bundle, leaf *x509.Certificate) string {
	if ca := known.SignerOf(leaf); ca != nil {
		return trust.Describe(ca)
	}
	return leaf.Issuer.CommonName + " (not a CA this node has)"
}

// writeText prints the trust section for people; nothing when not following.
func (t *TrustStatus) writeText(w io.Writer) {
	if t == nil {
		return
	}
	fmt.Fprintf(w, "\ntrust (following the cluster's published trust):\n")
	files := []TrustFileStatus{t.CAFile}
	names := []string{"kubelet.conf's CA"}
	if t.KubeletClientCAFile != nil {
		files, names = append(files, *t.KubeletClientCAFile), append(names, "kubelet client CA")
	}
	for i, f := range files {
		fmt.Fprintf(w, "  %s: %s\n", names[i], f.Path)
		if f.Error != "" {
			fmt.Fprintf(w, "    error: %s\n", f.Error)
		}
		for _, ca := range f.CAs {
			fmt.Fprintf(w, "    %s\n", ca)
		}
	}
}
