package apiclient

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/trust"
)

// trustServer answers the requests of a trust.Source as an API server of
// one kind would: serving ClusterTrustBundles in the versions served, or
// kube-public's ConfigMaps.
func trustServer(t *testing.T, served map[string]bool) (*httptest.Server, *rest.Config) {
	mux := http.NewServeMux()
	ctb := func(version string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !served[version] {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"kind":"ClusterTrustBundleList","apiVersion":"certificates.k8s.io/%s","metadata":{"resourceVersion":"7"},
"items":[{"metadata":{"name":"kubernetes.io:kube-apiserver-serving:abc"},"spec":{"signerName":"kubernetes.io/kube-apiserver-serving","trustBundle":"PEM-%s"}}]}`, version, version)
		}
	}
	mux.HandleFunc("/apis/certificates.k8s.io/v1/clustertrustbundles", ctb("v1"))
	mux.HandleFunc("/apis/certificates.k8s.io/v1beta1/clustertrustbundles", ctb("v1beta1"))
	mux.HandleFunc("/api/v1/namespaces/kube-public/configmaps", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") == "true" {
			fmt.Fprint(w, `{"type":"MODIFIED","object":{"kind":"ConfigMap","metadata":{"name":"certagent-trust"}}}`+"\n")
			w.(http.Flusher).Flush()
			return
		}
		fmt.Fprint(w, `{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[
{"metadata":{"name":"kube-root-ca.crt"},"data":{"ca.crt":"ROOT"}},
{"metadata":{"name":"certagent-trust"},"data":{"kube-apiserver-client-kubelet.crt":"CLIENT","kubelet-serving.crt":"SERVING"}},
{"metadata":{"name":"cluster-info"},"data":{"kubeconfig":"x"}}]}`)
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"gitVersion":"v1.37.2"}`) })
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv, &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
}

// TestTrustSourceSpeaksEveryVersion: ClusterTrustBundles in v1 where served,
// else v1beta1, else kube-public's kube-root-ca.crt and certagent-trust
// ConfigMaps, each as the signer it stands for; a watch of the ConfigMaps
// reports a change.
func TestTrustSourceSpeaksEveryVersion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		served map[string]bool
		want   []trust.Published
	}{
		{"1.37", map[string]bool{"v1": true, "v1beta1": true}, []trust.Published{{Name: "kubernetes.io:kube-apiserver-serving:abc", Signer: trust.SignerAPIServerServing, PEM: "PEM-v1"}}},
		{"1.33 with the gate", map[string]bool{"v1beta1": true}, []trust.Published{{Name: "kubernetes.io:kube-apiserver-serving:abc", Signer: trust.SignerAPIServerServing, PEM: "PEM-v1beta1"}}},
		{"1.30", nil, []trust.Published{
			{Name: "ConfigMap kube-public/kube-root-ca.crt", Signer: trust.SignerAPIServerServing, PEM: "ROOT"},
			{Name: "ConfigMap kube-public/certagent-trust kube-apiserver-client-kubelet.crt", Signer: trust.SignerKubeletClient, PEM: "CLIENT"},
			{Name: "ConfigMap kube-public/certagent-trust kubelet-serving.crt", Signer: trust.SignerKubeletServing, PEM: "SERVING"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rc := trustServer(t, tc.served)
			api, err := NewClients().ForNode(rc)
			if err != nil {
				t.Fatal(err)
			}
			src := api.TrustBundles()
			got, _, err := src.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			gotJSON, _ := json.Marshal(sortedPublished(got))
			wantJSON, _ := json.Marshal(sortedPublished(tc.want))
			if string(gotJSON) != string(wantJSON) {
				t.Fatalf("published %s, want %s", gotJSON, wantJSON)
			}
			if tc.served != nil {
				return
			}
			w, err := src.Watch(context.Background(), "9")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			select {
			case ev := <-w.ResultChan():
				if ev.Type != watch.Modified {
					t.Fatalf("watch event %s, want MODIFIED", ev.Type)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no watch event")
			}
		})
	}
}

// TestServerChainIsWhatTheConnectionVerified: the chain a trust.Source
// reports is the API server's certificate, and the name is the host's.
func TestServerChainIsWhatTheConnectionVerified(t *testing.T) {
	srv, rc := trustServer(t, nil)
	api, err := NewClients().ForNode(rc)
	if err != nil {
		t.Fatal(err)
	}
	chain, name, err := api.TrustBundles().ServerChain(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) == 0 || !chain[0].Equal(srv.Certificate()) || name != "127.0.0.1" {
		t.Fatalf("chain of %d, leaf %v, name %q; want the test server's certificate for 127.0.0.1", len(chain), chain[0].Subject, name)
	}
}

func sortedPublished(p []trust.Published) []trust.Published {
	out := slices.Clone(p)
	slices.SortFunc(out, func(a, b trust.Published) int { return strings.Compare(a.Name, b.Name) })
	return out
}
