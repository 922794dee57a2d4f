package bootstrap

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/bootstrap/kubeconfig"
)

// checkIdentity asks the API server who rc, the node's credential,
// authenticates as (a SelfSubjectReview) and requires system:node:<node> in
// group system:nodes.
func (b *Bootstrapper) checkIdentity(ctx context.Context, rc *rest.Config, node string) error {
	api, err := b.cfg.Clients.ForNode(rc)
	if err != nil {
		return fmt.Errorf("asking the API server who kubelet.conf authenticates as: %w", err)
	}
	review, err := api.SelfSubjectReview(ctx)
	if err != nil {
		return fmt.Errorf("asking the API server who kubelet.conf authenticates as: %w", err)
	}
	info := review.Status.UserInfo
	want := "system:node:" + node
	switch {
	case info.Username != want:
		return fmt.Errorf("the API server says who kubelet.conf is: %w", &OtherNodeError{User: info.Username, Want: want})
	case !slices.Contains(info.Groups, "system:nodes"):
		return fmt.Errorf("kubelet.conf authenticates as %q in groups %v, not in system:nodes", info.Username, info.Groups)
	}
	return nil
}

// Identity is what is known about kubelet.conf: whether the API server
// accepts it now. It is checked when it matters (at start, after kubelet.conf
// or its certificate changed, after a request was refused), never polled.
type Identity struct {
	// Accepted: a request made with kubelet.conf as it is on disk now succeeded.
	Accepted bool
	// Rejected: the API server refused it (401) or could not be trusted with
	// it (TLS); Err says how.
	Rejected bool
	// Err is why it is not accepted (nil when accepted; a transient error
	// while the API server cannot be reached).
	Err error
	// NotAfter is the client certificate's expiry (zero if none).
	NotAfter time.Time
}

// identityRecord is the last Identity and the kubelet.conf it is about.
type identityRecord struct {
	Identity
	fingerprint string
	// recheck: what is known must be asked again (forget), though it has
	// not changed until an answer says so.
	recheck bool
}

// ErrIdentityRejected: the API server refuses kubelet.conf and there is no
// bootstrap kubeconfig to start over with.
var ErrIdentityRejected = errors.New("the API server rejects kubelet.conf")

// ErrOtherNode: kubelet.conf is another node's (the node was renamed, or the
// file copied from another node): as unusable as a rejected one.
var ErrOtherNode = errors.New("kubelet.conf is not this node's")

// Node is the node's own credential: kubelet.conf with a client certificate
// that is valid now.
type Node struct {
	Config *rest.Config
	// Cluster is kubelet.conf's cluster entry (how the node reaches the API server).
	Cluster *clientcmdapi.Cluster
	Leaf    *x509.Certificate
	// fingerprint covers kubelet.conf and the certificate and CA it uses.
	fingerprint string
}

// Credential is what a request is made with; errors give advice that fits it.
type Credential struct {
	Config *rest.Config
	// Path is the file it was read from.
	Path string
	// Bootstrap: a bootstrap token (otherwise the node's own certificate).
	Bootstrap bool
	// attest, if set, has the CSR issued through TPM attestation instead of
	// posting it with Config (Path then names the service).
	attest func(ctx context.Context, csrPEM []byte) ([]byte, error)
}

func (n *Node) credential(path string) Credential { return Credential{Config: n.Config, Path: path} }

