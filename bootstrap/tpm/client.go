package tpm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/certagent/certagent/protocol/attestation"
)

// serviceClient calls the attestation service's two endpoints over HTTPS,
// verifying the service's certificate against the operator's CA only (never
// the system roots: the user-data names who the service is).
type serviceClient struct {
	base *url.URL
	http *http.Client
}

func newServiceClient(serviceURL string, cas *x509.CertPool, caHash string, timeout time.Duration) (*serviceClient, error) {
	u, err := url.Parse(serviceURL)
	if err != nil {
		return nil, fmt.Errorf("parsing attestation service URL %q: %w", serviceURL, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("attestation service URL %q must be https://host[:port]", serviceURL)
	}
	tlsConfig := &tls.Config{RootCAs: cas, MinVersion: tls.VersionTLS12}
	if cas == nil {
		if err := pinCA(tlsConfig, caHash); err != nil {
			return nil, err
		}
	}
	tr := &http.Transport{
		Proxy:               nil, // a node's proxy settings must not see this exchange
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        1,
		IdleConnTimeout:     30 * time.Second,
	}
	return &serviceClient{base: u, http: &http.Client{Transport: tr, Timeout: timeout}}, nil
}

func (c *serviceClient) begin(ctx context.Context, req *attestation.BeginRequest) (*attestation.BeginResponse, error) {
	var rsp attestation.BeginResponse
	if err := c.call(ctx, attestation.BeginPath, req, &rsp); err != nil {
		return nil, err
	}
	if verr := rsp.Validate(); verr != nil {
		return nil, fmt.Errorf("attestation service's begin answer: %s", verr.Message)
	}
	return &rsp, nil
}

func (c *serviceClient) finish(ctx context.Context, req *attestation.FinishRequest) (*attestation.FinishResponse, error) {
	var rsp attestation.FinishResponse
	if err := c.call(ctx, attestation.FinishPath, req, &rsp); err != nil {
		return nil, err
	}
	if verr := rsp.Validate(); verr != nil {
		return nil, fmt.Errorf("attestation service's finish answer: %s", verr.Message)
	}
	return &rsp, nil
}

// call posts in as JSON and decodes a 200 answer into out. A refusal comes
// back as *attestation.Error (errors.As finds it) with the service's reason.
func (c *serviceClient) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encoding %s request: %w", path, err)
	}
	endpoint := c.base.JoinPath(path).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("making %s request: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	rsp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("calling the attestation service %s: %w", endpoint, err)
	}
	defer func() { _ = rsp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(rsp.Body, attestation.MaxBodyBytes+1))
	if err != nil {
		return fmt.Errorf("reading %s answer: %w", endpoint, err)
	}
	if len(data) > attestation.MaxBodyBytes {
		return fmt.Errorf("%s answered more than %d bytes", endpoint, attestation.MaxBodyBytes)
	}
	if rsp.StatusCode != http.StatusOK {
		var refusal attestation.Error
		if json.Unmarshal(data, &refusal) == nil && refusal.Reason != "" {
			return &refusal
		}
		return fmt.Errorf("%s answered %s", endpoint, rsp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding %s answer: %w", endpoint, err)
	}
	return nil
}

// Refusal returns the service's refusal in err, if it is one.
func Refusal(err error) (*attestation.Error, bool) {
	var r *attestation.Error
	ok := errors.As(err, &r)
	return r, ok
}
