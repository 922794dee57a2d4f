package apiclient

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	certificatesv1beta1 "k8s.io/api/certificates/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/trust"
)

const ctbResource = "clustertrustbundles"

// TrustBundles reads the ClusterTrustBundles in the newest version the API
// server serves: certificates.k8s.io/v1 (1.37), else v1beta1 (1.33–1.36,
// where turned on); where neither is served, the ConfigMaps of kube-public
// (trustconfigmaps.go). It is a trust.Source.
type TrustBundles struct {
	a          *API
	gv         schema.GroupVersion // found by List
	configMaps bool                // no ClusterTrustBundle API: List read kube-public
}

// TrustBundles is the ClusterTrustBundle API of this credential.
func (a *API) TrustBundles() *TrustBundles { return &TrustBundles{a: a} }

// List implements trust.Source.
func (t *TrustBundles) List(ctx context.Context) ([]trust.Published, string, error) {
	for _, gv := range []schema.GroupVersion{certificatesv1.SchemeGroupVersion, certificatesv1beta1.SchemeGroupVersion} {
		c, err := restClientFor(t.a.cfg, t.a.http, gv)
		if err != nil {
			return nil, "", fmt.Errorf("building the ClusterTrustBundle client: %w", err)
		}
		req := c.Get().Timeout(RequestTimeout).Resource(ctbResource)
		var out []trust.Published
		var rv string
		if gv == certificatesv1.SchemeGroupVersion {
			list := &certificatesv1.ClusterTrustBundleList{}
			err = req.Do(ctx).Into(list)
			for _, b := range list.Items {
				out = append(out, trust.Published{Name: b.Name, Signer: b.Spec.SignerName, PEM: b.Spec.TrustBundle})
			}
			rv = list.ResourceVersion
		} else {
			list := &certificatesv1beta1.ClusterTrustBundleList{}
			err = req.Do(ctx).Into(list)
			for _, b := range list.Items {
				out = append(out, trust.Published{Name: b.Name, Signer: b.Spec.SignerName, PEM: b.Spec.TrustBundle})
			}
			rv = list.ResourceVersion
		}
		if apierrors.IsNotFound(err) {
			continue // this version is not served
		}
		if err != nil {
			return nil, "", fmt.Errorf("listing ClusterTrustBundles (%s): %w", gv, err)
		}
		t.gv, t.configMaps = gv, false
		return out, rv, nil
	}
	out, rv, err := t.a.listConfigMaps(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("%w; %w", trust.ErrNotServed, err)
	}
	t.configMaps = true
	return out, rv, nil
}

// Watch implements trust.Source, in the version List found.
func (t *TrustBundles) Watch(ctx context.Context, resourceVersion string) (watch.Interface, error) {
	if t.configMaps {
		return t.a.watchConfigMaps(ctx, resourceVersion)
	}
	if t.gv.Empty() {
		return nil, fmt.Errorf("watching ClusterTrustBundles before listing them")
	}
	c, err := restClientFor(t.a.cfg, t.a.http, t.gv)
	if err != nil {
		return nil, fmt.Errorf("building the ClusterTrustBundle client: %w", err)
	}
	secs := int64(WatchTimeout.Seconds())
	opts := metav1.ListOptions{Watch: true, ResourceVersion: resourceVersion, TimeoutSeconds: &secs, AllowWatchBookmarks: true}
	w, err := c.Get().Resource(ctbResource).VersionedParams(&opts, parameterCdc).Watch(ctx)
	if err != nil {
		return nil, fmt.Errorf("watching ClusterTrustBundles: %w", err)
	}
	return w, nil
}

// ServerChain is the certificate chain the API server presents to this
// credential's connection (leaf first), which the credential's CA has just
// verified, and the name it was verified for.
func (a *API) ServerChain(ctx context.Context) ([]*x509.Certificate, string, error) {
	u, _, err := rest.DefaultServerUrlFor(a.cfg)
	if err != nil {
		return nil, "", fmt.Errorf("the API server's address: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(u.String(), "/")+"/version", nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("reaching the API server: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return nil, "", fmt.Errorf("the connection to the API server is not TLS")
	}
	name := a.cfg.TLSClientConfig.ServerName
	if name == "" {
		name = u.Hostname()
	}
	return resp.TLS.PeerCertificates, name, nil
}

// ServerChain implements trust.Source: the chain this credential's
// connection is verified against.
func (t *TrustBundles) ServerChain(ctx context.Context) ([]*x509.Certificate, string, error) {
	return t.a.ServerChain(ctx)
}
