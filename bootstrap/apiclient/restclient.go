package apiclient

import (
	"context"
	"net/http"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	certificatesv1beta1 "k8s.io/api/certificates/v1beta1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// CSRClient is the part of the CertificateSigningRequest API certagent uses.
// client-go's typed client (and its fake) satisfies it.
type CSRClient interface {
	Create(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, opts metav1.CreateOptions) (*certificatesv1.CertificateSigningRequest, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*certificatesv1.CertificateSigningRequest, error)
	List(ctx context.Context, opts metav1.ListOptions) (*certificatesv1.CertificateSigningRequestList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// A scheme with only the API groups certagent speaks. client-go's typed
// clients register every built-in API group (k8s.io/client-go/kubernetes/scheme);
// this lean client keeps the binary and its memory small (see the README's
// benchmark).
var (
	scheme       = runtime.NewScheme()
	codecs       = serializer.NewCodecFactory(scheme)
	parameterCdc = runtime.NewParameterCodec(scheme)
)

func init() {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(certificatesv1.AddToScheme(scheme))
	must(certificatesv1beta1.AddToScheme(scheme)) // ClusterTrustBundles before 1.37
	must(authenticationv1.AddToScheme(scheme))
	must(eventsv1.AddToScheme(scheme))
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
}

// restClientFor is a client of the API group gv over hc, the HTTP client of
// the credential rc (Clients).
func restClientFor(rc *rest.Config, hc *http.Client, gv schema.GroupVersion) (*rest.RESTClient, error) {
	cfg := rest.CopyConfig(rc)
	cfg.GroupVersion = &gv
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = codecs.WithoutConversion()
	// Protobuf both ways, as the kubelet's own API client: generated code
	// encodes and decodes it on both ends. JSON made a short-lived
	// bootstrap build reflection codecs for each type it sent or read (a
	// tenth of its CPU, profiled) and costs the API server more per request.
	// A server that answers JSON is still understood.
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return rest.RESTClientForConfigAndClient(cfg, hc)
}

// csrClient implements CSRClient over REST.
type csrClient struct{ c *rest.RESTClient }

const csrResource = "certificatesigningrequests"

// RequestTimeout bounds every request but the watch, so that a hung API
// server cannot hang the agent; the watch is bounded by WatchTimeout.
const RequestTimeout = 30 * time.Second

// WatchTimeout is how long one watch of a pending CSR runs before it is
// resumed: the API server's own default (--min-request-timeout, 30 minutes).
// A CSR that waits hours for a person costs two requests an hour. A server
// that stops talking is caught by the watch's client-side bound and by
// HTTP/2 pings.
const WatchTimeout = 30 * time.Minute

func (c *csrClient) Create(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, opts metav1.CreateOptions) (*certificatesv1.CertificateSigningRequest, error) {
	out := &certificatesv1.CertificateSigningRequest{}
	err := c.c.Post().Timeout(RequestTimeout).Resource(csrResource).VersionedParams(&opts, parameterCdc).Body(csr).Do(ctx).Into(out)
	return out, err
}

func (c *csrClient) Get(ctx context.Context, name string, opts metav1.GetOptions) (*certificatesv1.CertificateSigningRequest, error) {
	out := &certificatesv1.CertificateSigningRequest{}
	err := c.c.Get().Timeout(RequestTimeout).Resource(csrResource).Name(name).VersionedParams(&opts, parameterCdc).Do(ctx).Into(out)
	return out, err
}

func (c *csrClient) List(ctx context.Context, opts metav1.ListOptions) (*certificatesv1.CertificateSigningRequestList, error) {
	out := &certificatesv1.CertificateSigningRequestList{}
	err := c.c.Get().Timeout(RequestTimeout).Resource(csrResource).VersionedParams(&opts, parameterCdc).Do(ctx).Into(out)
	return out, err
}

func (c *csrClient) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	if opts.TimeoutSeconds == nil {
		secs := int64(WatchTimeout / time.Second)
		opts.TimeoutSeconds = &secs
	}
	return c.c.Get().Resource(csrResource).VersionedParams(&opts, parameterCdc).Watch(ctx)
}
