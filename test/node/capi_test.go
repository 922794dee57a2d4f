package node

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// clusterAPIExample is certagent's KubeadmConfigTemplate example.
const clusterAPIExample = "../../packaging/cluster-api/kubeadmconfigtemplate.yaml"

// clusterAPICRD is the KubeadmConfigTemplate CRD of the Cluster API release
// test/tools/capi pins, from that module's files in the module cache.
func clusterAPICRD(t *testing.T) []byte {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/cluster-api")
	cmd.Dir = "../tools/capi"
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download sigs.k8s.io/cluster-api: %v", err)
	}
	var m struct{ Dir, Version string }
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(m.Dir, "bootstrap/kubeadm/config/crd/bases/bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml"))
	if err != nil {
		t.Fatalf("the KubeadmConfigTemplate CRD of sigs.k8s.io/cluster-api %s: %v", m.Version, err)
	}
	t.Logf("KubeadmConfigTemplate CRD of sigs.k8s.io/cluster-api %s", m.Version)
	return data
}

func unstructuredYAML(t *testing.T, data []byte) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	return u
}

// validateAgainstCRD installs Cluster API's CRD in the test control plane
// and has the API server check the example as `kubectl apply
// --dry-run=server --validate=strict` would: the CRD's OpenAPI schema and its
// validation rules, unknown fields refused.
func validateAgainstCRD(t *testing.T, example []byte) {
	t.Helper()
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(cp.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	crd := unstructuredYAML(t, clusterAPICRD(t))
	if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating the CRD: %v", err)
	}
	waitUntil(t, "the CRD established", 30*time.Second, func() bool {
		got, err := crds.Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return true
			}
		}
		return false
	})
	templates := dyn.Resource(schema.GroupVersionResource{Group: "bootstrap.cluster.x-k8s.io", Version: "v1beta2", Resource: "kubeadmconfigtemplates"})
	create := func(obj *unstructured.Unstructured) error {
		_, err := templates.Namespace(obj.GetNamespace()).Create(ctx, obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
		return err
	}
	// The API server serves a new CRD's resource a moment after it is
	// established: retry while it answers NotFound.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		err := create(unstructuredYAML(t, example))
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			t.Fatalf("the API server refuses the example: %v", err)
		}
	}
	// The check is strict: a misspelt field is refused.
	bad := unstructuredYAML(t, example)
	if err := unstructured.SetNestedField(bad.Object, "/x", "spec", "template", "spec", "joinConfiguration", "patches", "dir"); err != nil {
		t.Fatal(err)
	}
	if err := create(bad); err == nil || !strings.Contains(err.Error(), `unknown field "spec.template.spec.joinConfiguration.patches.dir"`) {
		t.Fatalf("a KubeadmConfigTemplate with a misspelt field: %v, want it refused", err)
	}
}

// buildRenderer builds test/tools/capi, Cluster API's own cloud-init
// rendering for a worker Machine.
func buildRenderer(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "capi")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = "../tools/capi"
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building test/tools/capi: %v\n%s", err, b)
	}
	return out
}

// TestClusterAPIJoin checks certagent's KubeadmConfigTemplate example against
// Cluster API's CRD on a real API server, renders it with Cluster API's own
// code into the cloud-init a worker Machine gets, and boots a real systemd
// node with that cloud-init: it installs certagent and joins with kubeadm,
// certagent making both CSRs and the kubelet (the stand-in) running on its
// files.
func TestClusterAPIJoin(t *testing.T) {
	example, err := os.ReadFile(clusterAPIExample)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the example is valid against Cluster API's CRD", func(t *testing.T) {
		validateAgainstCRD(t, example)
	})

	join, err := kubeadmCluster()
	if err != nil {
		t.Fatal(err)
	}
	tokenID, _, _ := strings.Cut(join.Token, ".")
	name := fmt.Sprintf("ca-capi-%d", time.Now().UnixNano()%1000000)
	debName := filepath.Base(deb)

	// What differs here from a cloud: the package comes from a file, not a
	// repository, and two preflight checks of a container are ignored (see
	// TestKubeadmJoin).
	tmpl := string(example)
	for old, new := range map[string]string{
		"      - apt-get install -y certagent\n": "      - dpkg -i /root/dist/" + debName + "\n",
		"        nodeRegistration:\n":            "        nodeRegistration:\n          ignorePreflightErrors: [" + preflightNoRuntime + "]\n",
	} {
		if strings.Count(tmpl, old) != 1 {
			t.Fatalf("the example does not have %q once", old)
		}
		tmpl = strings.Replace(tmpl, old, new, 1)
	}
	tmplFile := filepath.Join(t.TempDir(), "template.yaml")
	writeFile(t, tmplFile, tmpl, 0o644)
	v, err := exec.Command(kubeadmSetup.kubeadm, "version", "-o", "short").Output()
	if err != nil {
		t.Fatalf("kubeadm version: %v", err)
	}
	version := strings.TrimSpace(string(v))
	render := exec.Command(buildRenderer(t), "-template", tmplFile, "-endpoint", join.Endpoint, "-token", join.Token,
		"-ca-cert-hash", join.CACertHash, "-kubernetes-version", version)
	userData, err := render.Output()
	if err != nil {
		t.Fatalf("rendering the example as Cluster API does: %v\n%s", err, exitStderr(err))
	}
	// A minbase root file system has no locales (see userData).
	userData = append(userData, "locale: false\n"...)
	t.Logf("the user-data Cluster API renders (with the test's two changes):\n%s", strings.ReplaceAll(string(userData), join.Token, "<token>"))

	from := time.Now()
	startApprover(t, name)
	c := boot(t, rootfs, name, func(root string) {
		seed := filepath.Join(root, "var/lib/cloud/seed/nocloud")
		writeFile(t, filepath.Join(seed, "meta-data"), "instance-id: "+name+"\nlocal-hostname: "+name+"\n", 0o644)
		writeFile(t, filepath.Join(seed, "user-data"), string(userData), 0o600)
		copyFile(t, deb, filepath.Join(root, "root/dist", debName))
		prepareKubeadmNode(t, root)
	})

	t.Run("cloud-init installs certagent and kubeadm join completes", func(t *testing.T) {
		out, _ := c.exec(6*time.Minute, "cloud-init", "status", "--wait", "--long")
		log, _ := c.exec(time.Minute, "cat", "/var/log/cloud-init-output.log")
		if !strings.Contains(out, "status: done") || !strings.Contains(log, "This node has joined the cluster") {
			t.Fatalf("cloud-init: %s\n%s", out, tail([]byte(log), 6000))
		}
		if !exists(c.file("/run/cluster-api/bootstrap-success.complete")) {
			t.Error("no /run/cluster-api/bootstrap-success.complete: Cluster API would not see the machine bootstrapped")
		}
		t.Logf("booted to joined in %s", time.Since(from).Round(time.Millisecond))
	})

	t.Run("certagent made both CSRs and the kubelet runs on its files", func(t *testing.T) {
		checkCertagentMadeBothCSRs(t, name, tokenID, from)
		checkKubeletOnCertagentFiles(t, c, name)
		cfg := c.must("certagent", "config")
		if !strings.Contains(cfg, name) || !strings.Contains(cfg, "50-cluster-api.yaml") {
			t.Errorf("certagent's node name does not come from the rendered files entry:\n%s", cfg)
		}
	})
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
