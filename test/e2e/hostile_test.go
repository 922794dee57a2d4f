package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/certagent/certagent/test/controlplane"
)

// hostileCA is a CA the hostile API server signs with.
type hostileCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func newHostileCA(t *testing.T, cn string) *hostileCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &hostileCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// sign issues tmpl for pub and returns the parsed certificate and its PEM.
func (ca *hostileCA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, []byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// hostileIssuance is what the hostile server will answer for the CSR it
// receives; a test case's craft function bends it. By default it is a
// correct client certificate for the requester, signed by the server's CA.
type hostileIssuance struct {
	tmpl   *x509.Certificate
	pub    crypto.PublicKey // the key certified; the requester's by default
	issuer *hostileCA       // the server's own CA by default
	raw    []byte           // if set, status.certificate verbatim (nothing is signed)
	// failed answers a Failed condition instead of Approved and a certificate.
	failed bool
	// filled in by the server:
	leaf *x509.Certificate
}

// hostileServer implements just enough of the CSR API, over TLS, to hand a
// crafted certificate (or a failure) to whoever posts a CSR.
type hostileServer struct {
	t     *testing.T
	srv   *httptest.Server
	ca    *hostileCA
	craft func(t *testing.T, is *hostileIssuance)
	stop  chan struct{}

	mu      sync.Mutex
	counts  map[string]int // "METHOD path[?watch]" -> requests
	authz   []string       // Authorization headers seen
	csr     *certificatesv1.CertificateSigningRequest
	issued  *certificatesv1.CertificateSigningRequest
	issue   *hostileIssuance
	errs    []string // handler problems, reported by the test
	created int
}

const hostileCSRPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

func newHostileServer(t *testing.T, craft func(t *testing.T, is *hostileIssuance)) *hostileServer {
	t.Helper()
	h := &hostileServer{t: t, ca: newHostileCA(t, "hostile-cluster-ca"), craft: craft, stop: make(chan struct{}), counts: map[string]int{}}
	servingKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serving, _, err := h.ca.sign(&x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}, servingKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(h.serveHTTP))
	h.srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{serving.Raw}, PrivateKey: servingKey, Leaf: serving}}}
	h.srv.StartTLS()
	t.Cleanup(func() {
		close(h.stop) // end open watches, or Close waits for them
		h.srv.Close()
	})
	return h
}

func (h *hostileServer) fail(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, fmt.Sprintf(format, args...))
}

func (h *hostileServer) count(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[key]
}

func (h *hostileServer) writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		h.fail("encoding response: %v", err)
	}
}

func (h *hostileServer) status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	h.writeJSON(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg,
	})
}

func (h *hostileServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + r.URL.Path
	if r.URL.Query().Get("watch") == "true" {
		key += "?watch"
	}
	h.mu.Lock()
	h.counts[key]++
	h.authz = append(h.authz, r.Header.Get("Authorization"))
	h.mu.Unlock()

	switch {
	case r.Method == http.MethodPost && r.URL.Path == hostileCSRPath:
		h.create(w, r)
	case r.Method == http.MethodGet && r.URL.Path == hostileCSRPath && r.URL.Query().Get("watch") == "true":
		h.watch(w, r)
	case r.Method == http.MethodGet && r.URL.Path == hostileCSRPath:
		h.list(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, hostileCSRPath+"/"):
		h.get(w, strings.TrimPrefix(r.URL.Path, hostileCSRPath+"/"))
	default:
		h.status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the hostile server does not serve "+r.URL.Path)
	}
}

