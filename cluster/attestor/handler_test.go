package attestor

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certagent/certagent/protocol/attestation"
)

type noIssuer struct{}

func (noIssuer) Issue(context.Context, IssueRequest) ([]byte, error) { panic("nothing may be issued") }

type outcomes []Outcome

func (o *outcomes) Observe(x Outcome) { *o = append(*o, x) }

func TestNewChecksItsConfig(t *testing.T) {
	ok := Config{Enrollments: StaticEnrollments{}, Issuer: noIssuer{}}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"minimal", func(*Config) {}, true},
		{"with manufacturer CAs", func(c *Config) { c.ManufacturerCAs = &ManufacturerCAs{Roots: x509.NewCertPool()} }, true},
		{"no enrolments", func(c *Config) { c.Enrollments = nil }, false},
		{"no issuer", func(c *Config) { c.Issuer = nil }, false},
		{"manufacturer CAs without roots", func(c *Config) { c.ManufacturerCAs = &ManufacturerCAs{} }, false},
		{"negative TTL", func(c *Config) { c.SessionTTL = -time.Second }, false},
		{"negative session bound", func(c *Config) { c.MaxSessionsPerEK = -1 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.change(&cfg)
			if _, err := New(cfg); (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%t", err, tc.ok)
			}
		})
	}
}

func TestHandlerRefusesMalformedRequests(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	var seen outcomes
	a, err := New(Config{Enrollments: StaticEnrollments{}, Issuer: noIssuer{}, Observer: &seen, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	h := a.Handler()
	for _, tc := range []struct {
		name, method, path, contentType, body string
		status                                int
		reason                                attestation.Reason
	}{
		{"GET", http.MethodGet, attestation.BeginPath, "application/json", "", http.StatusMethodNotAllowed, ""},
		{"unknown path", http.MethodPost, "/v1/attest/other", "application/json", "{}", http.StatusNotFound, ""},
		{"not JSON", http.MethodPost, attestation.BeginPath, "text/plain", "{}", http.StatusBadRequest, attestation.ReasonBadRequest},
		{"broken JSON", http.MethodPost, attestation.BeginPath, "application/json", "{", http.StatusBadRequest, attestation.ReasonBadRequest},
		{"two values", http.MethodPost, attestation.BeginPath, "application/json", "{} {}", http.StatusBadRequest, attestation.ReasonBadRequest},
		{"too large", http.MethodPost, attestation.BeginPath, "application/json", `{"csr":"` + strings.Repeat("a", attestation.MaxBodyBytes) + `"}`, http.StatusBadRequest, attestation.ReasonBadRequest},
		{"empty begin", http.MethodPost, attestation.BeginPath, "application/json", "{}", http.StatusBadRequest, attestation.ReasonBadRequest},
		{"empty finish", http.MethodPost, attestation.FinishPath, "application/json; charset=utf-8", "{}", http.StatusBadRequest, attestation.ReasonBadRequest},
		{"finish of a session never begun", http.MethodPost, attestation.FinishPath, "application/json",
			`{"sessionID":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","secret":"AA==","attest":"AA==","signature":"AA=="}`, http.StatusNotFound, attestation.ReasonUnknownSession},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen = nil
			logsBefore := logs.Len()
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.contentType)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.reason == "" {
				return
			}
			if !strings.Contains(w.Body.String(), `"reason":"`+string(tc.reason)+`"`) {
				t.Errorf("body %s does not name %s", w.Body, tc.reason)
			}
			if len(seen) != 1 || seen[0].Reason != tc.reason {
				t.Errorf("observed %+v, want one %s", seen, tc.reason)
			}
			if logs.Len() != logsBefore+1 || logs.All()[logs.Len()-1].ContextMap()["reason"] != string(tc.reason) {
				t.Errorf("no log line with reason %s", tc.reason)
			}
		})
	}
}