// LoadNode reads kubelet.conf as the kubelet does (kubeconfig.LoadAsKubelet) and
// requires a client certificate for this node that is valid now. A missing
// kubelet.conf wraps os.ErrNotExist; a certificate of another node wraps
// ErrOtherNode. Files that have not changed since the last call (same
// inode, size and modification time) are not read again: kubelet.conf is
// parsed when it changes, the certificate it references when that changes
// (a renewal changes only the certificate).
func (b *Bootstrapper) LoadNode() (*Node, error) {
	key, err := filesKey(b.cfg.KubeconfigPath)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	cached := b.node
	b.mu.Unlock()
	if cached.kc == nil || cached.key != key {
		kc, err := kubeconfig.LoadAsKubelet(b.cfg.KubeconfigPath)
		if err != nil {
			return nil, err
		}
		raw, err := os.ReadFile(b.cfg.KubeconfigPath)
		if err != nil {
			return nil, err
		}
		cached = nodeCache{key: key, kc: kc, raw: raw}
	}
	rc := cached.kc.Config
	deps, err := filesKey(rc.CertFile, rc.CAFile)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", b.cfg.KubeconfigPath, err)
	}
	node := cached.node
	if node == nil || cached.deps != deps {
		certPEM, leaf, err := clientCertificate(rc)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", b.cfg.KubeconfigPath, err)
		}
		h := sha256.New()
		for _, part := range [][]byte{cached.raw, certPEM, rc.CAData, []byte(rc.CAFile)} {
			fmt.Fprintf(h, "%d:", len(part))
			h.Write(part)
		}
		node = &Node{Config: rc, Cluster: cached.kc.Cluster, Leaf: leaf, fingerprint: fmt.Sprintf("%x", h.Sum(nil))}
		cached.deps, cached.node = deps, node
	}
	b.mu.Lock()
	b.node = cached
	b.mu.Unlock()
	unusable := &Node{Config: node.Config, Cluster: node.Cluster, Leaf: node.Leaf}
	if err := b.thisNode(node.Leaf.Subject.CommonName); err != nil {
		return unusable, fmt.Errorf("the client certificate of %s: %w", b.cfg.KubeconfigPath, err)
	}
	if !b.usableNow(node.Leaf) {
		return unusable, fmt.Errorf("the client certificate of %s is valid from %s to %s, not now", b.cfg.KubeconfigPath,
			node.Leaf.NotBefore.UTC().Format(time.RFC3339), node.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return node, nil
}

// thisNode checks that user (a certificate's CN, or who the API server
// says a credential is) is this node.
func (b *Bootstrapper) thisNode(user string) error {
	if want := "system:node:" + b.cfg.NodeName; user != want {
		return &OtherNodeError{User: user, Want: want}
	}
	return nil
}

// OtherNodeError: kubelet.conf authenticates as User, not as this node (Want).
type OtherNodeError struct{ User, Want string }

func (e *OtherNodeError) Error() string {
	advice := ""
	if old := e.OldName(); old != "" {
		advice = fmt.Sprintf("; to keep the name %s instead, set nodeName: %s in the certagent config", old, old)
	}
	return fmt.Sprintf("%v: it is for %q, this node is %q (nodeName, or the host name); a bootstrap kubeconfig gets it a certificate of its own%s",
		ErrOtherNode, e.User, e.Want, advice)
}

// OldName is the node name kubelet.conf is for ("" if it is not a node's).
func (e *OtherNodeError) OldName() string {
	old, _ := strings.CutPrefix(e.User, "system:node:")
	if old == e.User {
		return ""
	}
	return old
}

func (e *OtherNodeError) Is(target error) bool { return target == ErrOtherNode }

// nodeCache is the last parsed kubelet.conf and the stat of the files it came from.
type nodeCache struct {
	key  string           // of kubelet.conf
	kc   *kubeconfig.File // kubelet.conf parsed
	raw  []byte           // kubelet.conf's bytes
	deps string           // of the certificate and CA files it references
	node *Node
}

// filesKey identifies the contents of paths (following links) by stat; ""
// paths are skipped.
func filesKey(paths ...string) (string, error) {
	var b strings.Builder
	for _, p := range paths {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st == nil {
			return "", fmt.Errorf("no stat for %s", p)
		}
		fmt.Fprintf(&b, "%d:%d:%d:%d;", st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

// Identity returns what is known about kubelet.conf now.
func (b *Bootstrapper) Identity() Identity {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.identity.Identity
}

// setIdentity records what a request with node's kubelet.conf showed.
func (b *Bootstrapper) setIdentity(node *Node, err error) {
	id := Identity{Accepted: err == nil, Rejected: err != nil && rejectsCredential(err), Err: err}
	fp := ""
	if node != nil {
		fp = node.fingerprint
		if node.Leaf != nil {
			id.NotAfter = node.Leaf.NotAfter
		}
	}
	b.mu.Lock()
	changed := b.identity.fingerprint != fp || b.identity.Accepted != id.Accepted || b.identity.Rejected != id.Rejected ||
		(b.identity.Err == nil) != (id.Err == nil)
	b.identity = identityRecord{Identity: id, fingerprint: fp}
	b.mu.Unlock()
	if changed && b.cfg.OnIdentity != nil {
		b.cfg.OnIdentity(id)
	}
}

// forget drops what is known, so the next prove asks the API server.
func (b *Bootstrapper) forget() {
	b.mu.Lock()
	b.identity.recheck = true
	b.mu.Unlock()
}

// accepted reports whether node's kubelet.conf was accepted as it is now.
func (b *Bootstrapper) accepted(node *Node) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.identity.Accepted && !b.identity.recheck && b.identity.fingerprint == node.fingerprint
}

// prove makes sure the API server accepts node's kubelet.conf: a
// SelfSubjectReview unless that was already shown for these very files.
func (b *Bootstrapper) prove(ctx context.Context, node *Node) error {
	if b.accepted(node) {
		return nil
	}
	err := b.cfg.CheckIdentity(ctx, node.Config, b.cfg.NodeName)
	if err != nil {
		err = explainAPIError(err, "checking that the API server accepts kubelet.conf", node.credential(b.cfg.KubeconfigPath), b.cfg.BootstrapKubeconfigPath)
	}
	b.setIdentity(node, err)
	return err
}

// rejectsCredential reports whether err shows that the API server refuses
// the credential (401), or that the credential's CA does not trust the
// server: it will not start working by waiting.
func rejectsCredential(err error) bool {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	return apierrors.IsUnauthorized(err) || errors.Is(err, ErrOtherNode) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci)
}

// Adopt takes over what old knew about kubelet.conf (after a reload), so a
// new configuration does not cost a new check of the same files.
func (b *Bootstrapper) Adopt(old *Bootstrapper) {
	old.mu.Lock()
	rec := old.identity
	old.mu.Unlock()
	b.mu.Lock()
	b.identity = rec
	b.mu.Unlock()
}
