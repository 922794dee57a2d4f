package controlplane_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/test/controlplane"
)

// TestControlPlane starts a real control plane, authenticates with a
// bootstrap token through a written bootstrap kubeconfig, and restarts the
// apiserver.
func TestControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	bins, err := controlplane.EnsureBinaries(ctx, t.Logf)
	if err != nil {
		t.Fatalf("EnsureBinaries: %v", err)
	}
	start := time.Now()
	cp, err := controlplane.Start(ctx, bins, controlplane.Options{Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(cp.Stop)
	t.Logf("Start took %s", time.Since(start).Round(time.Millisecond))

	token, err := cp.CreateBootstrapToken(ctx, controlplane.TokenOptions{AutoApprove: true})
	if err != nil {
		t.Fatalf("CreateBootstrapToken: %v", err)
	}
	id, _, ok := strings.Cut(token, ".")
	if !ok || len(id) != 6 || len(token) != 6+1+16 {
		t.Fatalf("token %q is not <id:6>.<secret:16>", token)
	}

	for _, embedCA := range []bool{true, false} {
		path := filepath.Join(t.TempDir(), "bootstrap-kubelet.conf")
		if err := cp.WriteBootstrapKubeconfig(path, token, embedCA); err != nil {
			t.Fatalf("WriteBootstrapKubeconfig(embedCA=%v): %v", embedCA, err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("bootstrap kubeconfig mode: %v, %v; want 0600", fi.Mode(), err)
		}
		client := bootstrapClient(t, path, token)
		assertBootstrapIdentity(ctx, t, client, id)
	}

	// The audit log names each request's resource and answer.
	evs, err := cp.AuditEvents(start, time.Now().Add(time.Second), func(ev controlplane.AuditEvent) bool {
		return ev.User.Username == "system:bootstrap:"+id
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Verb != "create" || evs[0].ObjectRef == nil || evs[0].ObjectRef.Resource != "selfsubjectreviews" ||
		evs[0].ResponseStatus == nil || evs[0].ResponseStatus.Code != 201 || !slices.Contains(evs[0].User.Groups, "system:bootstrappers") {
		t.Errorf("audit events of the two SelfSubjectReviews: %+v", evs)
	}
	for name, pid := range map[string]int{"kube-apiserver": cp.APIServerPID(), "kube-controller-manager": cp.ControllerManagerPID()} {
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(cmdline), name) {
			t.Errorf("%s pid %d: cmdline %q, %v", name, pid, cmdline, err)
		}
	}

	// Outage: the apiserver goes away and comes back on the same URL.
	path := filepath.Join(t.TempDir(), "bootstrap-kubelet.conf")
	if err := cp.WriteBootstrapKubeconfig(path, token, true); err != nil {
		t.Fatalf("WriteBootstrapKubeconfig: %v", err)
	}
	client := bootstrapClient(t, path, token)
	if err := cp.StopAPIServer(); err != nil {
		t.Fatalf("StopAPIServer: %v", err)
	}
	if pid := cp.APIServerPID(); pid != 0 {
		t.Errorf("APIServerPID() = %d while it is stopped, want 0", pid)
	}
	reqCtx, reqCancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = client.AuthenticationV1().SelfSubjectReviews().Create(reqCtx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	reqCancel()
	if err == nil {
		t.Fatal("SelfSubjectReview succeeded while the apiserver was stopped")
	}
	restart := time.Now()
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatalf("StartAPIServer: %v", err)
	}
	t.Logf("StartAPIServer took %s", time.Since(restart).Round(time.Millisecond))
	assertBootstrapIdentity(ctx, t, client, id)
}

// bootstrapClient loads the kubeconfig at path and checks that it carries
// token as a bearer token.
func bootstrapClient(t *testing.T, path, token string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	if cfg.BearerToken != token {
		t.Fatalf("bearer token in %s = %q, want %q", path, cfg.BearerToken, token)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client from %s: %v", path, err)
	}
	return client
}

// assertBootstrapIdentity checks that client authenticates as the bootstrap
// token id in kubeadm's default node-token group.
func assertBootstrapIdentity(ctx context.Context, t *testing.T, client kubernetes.Interface, id string) {
	t.Helper()
	ssr, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview: %v", err)
	}
	u := ssr.Status.UserInfo
	if want := "system:bootstrap:" + id; u.Username != want {
		t.Errorf("username = %q, want %q", u.Username, want)
	}
	for _, g := range []string{controlplane.GroupAutoApprove, "system:bootstrappers", "system:authenticated"} {
		if !slices.Contains(u.Groups, g) {
			t.Errorf("groups = %v, missing %q", u.Groups, g)
		}
	}
}
