package trust

import (
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestBySigner(t *testing.T) {
	ca := newCAs(t)
	other := newCA(t, "front-proxy-ca", base, nil)
	good := []Published{
		{Name: "kubelet-client-old", Signer: SignerKubeletClient, PEM: pemOf(ca.old.cert)},
		{Name: "kubelet-client-new", Signer: SignerKubeletClient, PEM: pemOf(ca.new.cert)},
		{Name: "front-proxy", Signer: "example.com/front-proxy", PEM: pemOf(other.cert)},
	}
	bad := Published{Name: "kubelet-client-broken", Signer: SignerKubeletClient, PEM: "not PEM"}
	tests := []struct {
		name     string
		all      []Published
		signer   string
		want     []string
		ok       bool
		errNames string
	}{
		{"union of one signer's bundles", good, SignerKubeletClient, []string{"cluster-ca-old", "cluster-ca-new"}, true, ""},
		{"only that signer's", good, "example.com/front-proxy", []string{"front-proxy-ca"}, true, ""},
		{"none for the signer", good, SignerAPIServerServing, []string{}, false, ""},
		{"nothing published", nil, SignerKubeletClient, []string{}, false, ""},
		{"one malformed refuses the signer", append(slices.Clone(good), bad), SignerKubeletClient, []string{}, true, "kubelet-client-broken"},
		{"a malformed one of another signer", append(slices.Clone(good), bad), "example.com/front-proxy", []string{"front-proxy-ca"}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, ok, err := BySigner(tt.all, tt.signer)
			if tt.errNames != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.errNames) {
					t.Errorf("BySigner error = %v, want a refusal naming %s", err, tt.errNames)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if ok != tt.ok || !slices.Equal(names(b), tt.want) {
				t.Errorf("BySigner = %v, %v; want %v, %v", names(b), ok, tt.want, tt.ok)
			}
		})
	}
}

func TestCheckServer(t *testing.T) {
	ca := newCAs(t)
	onOld := newServer(t, ca.old, "api.example")
	onNew := newServer(t, ca.new, "api.example")
	onInter := newServer(t, ca.inter, "api.example")
	onIP := newServer(t, ca.old, "127.0.0.1")
	oldNew := bundleOf(t, ca.old.cert, ca.new.cert)
	chain := func(c ...*x509.Certificate) []*x509.Certificate { return c }
	tests := []struct {
		name       string
		b          Bundle
		chain      []*x509.Certificate
		serverName string
		refused    bool
	}{
		{"old and new, server on old", oldNew, chain(onOld), "api.example", false},
		{"old and new, server on new", oldNew, chain(onNew), "api.example", false},
		{"new only, server still on old", bundleOf(t, ca.new.cert), chain(onOld), "api.example", true},
		{"old only, server already on new", bundleOf(t, ca.old.cert), chain(onNew), "api.example", true},
		{"a wrong server name", oldNew, chain(onOld), "other.example", true},
		{"an intermediate in the chain", bundleOf(t, ca.new.cert), chain(onInter, ca.inter.cert), "api.example", false},
		{"an intermediate missing from the chain", bundleOf(t, ca.new.cert), chain(onInter), "api.example", true},
		{"an IP address", oldNew, chain(onIP), "127.0.0.1", false},
		{"a wrong IP address", oldNew, chain(onIP), "127.0.0.2", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckServer(tt.b, tt.chain, tt.serverName, now)
			if got := errors.Is(err, ErrRefused); got != tt.refused || (err != nil) != tt.refused {
				t.Errorf("CheckServer(%v) = %v, want refused %v", names(tt.b), err, tt.refused)
			}
			if tt.refused && !strings.Contains(err.Error(), "does not verify the API server") {
				t.Errorf("the refusal %q does not say which check failed", err)
			}
		})
	}
}

func TestCheckServerWithoutChain(t *testing.T) {
	ca := newCAs(t)
	err := CheckServer(bundleOf(t, ca.old.cert), nil, "api.example", now)
	if err == nil || errors.Is(err, ErrRefused) {
		t.Errorf("CheckServer with no chain = %v, want an error that is not a refusal of the bundle", err)
	}
}

func TestNeedsReissue(t *testing.T) {
	ca := newCAs(t)
	byOld := newServer(t, ca.old, "node-1")
	byNew := newServer(t, ca.new, "node-1")
	oldNew := bundleOf(t, ca.new.cert, ca.old.cert)
	tests := []struct {
		name    string
		leaf    *x509.Certificate
		b       Bundle
		need    bool
		issuing *x509.Certificate
	}{
		{"leaf by old CA, bundle old and new", byOld, oldNew, true, ca.new.cert},
		{"leaf by new CA", byNew, oldNew, false, ca.new.cert},
		{"leaf by the only CA", byOld, bundleOf(t, ca.old.cert), false, ca.old.cert},
		{"no leaf", nil, oldNew, false, ca.new.cert},
		{"empty bundle", byOld, Bundle{}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issuing, need := NeedsReissue(tt.leaf, tt.b)
			if need != tt.need || !same(issuing, tt.issuing) {
				t.Errorf("NeedsReissue = %s, %v; want %s, %v", cn(issuing), need, cn(tt.issuing), tt.need)
			}
		})
	}
}

func TestSigners(t *testing.T) {
	all := []Published{{Signer: SignerKubeletServing}, {Signer: SignerAPIServerServing}, {Signer: SignerKubeletServing}}
	want := []string{SignerAPIServerServing, SignerKubeletServing}
	if got := Signers(all); !slices.Equal(got, want) {
		t.Errorf("Signers = %v, want %v", got, want)
	}
}
