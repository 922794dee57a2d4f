package controlplane_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// TestPrepareKubeadm prepares a control plane with the real kubeadm's init
// phases and checks what a joining node's discovery reads: cluster-info
// signed for the token (by the controller-manager's bootstrapsigner), naming
// this API server, and the kubeadm-config and kubelet-config ConfigMaps.
func TestPrepareKubeadm(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bins, err := controlplane.EnsureBinaries(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	kubeadm, err := controlplane.EnsureKubeadm(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.Start(ctx, bins, controlplane.Options{Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	start := time.Now()
	join, err := cp.PrepareKubeadm(ctx, kubeadm)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prepared in %s: join %s --token %s… --discovery-token-ca-cert-hash %s", time.Since(start).Round(time.Millisecond), join.Endpoint, join.Token[:7], join.CACertHash)
	if !strings.HasPrefix(cp.URL, "https://"+join.Endpoint) {
		t.Errorf("endpoint %s, API server %s", join.Endpoint, cp.URL)
	}
	id, _, _ := strings.Cut(join.Token, ".")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		cm, err := cp.Admin.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, "cluster-info", metav1.GetOptions{})
		if err == nil && cm.Data["jws-kubeconfig-"+id] != "" {
			if !strings.Contains(cm.Data["kubeconfig"], "server: "+cp.URL) {
				t.Errorf("cluster-info names another server:\n%s", cm.Data["kubeconfig"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster-info not signed for token %s within a minute: %v %v", id, cm, err)
		}
	}
	for _, name := range []string{"kubeadm-config", "kubelet-config"} {
		if _, err := cp.Admin.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("kube-system/%s: %v", name, err)
		}
	}
}
