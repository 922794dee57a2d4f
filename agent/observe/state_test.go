package observe

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
)

func TestStatusLine(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name           string
		client, server Cert
		identity       error
		want           string
	}{
		{"both valid", Cert{NotAfter: now.Add(100 * 24 * time.Hour), Deadline: now.Add(80 * 24 * time.Hour)},
			Cert{NotAfter: now.Add(time.Hour), Deadline: now.Add(30 * time.Minute)}, nil,
			"client valid until 2027-03-02 12:00Z, renews 2027-02-10 12:00Z; serving: valid until 2026-11-22 13:00Z, renews 2026-11-22 12:30Z"},
		{"serving waiting", Cert{NotAfter: now.Add(48 * time.Hour), Deadline: now.Add(-time.Minute)},
			Cert{WaitingCSR: "node-csr-abc"}, nil,
			"client valid until 2026-11-24 12:00Z, renews 2026-11-22 11:59Z; serving: waiting for approval of node-csr-abc (kubectl certificate approve node-csr-abc)"},
		{"serving waiting for names the Node does not report", Cert{NotAfter: now.Add(48 * time.Hour), Deadline: now.Add(-time.Minute)},
			Cert{WaitingCSR: "node-csr-abc", Unreported: []string{"192.0.2.9 is not an address of Node n", "DNS name x.example is not Node n's name nor one of its DNS addresses"}}, nil,
			"client valid until 2026-11-24 12:00Z, renews 2026-11-22 11:59Z; serving: waiting for approval of node-csr-abc; an approver checking the Node will refuse it: 192.0.2.9 is not an address of Node n; DNS name x.example is not Node n's name nor one of its DNS addresses"},
		{"no credentials", Cert{LastErr: bootstrap.ErrNoCredentials}, Cert{LastErr: bootstrap.ErrNeedClient}, nil,
			"waiting for a bootstrap kubeconfig at /etc/kubernetes/bootstrap-kubelet.conf (no valid /etc/kubernetes/kubelet.conf); serving: waiting for a client certificate the API server accepts"},
		{"renamed node", Cert{LastErr: fmt.Errorf("%w: %w", bootstrap.ErrNoCredentials, &bootstrap.OtherNodeError{User: "system:node:old", Want: "system:node:n"})},
			Cert{LastErr: bootstrap.ErrNeedClient}, nil,
			"/etc/kubernetes/kubelet.conf is system:node:old's, not this node's (system:node:n): drop a bootstrap kubeconfig at /etc/kubernetes/bootstrap-kubelet.conf to bootstrap as this node, or set nodeName: old; serving: waiting for a client certificate the API server accepts"},
		{"failing", Cert{NotAfter: now.Add(48 * time.Hour), LastErr: context.DeadlineExceeded, RetryAt: now.Add(8 * time.Second)}, Cert{}, nil,
			"client valid until 2026-11-24 12:00Z, retrying at 12:00:08Z after: context deadline exceeded; serving: starting"},
		{"rejected", Cert{NotAfter: now.Add(48 * time.Hour), LastErr: fmt.Errorf("%w: 401", bootstrap.ErrIdentityRejected)}, Cert{LastErr: bootstrap.ErrNeedClient},
			errors.New("checking that the API server accepts kubelet.conf: Unauthorized"),
			"client rejected by the API server (Unauthorized); drop a bootstrap kubeconfig at /etc/kubernetes/bootstrap-kubelet.conf to bootstrap again; serving: waiting for a client certificate the API server accepts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.NodeName = "n"
			c := NewCerts()
			c.Update(bootstrap.Client, func(s *Cert) { *s = tc.client })
			c.Update(bootstrap.Serving, func(s *Cert) { *s = tc.server })
			c.SetIdentity(bootstrap.Identity{Err: tc.identity})
			if got := c.StatusLine(cfg, now); got != tc.want {
				t.Fatalf("status line\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}
