// Command capi checks a KubeadmConfigTemplate against Cluster API's Go types
// and renders the cloud-init user-data that Cluster API's kubeadm bootstrap
// provider makes of it for a worker Machine, with Cluster API's own code
// (sigs.k8s.io/cluster-api v1.14.2, the version go.mod pins), for the node
// suite's TestClusterAPIJoin.
//
//	capi -template F -endpoint HOST:PORT -token T -ca-cert-hash sha256:H -kubernetes-version v1.37.2
//
// It decodes F strictly (an unknown or misspelt field is an error), then does
// what the KubeadmConfig reconciler's joinWorker does for a Machine of that
// version: fills the token discovery as reconcileDiscovery does (the
// endpoint, token and CA hashes a Cluster's control plane provides), adds
// the node-uninitialized taint, marshals the JoinConfiguration for the
// kubeadm API of the version (MarshalJoinConfigurationForVersion) and writes
// cloudinit.NewNode's output to stdout. Files must have inline content (no
// contentFrom, no contentFormat: template, which need a management cluster).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/blang/semver/v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	bootstrapv1 "sigs.k8s.io/cluster-api/api/bootstrap/kubeadm/v1beta2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/bootstrap/kubeadm/pkg/cloudinit"
	kubeadmtypes "sigs.k8s.io/cluster-api/bootstrap/kubeadm/pkg/types"
	"sigs.k8s.io/yaml"
)

func main() {
	tmplPath := flag.String("template", "", "the KubeadmConfigTemplate (YAML)")
	endpoint := flag.String("endpoint", "", "the Cluster's controlPlaneEndpoint, host:port")
	token := flag.String("token", "", "a bootstrap token")
	caHash := flag.String("ca-cert-hash", "", "sha256:<hex> of the cluster CA's public key")
	version := flag.String("kubernetes-version", "", "the Machine's Kubernetes version")
	flag.Parse()
	out, err := render(*tmplPath, *endpoint, *token, *caHash, *version)
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "capi:", err)
	os.Exit(1)
}

func render(path, endpoint, token, caHash, version string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var tmpl bootstrapv1.KubeadmConfigTemplate
	if err := yaml.UnmarshalStrict(data, &tmpl); err != nil {
		return nil, fmt.Errorf("%s is not a valid KubeadmConfigTemplate: %w", path, err)
	}
	if gvk := tmpl.GroupVersionKind(); gvk != bootstrapv1.GroupVersion.WithKind("KubeadmConfigTemplate") {
		return nil, fmt.Errorf("%s is a %s, want a %s", path, gvk, bootstrapv1.GroupVersion.WithKind("KubeadmConfigTemplate"))
	}
	v, err := semver.ParseTolerant(version)
	if err != nil {
		return nil, fmt.Errorf("-kubernetes-version %q: %w", version, err)
	}
	spec := tmpl.Spec.Template.Spec // what the KubeadmConfig of each Machine gets
	if spec.JoinConfiguration.ControlPlane != nil {
		return nil, fmt.Errorf("%s: joinConfiguration.controlPlane is set: a worker template cannot have it", path)
	}
	// reconcileDiscovery: what the Cluster provides unless the template sets it.
	bt := &spec.JoinConfiguration.Discovery.BootstrapToken
	if bt.APIServerEndpoint == "" {
		bt.APIServerEndpoint = endpoint
	}
	if bt.Token == "" {
		bt.Token = token
	}
	if len(bt.CACertHashes) == 0 {
		bt.CACertHashes = []string{caHash}
	}
	// joinWorker.
	jc := spec.JoinConfiguration.DeepCopy()
	taints := ptr.Deref(jc.NodeRegistration.Taints, []corev1.Taint{})
	jc.NodeRegistration.Taints = ptr.To(append(taints, clusterv1.NodeUninitializedTaint))
	joinData, err := kubeadmtypes.MarshalJoinConfigurationForVersion(jc, v)
	if err != nil {
		return nil, fmt.Errorf("marshalling the JoinConfiguration for %s: %w", v, err)
	}
	for _, f := range spec.Files {
		if f.ContentFrom.IsDefined() || f.ContentFormat != "" {
			return nil, fmt.Errorf("file %s: contentFrom and contentFormat need a management cluster; this renderer takes inline content only", f.Path)
		}
	}
	verbosity := ""
	if spec.Verbosity != nil {
		verbosity = fmt.Sprintf("--v %d", *spec.Verbosity)
	}
	in := &cloudinit.NodeInput{
		BaseUserData: cloudinit.BaseUserData{
			AdditionalFiles:     spec.Files,
			BootCommands:        spec.BootCommands,
			PreKubeadmCommands:  spec.PreKubeadmCommands,
			PostKubeadmCommands: spec.PostKubeadmCommands,
			Mounts:              spec.Mounts,
			KubeadmVerbosity:    verbosity,
			KubernetesVersion:   v,
		},
		JoinConfiguration: joinData,
	}
	if spec.NTP.IsDefined() {
		in.NTP = &spec.NTP
	}
	if spec.DiskSetup.IsDefined() {
		in.DiskSetup = &spec.DiskSetup
	}
	if len(spec.Users) > 0 {
		return nil, fmt.Errorf("users need a management cluster (password secrets); not rendered here")
	}
	return cloudinit.NewNode(in)
}
