package agent

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/agent/observe/observetest"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
	"github.com/certagent/certagent/trust"
)

// TestDaemonFollowsACARotation carries a daemon through the five phases of
// docs/ca-rotation.md on a fake API: kubelet.conf names the CA file the
// agent keeps; the new CA is trusted once published (kubelet.conf's CA and
// the kubelet's client CA); once the kubelet signers' published bundles name
// it, both certificates are re-issued from it within trust.reissueSpread,
// once each; when the old CA is withdrawn only the new one is trusted. The
// Node's Events tell each step, and the renewal's names the new CA.
func TestDaemonFollowsACARotation(t *testing.T) {
	dir := t.TempDir()
	sink := &observetest.Events{}
	daemonTest(t, followTrust(dir), func(t *testing.T, f *daemonFixture) {
		f.eventsTo(func(*rest.Config) (apiclient.EventClient, error) { return sink, nil })
		old := f.sg
		src := trustFixture(t, f)
		caFile, clientCA := f.cfg.TrustCAFile(), f.cfg.Trust.KubeletClientCAFile
		if got := kubeletConfCA(t, f.cfg.Kubeconfig); got != caFile {
			t.Fatalf("kubelet.conf names CA %q, want the file certagent keeps, %s", got, caFile)
		}
		wantCAs(t, caFile, old)
		wantCAs(t, clientCA, old)

		next := laterSigner(t, old)
		both := append(append([]byte{}, old.pem...), next.pem...)
		src.publish(trust.SignerAPIServerServing, both) // phase 1
		f.advanceIn(5*time.Second, time.Second)
		wantCAs(t, caFile, old, next)
		wantCAs(t, clientCA, old, next)

		src.serve(t, next) // phase 2
		acceptBoth(f, old, next)
		f.sg = next // phase 3: the signers issue from the new CA, and say so
		src.publish(trust.SignerKubeletClient, both)
		src.publish(trust.SignerKubeletServing, both)
		f.advanceIn(f.cfg.ReissueSpread()+time.Minute, 10*time.Second)
		for _, kind := range []bootstrap.Kind{bootstrap.Client, bootstrap.Serving} {
			if c := f.current(kind); c == nil || c.CheckSignatureFrom(next.cert) != nil {
				t.Fatalf("the %s certificate was not re-issued from the new CA within trust.reissueSpread", kind)
			}
		}
		if f.clientCSRs() != 2 || f.servingCSRs() != 2 {
			t.Fatalf("CSRs: client %d, serving %d; want 2 each (bootstrap, re-issue)", f.clientCSRs(), f.servingCSRs())
		}

		src.publish(trust.SignerAPIServerServing, next.pem) // phase 5
		src.publish(trust.SignerKubeletClient, next.pem)
		src.publish(trust.SignerKubeletServing, next.pem)
		f.advanceIn(time.Hour, time.Minute)
		wantCAs(t, caFile, next)
		wantCAs(t, clientCA, next)
		if f.clientCSRs() != 2 || f.servingCSRs() != 2 {
			t.Fatalf("withdrawing the old CA made CSRs: client %d, serving %d", f.clientCSRs(), f.servingCSRs())
		}
		fams := scrape(t, f.agent)
		if v, _ := sample(t, fams, "certagent_trust_cas", ""); v != 1 {
			t.Fatalf("certagent_trust_cas = %v, want 1", v)
		}
		if v, _ := sample(t, fams, "certagent_trust_changed_timestamp_seconds", ""); v <= 0 {
			t.Fatalf("certagent_trust_changed_timestamp_seconds = %v, want when the file changed", v)
		}
		for _, r := range []string{observe.ReasonTrustUpdated, observe.ReasonReissueScheduled} {
			if sink.Find(r) == nil {
				t.Fatalf("no %s Event; got %v", r, sink.Reasons())
			}
		}
		st := observe.ReadStatus(f.cfg, f.clk.Now())
		if st.Trust == nil || len(st.Trust.CAFile.CAs) != 1 || !strings.Contains(st.Trust.CAFile.CAs[0], `"ca-2"`) {
			t.Fatalf("certagent status says the trust is %+v, want ca-2 alone", st.Trust)
		}
		for _, c := range st.Certificates {
			if !strings.HasPrefix(c.SignedBy, `"ca-2"`) {
				t.Fatalf("certagent status says the %s certificate is signed by %s, want ca-2", c.Kind, c.SignedBy)
			}
		}
		renewed := sink.Find(observe.ReasonCertificateRenewed)
		if want := `signed by CA "ca-2" (sha256 ` + trust.Fingerprint(next.cert) + ")"; renewed == nil || !strings.Contains(renewed.Note, want) {
			t.Fatalf("the re-issue's %s Event does not say %s: %+v", observe.ReasonCertificateRenewed, want, renewed)
		}
	})
}

