package observe

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/rotate"
)

// Status is what `certagent status -o json` prints (docs/status.md). Field
// names are stable: new fields may be added, none renamed or removed.
type Status struct {
	NodeName            string              `json:"nodeName"`
	Kubeconfig          FileStatus          `json:"kubeconfig"`
	BootstrapKubeconfig FileStatus          `json:"bootstrapKubeconfig"`
	Certificates        []CertificateStatus `json:"certificates"`
	// Trust is what the agent keeps of the cluster's published trust
	// (trust.follow); absent when not following.
	Trust *TrustStatus `json:"trust,omitempty"`
}

// FileStatus says whether a file is there.
type FileStatus struct {
	Path   string `json:"path"`
	Exists bool   `json:"exists"`
}

// CertificateStatus describes one of the kubelet's certificates.
type CertificateStatus struct {
	Kind    string `json:"kind"` // client or server
	Path    string `json:"path"`
	Present bool   `json:"present"`
	File    string `json:"file,omitempty"` // the dated file the current link points to
	Subject string `json:"subject,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
	// SignedBy names the CA that signed it: a CA of kubelet.conf, of the
	// trust file or of issuerCAFile, by common name and fingerprint.
	SignedBy         string      `json:"signedBy,omitempty"`
	DNSNames         []string    `json:"dnsNames,omitempty"`
	IPAddresses      []string    `json:"ipAddresses,omitempty"`
	NotBefore        *time.Time  `json:"notBefore,omitempty"`
	NotAfter         *time.Time  `json:"notAfter,omitempty"`
	RemainingSeconds int64       `json:"remainingSeconds"`
	RenewalDeadline  *time.Time  `json:"renewalDeadline,omitempty"`
	Valid            bool        `json:"valid"`
	Error            string      `json:"error,omitempty"`
	PendingCSR       *PendingCSR `json:"pendingCSR,omitempty"`
	// PendingAttestation: the pending key's request goes to the attestation
	// service (no CSR of ours to approve).
	PendingAttestation bool `json:"pendingAttestation,omitempty"`
	// ObtainedBy says how the client certificate was obtained: "bootstrap
	// token", "TPM attestation", "renewal with the node's certificate"
	// (omitted when unknown).
	ObtainedBy string `json:"obtainedBy,omitempty"`
}

// PendingCSR is a request whose key is on disk and that has not been stored yet.
type PendingCSR struct {
	Name           string `json:"name"`
	ApproveCommand string `json:"approveCommand"`
}

// ReadStatus inspects the files only; it makes no API request.
func ReadStatus(cfg config.Config, now time.Time) Status {
	st := Status{
		NodeName:            cfg.NodeName,
		Kubeconfig:          fileStatus(cfg.Kubeconfig),
		BootstrapKubeconfig: fileStatus(cfg.BootstrapKubeconfig),
	}
	kinds := []bootstrap.Kind{bootstrap.Client}
	if cfg.ServingEnabled() {
		kinds = append(kinds, bootstrap.Serving)
	}
	known := knownCAs(cfg)
	for _, k := range kinds {
		cs, leaf := certificateStatus(cfg, k, now)
		if leaf != nil {
			cs.SignedBy = signedBy(known, leaf)
		}
		st.Certificates = append(st.Certificates, cs)
	}
	st.Trust = readTrust(cfg)
	return st
}

func fileStatus(p string) FileStatus {
	_, err := os.Stat(p)
	return FileStatus{Path: p, Exists: err == nil}
}

func certificateStatus(cfg config.Config, kind bootstrap.Kind, now time.Time) (CertificateStatus, *x509.Certificate) {
	cs := CertificateStatus{Kind: string(kind), Path: bootstrap.CurrentPath(cfg.CertDir, kind)}
	var leaf *x509.Certificate
	pair, err := bootstrap.LoadCurrent(cfg.CertDir, kind)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		cs.Error = err.Error()
	default:
		leaf = pair.Leaf
		cs.Present = true
		if target, err := os.Readlink(cs.Path); err == nil {
			cs.File = filepath.Base(target)
		}
		cs.Subject, cs.Issuer = leaf.Subject.String(), leaf.Issuer.String()
		cs.DNSNames = leaf.DNSNames
		for _, ip := range leaf.IPAddresses {
			cs.IPAddresses = append(cs.IPAddresses, ip.String())
		}
		nb, na := leaf.NotBefore.UTC(), leaf.NotAfter.UTC()
		cs.NotBefore, cs.NotAfter = &nb, &na
		cs.RemainingSeconds = int64(na.Sub(now).Seconds())
		cs.Valid = bootstrap.ValidAt(leaf, now)
		deadline := cfg.RenewalPolicy().NextRenewal(CertInfo(cfg.CertDir, kind, leaf)).UTC()
		cs.RenewalDeadline = &deadline
	}
	if kind == bootstrap.Client && cs.Present {
		cs.ObtainedBy = bootstrap.ObtainedBy(cfg.CertDir)
	}
	if bootstrap.PendingAttestation(cfg.CertDir, kind) {
		cs.PendingAttestation = true
	} else if key, err := bootstrap.LoadPendingKey(cfg.CertDir, kind); err == nil && key != nil {
		if name, err := (bootstrap.Request{Kind: kind, NodeName: cfg.NodeName}).CSRName(key.Public()); err == nil {
			cs.PendingCSR = &PendingCSR{Name: name, ApproveCommand: "kubectl certificate approve " + name}
		}
	}
	return cs, leaf
}

// WriteText prints st for people.
func (st Status) WriteText(w io.Writer, now time.Time) {
	fmt.Fprintf(w, "node:                 %s\n", st.NodeName)
	fmt.Fprintf(w, "kubeconfig:           %s (%s)\n", st.Kubeconfig.Path, presence(st.Kubeconfig.Exists))
	fmt.Fprintf(w, "bootstrap kubeconfig: %s (%s)\n", st.BootstrapKubeconfig.Path, presence(st.BootstrapKubeconfig.Exists))
	for _, c := range st.Certificates {
		fmt.Fprintf(w, "\n%s certificate: %s\n", c.Kind, c.Path)
		switch {
		case c.Error != "":
			fmt.Fprintf(w, "  error:     %s\n", c.Error)
		case !c.Present:
			fmt.Fprintf(w, "  missing\n")
		default:
			fmt.Fprintf(w, "  file:      %s\n", c.File)
			fmt.Fprintf(w, "  subject:   %s\n", c.Subject)
			fmt.Fprintf(w, "  issuer:    %s\n", c.Issuer)
			fmt.Fprintf(w, "  signed by: %s\n", c.SignedBy)
			if len(c.DNSNames)+len(c.IPAddresses) > 0 {
				fmt.Fprintf(w, "  names:     %s\n", strings.Join(append(append([]string{}, c.DNSNames...), c.IPAddresses...), ", "))
			}
			fmt.Fprintf(w, "  valid:     %s to %s\n", c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339))
			if c.Valid {
				fmt.Fprintf(w, "  remaining: %s\n", sinceRound(time.Duration(c.RemainingSeconds)*time.Second))
			} else {
				fmt.Fprintf(w, "  remaining: none (not valid now)\n")
			}
			if d := c.RenewalDeadline.Sub(now); d > 0 {
				fmt.Fprintf(w, "  renews:    %s (in %s)\n", c.RenewalDeadline.Format(time.RFC3339), sinceRound(d))
			} else {
				fmt.Fprintf(w, "  renews:    due now (deadline %s)\n", c.RenewalDeadline.Format(time.RFC3339))
			}
		}
		if c.ObtainedBy != "" {
			fmt.Fprintf(w, "  obtained:  by %s\n", c.ObtainedBy)
		}
		if c.PendingCSR != nil {
			fmt.Fprintf(w, "  pending:   %s (%s)\n", c.PendingCSR.Name, c.PendingCSR.ApproveCommand)
		}
		if c.PendingAttestation {
			fmt.Fprintf(w, "  pending:   a request to the attestation service (retried until it issues)\n")
		}
	}
	st.Trust.writeText(w)
}

func presence(ok bool) string {
	if ok {
		return "present"
	}
	return "absent"
}

// CertInfo describes leaf, stored as kind's current certificate in certDir.
func CertInfo(certDir string, kind bootstrap.Kind, leaf *x509.Certificate) rotate.Cert {
	if leaf == nil {
		return rotate.Cert{}
	}
	return rotate.Cert{NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Serial: leaf.SerialNumber.Bytes(), StoredAt: storedAt(certDir, kind)}
}

// storedAt is when the current certificate of kind was stored, from the name
// of the dated file its link points to (zero if that says nothing, as for a
// certificate another tool wrote).
func storedAt(certDir string, kind bootstrap.Kind) time.Time {
	target, err := os.Readlink(bootstrap.CurrentPath(certDir, kind))
	if err != nil {
		return time.Time{}
	}
	stamp := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(target), kind.FilePrefix()+"-"), ".pem")
	t, err := time.Parse(bootstrap.TimestampLayout, stamp)
	if err != nil {
		return time.Time{}
	}
	return t
}

// sinceRound formats a duration for people: whole seconds, minutes or days.
func sinceRound(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	default:
		return d.Round(time.Second).String()
	}
}
