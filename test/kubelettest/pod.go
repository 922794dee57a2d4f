package kubelettest

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/noderuntime"
)

// StartPod runs the test image on the node: a pod bound to it (no
// scheduler runs), its container printing "hello from NODE <n>" every
// second; it returns the pod's name once it is Running. The control plane
// runs no service-account controller, so the namespace's default
// ServiceAccount is made here; the pod mounts no token.
func StartPod(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, node string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	_, err := cp.Admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	no, grace := false, int64(1)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "logger-" + node, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "logger", Image: noderuntime.ImageName, ImagePullPolicy: corev1.PullNever,
				Args: []string{"log", "hello from", node},
			}},
		},
	}
	if _, err := cp.Admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePod(cp, pod.Name) })
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		p, err := cp.Admin.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			return pod.Name, time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not Running after 2 minutes: %v %+v", pod.Name, err, p.Status)
		}
	}
}

// deletePod deletes the pod while the kubelet still runs, so that it stops
// the containers and tears the sandbox's network down, and waits up to 30 s
// for it to be gone.
func deletePod(cp *controlplane.ControlPlane, name string) {
	_ = cp.Admin.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if _, err := cp.Admin.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
	}
}