// TestDaemonRefusesTrustThatWouldCutItOff: a published serving bundle that
// is empty, malformed, holds a non-CA, or lacks the CA of the API server the
// node talks to now is refused with a clear log line and a counted refusal,
// and the files stay as they were.
func TestDaemonRefusesTrustThatWouldCutItOff(t *testing.T) {
	dir := t.TempDir()
	daemonTest(t, followTrust(dir), func(t *testing.T, f *daemonFixture) {
		old := f.sg
		src := trustFixture(t, f)
		stranger := laterSigner(t, newSigner(t))
		leaf := f.current(bootstrap.Client).Raw
		for i, bad := range [][]byte{
			[]byte(""), []byte("not PEM at all"), pemCert(leaf), stranger.pem,
			append(append([]byte{}, old.pem...), []byte("trailing garbage")...),
		} {
			src.publish(trust.SignerAPIServerServing, bad)
			f.advanceIn(5*time.Second, time.Second)
			wantCAs(t, f.cfg.TrustCAFile(), old)
			wantCAs(t, f.cfg.Trust.KubeletClientCAFile, old)
			if v, _ := sample(t, scrape(t, f.agent), "certagent_trust_refused_total", ""); v < float64(i+1) {
				t.Fatalf("bundle %d: certagent_trust_refused_total = %v, want at least %d", i, v, i+1)
			}
		}
		if f.logged("refusing the cluster's published trust") == 0 {
			t.Fatal("no refusal logged")
		}
	})
}

// TestReissueWaitsForTheSignerToMove: a kubelet signer bundle that names a
// new CA before kube-controller-manager signs with it gets one re-issue,
// which comes back from the old CA, a warning, and no loop of CSRs.
func TestReissueWaitsForTheSignerToMove(t *testing.T) {
	dir := t.TempDir()
	daemonTest(t, followTrust(dir), func(t *testing.T, f *daemonFixture) {
		old := f.sg
		src := trustFixture(t, f)
		next := laterSigner(t, old)
		both := append(append([]byte{}, old.pem...), next.pem...)
		src.publish(trust.SignerAPIServerServing, both)
		src.publish(trust.SignerKubeletClient, both)
		f.advanceIn(f.cfg.ReissueSpread()+time.Minute, 10*time.Second)
		for range 3 { // more rounds: an unrelated change each
			src.publish(trust.SignerAPIServerServing, bytes.Clone(both))
			f.advanceIn(f.cfg.ReissueSpread()+time.Minute, 10*time.Second)
		}
		if n := f.clientCSRs(); n != 2 {
			t.Fatalf("client CSRs %d, want 2 (bootstrap, one re-issue)", n)
		}
		if f.logged("the signer still issues from the old CA") != 1 {
			t.Fatal("the re-issue that came back from the old CA was not warned about once")
		}
	})
}

// TestDaemonMovesKubeletConfToTheTrustFile: a node that bootstrapped before
// trust.follow was turned on has kubelet.conf name the bootstrap
// kubeconfig's CA file; the daemon started with it writes that CA to the
// trust file, rewrites kubelet.conf to name the file, and follows from there,
// without a new certificate.
func TestDaemonMovesKubeletConfToTheTrustFile(t *testing.T) {
	dir := t.TempDir()
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.start()
		f.advance(time.Minute)
		f.stop()
		if before := kubeletConfCA(t, f.cfg.Kubeconfig); before != filepath.Join(f.dir, "ca.crt") {
			t.Fatalf("kubelet.conf names CA %q before trust.follow", before)
		}
		followTrust(dir)(&f.cfg)
		src := trustFixture(t, f)
		if got := kubeletConfCA(t, f.cfg.Kubeconfig); got != f.cfg.TrustCAFile() {
			t.Fatalf("kubelet.conf names CA %q, want %s", got, f.cfg.TrustCAFile())
		}
		wantCAs(t, f.cfg.TrustCAFile(), f.sg)
		next := laterSigner(t, f.sg)
		src.publish(trust.SignerAPIServerServing, append(append([]byte{}, f.sg.pem...), next.pem...))
		f.advanceIn(5*time.Second, time.Second)
		wantCAs(t, f.cfg.TrustCAFile(), f.sg, next)
		if f.clientCSRs() != 1 {
			t.Fatalf("client CSRs %d: moving kubelet.conf over must not renew", f.clientCSRs())
		}
	})
}

// TestPostTrustHooksRunAfterATrustFileChanged: hooks.postTrust run once per
// change of a trust file, after it is on disk, with the files that changed;
// a round that changes nothing runs none.
func TestPostTrustHooksRunAfterATrustFileChanged(t *testing.T) {
	dir := t.TempDir()
	var calls []string
	daemonTest(t, followTrust(dir), func(t *testing.T, f *daemonFixture) {
		f.cfg.Hooks.PostTrust = []config.Hook{{Command: []string{"restart-kubelet"}}}
		f.opts.RunHook = func(_ context.Context, h config.Hook, env []string) ([]byte, error) {
			if h.Command[0] != "restart-kubelet" {
				return nil, nil // a postRenew hook
			}
			files := ""
			for _, e := range env {
				if v, ok := strings.CutPrefix(e, "CERTAGENT_TRUST_FILES="); ok {
					files = v
				}
			}
			for _, p := range strings.Fields(files) {
				if b := bundleOf(t, p); len(b.CAs) != 2 {
					return nil, fmt.Errorf("%s holds %d CAs when the hook runs", p, len(b.CAs))
				}
			}
			calls = append(calls, files)
			return nil, nil
		}
		old := f.sg
		src := trustFixture(t, f)
		calls = nil // the first round wrote the files from kubelet.conf's CA
		next := laterSigner(t, old)
		src.publish(trust.SignerAPIServerServing, append(append([]byte{}, old.pem...), next.pem...))
		f.advanceIn(5*time.Second, time.Second)
		src.publish(trust.SignerKubeletClient, old.pem) // changes no file
		f.advanceIn(5*time.Second, time.Second)
		want := f.cfg.TrustCAFile() + " " + f.cfg.Trust.KubeletClientCAFile
		if len(calls) != 1 || calls[0] != want {
			t.Fatalf("postTrust hooks ran with %q, want once with %q", calls, want)
		}
	})
}
