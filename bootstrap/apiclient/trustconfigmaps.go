package apiclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/trust"
)

// Where clusters without the ClusterTrustBundle API publish trust: the
// kube-public namespace, readable by convention. kube-controller-manager
// keeps kube-root-ca.crt there (its --root-ca-file, the same CAs it would
// publish for the API server's serving signer); the operator publishes the
// kubelet signers' CAs in certagent-trust (docs/ca-rotation.md).
const (
	publicNamespace   = "kube-public"
	rootCAConfigMap   = "kube-root-ca.crt"
	trustConfigMap    = "certagent-trust"
	kubeletClientKey  = "kube-apiserver-client-kubelet.crt"
	kubeletServingKey = "kubelet-serving.crt"
)

// configMap is the part of a ConfigMap read here (as JSON: the lean scheme
// stays without the core API group).
type configMap struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Data map[string]string `json:"data"`
}

// publishedIn translates the ConfigMaps of kube-public into published trust.
func publishedIn(cms []configMap) []trust.Published {
	var out []trust.Published
	for _, cm := range cms {
		from := "ConfigMap " + publicNamespace + "/" + cm.Metadata.Name
		switch cm.Metadata.Name {
		case rootCAConfigMap:
			out = append(out, trust.Published{Name: from, Signer: trust.SignerAPIServerServing, PEM: cm.Data["ca.crt"]})
		case trustConfigMap:
			for key, signer := range map[string]string{kubeletClientKey: trust.SignerKubeletClient, kubeletServingKey: trust.SignerKubeletServing} {
				if v, ok := cm.Data[key]; ok {
					out = append(out, trust.Published{Name: from + " " + key, Signer: signer, PEM: v})
				}
			}
		}
	}
	return out
}

// coreClient is a JSON client of the core API group over the credential's transport.
func (a *API) coreClient() (*rest.RESTClient, error) {
	cfg := rest.CopyConfig(a.cfg)
	cfg.APIPath = "/api"
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.NegotiatedSerializer = codecs.WithoutConversion()
	cfg.ContentType, cfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	return rest.RESTClientForConfigAndClient(cfg, a.http)
}

// listConfigMaps lists kube-public's ConfigMaps.
func (a *API) listConfigMaps(ctx context.Context) ([]trust.Published, string, error) {
	c, err := a.coreClient()
	if err != nil {
		return nil, "", fmt.Errorf("building the ConfigMap client: %w", err)
	}
	raw, err := c.Get().Timeout(RequestTimeout).Namespace(publicNamespace).Resource("configmaps").DoRaw(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("listing the ConfigMaps of %s: %w", publicNamespace, err)
	}
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []configMap `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, "", fmt.Errorf("reading the ConfigMaps of %s: %w", publicNamespace, err)
	}
	return publishedIn(list.Items), list.Metadata.ResourceVersion, nil
}

// watchConfigMaps watches kube-public's ConfigMaps; the events carry no
// object (the Follower lists again after a change).
func (a *API) watchConfigMaps(ctx context.Context, resourceVersion string) (watch.Interface, error) {
	c, err := a.coreClient()
	if err != nil {
		return nil, fmt.Errorf("building the ConfigMap client: %w", err)
	}
	secs := int64(WatchTimeout.Seconds())
	opts := metav1.ListOptions{Watch: true, ResourceVersion: resourceVersion, TimeoutSeconds: &secs}
	body, err := c.Get().Namespace(publicNamespace).Resource("configmaps").VersionedParams(&opts, parameterCdc).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("watching the ConfigMaps of %s: %w", publicNamespace, err)
	}
	return watch.NewStreamWatcher(&jsonEvents{body: body, dec: json.NewDecoder(body)},
		apierrors.NewClientErrorReporter(http.StatusInternalServerError, http.MethodGet, "ClientWatchDecoding")), nil
}

// jsonEvents decodes a JSON watch stream into events without objects,
// but for an error's Status.
type jsonEvents struct {
	body io.ReadCloser
	dec  *json.Decoder
}

func (d *jsonEvents) Decode() (watch.EventType, runtime.Object, error) {
	var ev struct {
		Type   watch.EventType `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	if err := d.dec.Decode(&ev); err != nil {
		return "", nil, err
	}
	if ev.Type == watch.Error {
		st := &metav1.Status{}
		if err := json.Unmarshal(ev.Object, st); err != nil {
			return "", nil, err
		}
		return ev.Type, st, nil
	}
	return ev.Type, &metav1.PartialObjectMetadata{}, nil
}

func (d *jsonEvents) Close() { _ = d.body.Close() }
