package bootstrap

import (
	"context"
	"errors"
	"slices"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

// TestServingNamesTheNodeDoesNotReport: once the serving CSR waits, the
// bootstrapper reads the Node with the node's credential and tells
// OnServingNames which names it does not report (none when it reports them
// all); a Node not there yet (a new node: its kubelet registers it later) or
// one it cannot read tells nothing: only the log says what a new node's first
// serving CSR needs.
func TestServingNamesTheNodeDoesNotReport(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []corev1.NodeAddress
		err   error
		want  []string // nil: OnServingNames not called
	}{
		{"every name reported", []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.7"}}, nil, []string{}},
		{"the address not reported", []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.8"}}, nil,
			[]string{"10.0.0.7 is not an address of Node node-a"}},
		{"no Node yet", nil, apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, "node-a"), nil},
		{"the Node unreadable", nil, errors.New("forbidden"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if csr := a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest); csr.Spec.SignerName != certificatesv1.KubeletServingSignerName {
					f.sign(csr)
				}
				return false, nil, nil
			})
			f.cfg.NodeAddresses = func(_ context.Context, cred Credential, name string) ([]corev1.NodeAddress, error) {
				if cred.Bootstrap || name != "node-a" {
					t.Errorf("Node %s read with the bootstrap credential %v", name, cred.Bootstrap)
				}
				return tc.addrs, tc.err
			}
			var got []string
			f.cfg.OnServingNames = func(csrName string, unreported []string) { got = append([]string{}, unreported...) }
			// The serving CSR is approved once it waits (after the look).
			f.cfg.OnWaiting = func(kind Kind, csrName string) {
				if kind != Serving || csrName == "" {
					return
				}
				go func() {
					csrs := f.client.CertificatesV1().CertificateSigningRequests()
					csr, err := csrs.Get(context.Background(), csrName, metav1.GetOptions{})
					if err == nil {
						f.sign(csr)
						_, err = csrs.UpdateStatus(context.Background(), csr, metav1.UpdateOptions{})
					}
					if err != nil {
						t.Error(err)
					}
				}()
			}
			b := f.bootstrapper()
			if _, err := b.EnsureClient(context.Background(), false); err != nil {
				t.Fatal(err)
			}
			if res, err := b.EnsureServing(context.Background(), false); err != nil || !res.Stored {
				t.Fatalf("EnsureServing = %v, %v", res.Stored, err)
			}
			if (got == nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
				t.Errorf("OnServingNames heard %q, want %q", got, tc.want)
			}
		})
	}
}