func (h *hostileServer) create(w http.ResponseWriter, r *http.Request) {
	var in certificatesv1.CertificateSigningRequest
	body, err := io.ReadAll(r.Body)
	if err == nil {
		// Whatever the client posted, as an API server would: certagent posts protobuf.
		_, _, err = scheme.Codecs.UniversalDeserializer().Decode(body, nil, &in)
	}
	if err != nil {
		h.fail("decoding the posted CSR: %v", err)
		h.status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	block, _ := pem.Decode(in.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		h.fail("spec.request is not a PEM CERTIFICATE REQUEST")
		h.status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "bad spec.request")
		return
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		h.fail("parsing the CSR: %v", err)
		h.status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	is := &hostileIssuance{
		tmpl: &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: req.Subject.CommonName, Organization: req.Subject.Organization},
			NotBefore:    time.Now().Add(-5 * time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
		pub: req.PublicKey, issuer: h.ca,
	}
	h.craft(h.t, is)

	out := in.DeepCopy()
	out.TypeMeta = metav1.TypeMeta{Kind: "CertificateSigningRequest", APIVersion: "certificates.k8s.io/v1"}
	out.UID = types.UID(fmt.Sprintf("hostile-%d", time.Now().UnixNano()))
	out.ResourceVersion = "1"
	out.CreationTimestamp = metav1.Now()
	out.Spec.Username = "system:bootstrap:hostile"

	issued := out.DeepCopy()
	issued.ResourceVersion = "2"
	now := metav1.Now()
	switch {
	case is.failed:
		issued.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{
			Type: certificatesv1.CertificateFailed, Status: "True", Reason: "SignerValidationFailure", Message: "bad",
			LastUpdateTime: now, LastTransitionTime: now,
		}}
	default:
		issued.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{
			Type: certificatesv1.CertificateApproved, Status: "True", Reason: "AutoApproved", Message: "approved by the hostile server",
			LastUpdateTime: now, LastTransitionTime: now,
		}}
		if is.raw != nil {
			issued.Status.Certificate = is.raw
		} else {
			leaf, certPEM, err := is.issuer.sign(is.tmpl, is.pub)
			if err != nil {
				h.fail("signing: %v", err)
				h.status(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, err.Error())
				return
			}
			is.leaf = leaf
			issued.Status.Certificate = certPEM
		}
	}

	h.mu.Lock()
	h.created++
	h.csr, h.issued, h.issue = out, issued, is
	h.mu.Unlock()
	h.writeJSON(w, http.StatusCreated, out)
}

// current returns the issued object if name is the CSR we were sent.
func (h *hostileServer) current(name string) *certificatesv1.CertificateSigningRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.issued == nil || h.issued.Name != name {
		return nil
	}
	return h.issued.DeepCopy()
}

// selectedName is the name of metadata.name=<name> in the request's field selector.
func selectedName(r *http.Request) string {
	name, _ := strings.CutPrefix(r.URL.Query().Get("fieldSelector"), "metadata.name=")
	return name
}

func (h *hostileServer) watch(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if obj := h.current(selectedName(r)); obj != nil {
		raw, err := json.Marshal(obj)
		if err != nil {
			h.fail("encoding the watch object: %v", err)
			return
		}
		line, _ := json.Marshal(struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}{"MODIFIED", raw})
		_, _ = w.Write(append(line, '\n'))
	} else {
		h.fail("watch for an unknown CSR: %s", r.URL.RawQuery)
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	select {
	case <-r.Context().Done():
	case <-h.stop:
	}
}

func (h *hostileServer) list(w http.ResponseWriter, r *http.Request) {
	list := &certificatesv1.CertificateSigningRequestList{
		TypeMeta: metav1.TypeMeta{Kind: "CertificateSigningRequestList", APIVersion: "certificates.k8s.io/v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: "2"},
		Items:    []certificatesv1.CertificateSigningRequest{},
	}
	if obj := h.current(selectedName(r)); obj != nil {
		obj.TypeMeta = metav1.TypeMeta{}
		list.Items = append(list.Items, *obj)
	}
	h.writeJSON(w, http.StatusOK, list)
}

func (h *hostileServer) get(w http.ResponseWriter, name string) {
	obj := h.current(name)
	if obj == nil {
		h.status(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("certificatesigningrequests %q not found", name))
		return
	}
	h.writeJSON(w, http.StatusOK, obj)
}

// pointAt rewrites n's bootstrap kubeconfig to the hostile server, trusting
// its CA, with n's token.
func (h *hostileServer) pointAt(t *testing.T, n *node) {
	t.Helper()
	caFile := filepath.Join(n.dir, "hostile-ca.crt")
	if err := os.WriteFile(caFile, h.ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	kc := "apiVersion: v1\nkind: Config\nclusters:\n- name: default-cluster\n  cluster:\n    server: " + h.srv.URL +
		"\n    certificate-authority: " + caFile +
		"\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: " + n.token +
		"\ncontexts:\n- name: tls-bootstrap-token-user@kubernetes\n  context: {cluster: default-cluster, user: tls-bootstrap-token-user}\ncurrent-context: tls-bootstrap-token-user@kubernetes\n"
	if err := os.WriteFile(n.bootstrap, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestHostileAPIServer: an API server that hands back a certificate that is
// wrong in one way (or a failed CSR) makes run --once fail with a message
// naming what is wrong, and nothing on disk changes.
func TestHostileAPIServer(t *testing.T) {
	const refusing = ": refusing the issued certificate, nothing was written: "
	for _, tc := range []struct {
		name  string
		craft func(t *testing.T, is *hostileIssuance)
		// keepsKey: the pending key is kept on purpose, because the same
		// certificate becomes good by waiting (bootstrap/obtain.go).
		keepsKey bool
		// want is a regular expression the output's final "certagent: " line must match.
		want func(n *node, csr string, is *hostileIssuance) string
	}{
		{
			name: "certificate for another key",
			craft: func(t *testing.T, is *hostileIssuance) {
				other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err != nil {
					t.Error(err)
					return
				}
				is.pub = other.Public()
			},
			want: func(n *node, csr string, is *hostileIssuance) string {
				return regexp.QuoteMeta("CSR "+csr+refusing+"issued certificate does not match our private key") + "$"
			},
		},
		{
			name: "certificate for another node",
			craft: func(t *testing.T, is *hostileIssuance) {
				is.tmpl.Subject = pkix.Name{CommonName: "system:node:someone-else", Organization: []string{"system:nodes"}}
			},
			want: func(n *node, csr string, is *hostileIssuance) string {
				return regexp.QuoteMeta("CSR "+csr+refusing+`issued certificate is for "CN=system:node:someone-else,O=system:nodes", want CN=system:node:`+n.name+",O=system:nodes") + "$"
			},
		},
		{
			name: "certificate without client auth",
			craft: func(t *testing.T, is *hostileIssuance) {
				is.tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			},
			want: func(n *node, csr string, is *hostileIssuance) string {
				return regexp.QuoteMeta("CSR "+csr+refusing+"issued certificate lacks the client auth extended key usage") + "$"
			},
		},
		{
			name:     "certificate not yet valid",
			keepsKey: true,
			craft: func(t *testing.T, is *hostileIssuance) {
				is.tmpl.NotBefore = time.Now().Add(time.Hour)
				is.tmpl.NotAfter = time.Now().Add(25 * time.Hour)
			},
			want: func(n *node, csr string, is *hostileIssuance) string {
				// The distance is measured by certagent's clock: an hour, give or take the run's seconds.
				return regexp.QuoteMeta("CSR "+csr+refusing+"issued certificate is not valid before "+is.leaf.NotBefore.UTC().Format(time.RFC3339)+", ") +
					`(?:59m[0-5]?\ds|1h0m0s)` +
					regexp.QuoteMeta(" from now (more than the 2m0s clock skew tolerated): check the clocks of this node and the control plane") + "$"
			},
		},
		{
			name: "certificate already expired",
			craft: func(t *testing.T, is *hostileIssuance) {
				is.tmpl.NotBefore = time.Now().Add(-2 * time.Hour)
				is.tmpl.NotAfter = time.Now().Add(-time.Hour)
			},
			want: func(n *node, csr string, is *hostileIssuance) string {
				return regexp.QuoteMeta("CSR "+csr+refusing+"issued certificate expired at "+is.leaf.NotAfter.UTC().Format(time.RFC3339)) + "$"
			},
		},
		{
			name: "certificate from another CA",
			craft: func(t *testing.T, is *hostileIssuance) {
				is.issuer = newHostileCA(t, "hostile-other-ca")
			},
			want: func(n *node, csr string, is *hostileIssuance) string {
				// The wrapped x509 error's wording is Go's; only its start is ours to pin.
				return regexp.QuoteMeta("CSR " + csr + refusing + `issued certificate does not chain to the expected CA (issuer "CN=hostile-other-ca"): set issuerCAFile if kubelet certificates are signed by a separate CA: x509: certificate signed by unknown authority`)
			},
		},
		{
			name: "garbage certificate",
			craft: func(t *testing.T, is *hostileIssuance) {
				is.raw = []byte("not a certificate")
			},
			want: func(n *node, csr string, is *hostileIssuance) string {
				return regexp.QuoteMeta("CSR "+csr+refusing+"no PEM certificate found") + "$"
			},
		},
		{
			name: "CSR failed",
			craft: func(t *testing.T, is *hostileIssuance) {
				is.failed = true
			},
			want: func(n *node, csr string, is *hostileIssuance) string {
				return regexp.QuoteMeta("waiting for the client certificate: CSR "+csr+` was failed (reason "SignerValidationFailure": bad); the signer could not issue it: check kube-controller-manager's --cluster-signing-* flags and its log; certagent posts a new request on the next attempt`) + "$"
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
			withExpiredClient(t, n)
			h := newHostileServer(t, tc.craft)
			h.pointAt(t, n)
			before := n.snapshot()
			start := time.Now()
			code, out := n.runOnce("--serving=false") // runOnce → start: assertNoSecrets runs on cleanup
			if code == 0 {
				t.Fatalf("exit 0, want a failure:\n%s", out)
			}
			if took := time.Since(start); took > 30*time.Second {
				t.Errorf("took %s to fail; a refused certificate should end --once at once", took)
			}

			h.mu.Lock()
			csr, is, errs := h.csr, h.issue, append([]string(nil), h.errs...)
			counts := fmt.Sprint(h.counts)
			authz := append([]string(nil), h.authz...)
			h.mu.Unlock()
			for _, e := range errs {
				t.Errorf("hostile server: %s", e)
			}
			if csr == nil {
				t.Fatalf("the hostile server received no CSR; requests %s; output:\n%s", counts, out)
			}
			if got := h.count("POST " + hostileCSRPath); got != 1 {
				t.Errorf("%d CSR creations, want exactly 1; requests %s", got, counts)
			}
			if got := h.count("POST /apis/authentication.k8s.io/v1/selfsubjectreviews"); got != 0 {
				t.Errorf("%d SelfSubjectReviews: certagent used a refused certificate; requests %s", got, counts)
			}
			if h.count("GET "+hostileCSRPath+"?watch")+h.count("GET "+hostileCSRPath) == 0 {
				t.Errorf("certagent neither watched nor listed its CSR; requests %s", counts)
			}
			for _, a := range authz {
				if a != "Bearer "+n.token {
					t.Errorf("a request did not carry the bootstrap token as its bearer token (Authorization header of %d bytes)", len(a))
				}
			}

			re := regexp.MustCompile(`(?m)^certagent: (?:.*: )?` + tc.want(n, csr.Name, is))
			if !re.MatchString(out) {
				t.Errorf("output lacks a final error matching\n  %s\noutput:\n%s", re, out)
			}
			if tc.keepsKey {
				assertUnchanged(t, before, n.snapshot(), "kubelet-client-pending.key")
				if !exists(filepath.Join(n.certDir, "kubelet-client-pending.key")) {
					t.Error("the pending key was not kept for a certificate that only starts later")
				}
			} else {
				assertUnchanged(t, before, n.snapshot())
			}
		})
	}
}
