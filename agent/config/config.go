package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/certagent/certagent/rotate"
	"go.uber.org/zap/zapcore"
)

// APIVersion and Kind identify the configuration file format.
const (
	APIVersion = "certagent.io/v1alpha1"
	Kind       = "AgentConfig"
)

// DefaultPath is read when --config is not given; its absence means defaults.
const DefaultPath = "/etc/certagent/config.yaml"

// Config is the configuration file (docs/config.md documents every field).
// Command-line flags override it.
type Config struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// NodeName defaults to the host name, lower-cased.
	NodeName string `json:"nodeName,omitempty"`
	// BootstrapKubeconfig holds the bootstrap token; deleted once kubelet.conf works.
	BootstrapKubeconfig string `json:"bootstrapKubeconfig,omitempty"`
	// Kubeconfig is the kubelet.conf certagent writes.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// CertDir holds kubelet-client-*.pem and kubelet-server-*.pem.
	CertDir string `json:"certDir,omitempty"`
	// IssuerCAFile is the CA issued certificates must chain to when the cluster
	// signs kubelet certificates with another CA than the API server's.
	IssuerCAFile string `json:"issuerCAFile,omitempty"`
	// AllowInsecureBootstrap accepts a bootstrap kubeconfig with insecure-skip-tls-verify.
	AllowInsecureBootstrap bool `json:"allowInsecureBootstrap,omitempty"`
	// Timeout bounds `run --once` and `renew`.
	Timeout Duration `json:"timeout,omitempty"`
	// LogLevel is debug, info (the default), warn or error; a reload applies it at once.
	LogLevel string         `json:"logLevel,omitempty"`
	Serving  ServingConfig  `json:"serving"`
	Rotation RotationConfig `json:"rotation"`
	Hooks    HooksConfig    `json:"hooks"`
	Metrics  MetricsConfig  `json:"metrics"`
	// Attestation joins the node with its TPM (off unless serviceURL is set).
	Attestation AttestationConfig `json:"attestation"`
	// Trust follows the cluster's published trust through a CA rotation.
	Trust TrustConfig `json:"trust"`
}

// HooksConfig lists commands run after certificates are written.
type HooksConfig struct {
	// PostRenew hooks run after each certificate is written (bootstrap or renewal).
	PostRenew []Hook `json:"postRenew,omitempty"`
	// PostTrust hooks run after a trust file (trust.follow) changed.
	PostTrust []Hook `json:"postTrust,omitempty"`
}

// Hook is one command, run without a shell.
type Hook struct {
	// Command is the program and its arguments.
	Command []string `json:"command"`
	// Timeout kills the hook after this long (default 30s).
	Timeout Duration `json:"timeout,omitempty"`
	// Kinds limits a postRenew hook to these certificates ("client",
	// "server"); empty runs it for both.
	Kinds []string `json:"kinds,omitempty"`
}

// HookKinds are the certificates a postRenew hook's kinds may name.
var HookKinds = []string{"client", "server"}

// RunsFor reports whether a postRenew hook runs for the certificate kind.
func (h Hook) RunsFor(kind string) bool {
	return len(h.Kinds) == 0 || slices.Contains(h.Kinds, kind)
}

// validateHooks checks the hooks of one list (its key, for the messages);
// kinds apply to certificates, so only postRenew takes them.
func validateHooks(key string, hooks []Hook, kindsAllowed bool) []error {
	var errs []error
	for i, h := range hooks {
		if len(h.Command) == 0 || h.Command[0] == "" {
			errs = append(errs, fmt.Errorf("%s[%d].command is empty", key, i))
		}
		if h.Timeout.Duration < 0 {
			errs = append(errs, fmt.Errorf("%s[%d].timeout must not be negative", key, i))
		}
		if len(h.Kinds) > 0 && !kindsAllowed {
			errs = append(errs, fmt.Errorf("%s[%d].kinds: only hooks.postRenew runs per certificate; a trust file is not one", key, i))
			continue
		}
		for _, k := range h.Kinds {
			if !slices.Contains(HookKinds, k) {
				errs = append(errs, fmt.Errorf("%s[%d].kinds: %q is not one of %s", key, i, k, strings.Join(HookKinds, ", ")))
			}
		}
	}
	return errs
}

// MetricsConfig controls the HTTP listener for /metrics, /healthz and /readyz.
type MetricsConfig struct {
	// Address to listen on; empty turns the listener off.
	Address string `json:"address"`
}

// DefaultMetricsAddress is loopback only: the endpoints are for the node's own monitoring agent.
const DefaultMetricsAddress = "127.0.0.1:10271"

// ServingConfig controls the kubelet serving certificate.
type ServingConfig struct {
	// Enabled requests the serving certificate (default true).
	Enabled *bool `json:"enabled,omitempty"`
	// DNSNames and IPAddresses are added to the node name and primary IP.
	DNSNames    []string `json:"dnsNames,omitempty"`
	IPAddresses []string `json:"ipAddresses,omitempty"`
}

// RotationConfig controls lifetimes and renewal.
type RotationConfig struct {
	// RequestedDuration sets spec.expirationSeconds (minimum 10m); zero lets the signer decide.
	RequestedDuration Duration `json:"requestedDuration,omitempty"`
	// RenewBefore renews this long before expiry instead of at 70–90 % of the lifetime.
	RenewBefore Duration `json:"renewBefore,omitempty"`
}

// Duration is a time.Duration written as "10m", "36h".
type Duration struct{ time.Duration }

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"10m\" or \"36h\"")
	}
	if s == "" {
		d.Duration = 0 // "" means unset, as in the documented example
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Default returns the built-in defaults.
func Default() Config {
	enabled := true
	return Config{
		APIVersion:          APIVersion,
		Kind:                Kind,
		BootstrapKubeconfig: "/etc/kubernetes/bootstrap-kubelet.conf",
		Kubeconfig:          "/etc/kubernetes/kubelet.conf",
		CertDir:             "/var/lib/kubelet/pki",
		Timeout:             Duration{10 * time.Minute},
		LogLevel:            "info",
		Serving:             ServingConfig{Enabled: &enabled},
		Metrics:             MetricsConfig{Address: DefaultMetricsAddress},
	}
}

// Validate checks settings that the file format cannot.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is empty: set nodeName or --node-name"))
	} else if c.NodeName != strings.ToLower(c.NodeName) {
		errs = append(errs, fmt.Errorf("node name %q must be lower-case", c.NodeName))
	}
	for name, p := range map[string]string{"bootstrapKubeconfig": c.BootstrapKubeconfig, "kubeconfig": c.Kubeconfig, "certDir": c.CertDir} {
		if p == "" {
			errs = append(errs, fmt.Errorf("%s is empty", name))
		}
	}
	if _, err := c.ServingIPs(); err != nil {
		errs = append(errs, err)
	}
	if d := c.Rotation.RequestedDuration.Duration; d != 0 && d < 10*time.Minute {
		errs = append(errs, fmt.Errorf("rotation.requestedDuration %s is below the Kubernetes minimum of 10m", d))
	}
	if c.Rotation.RenewBefore.Duration < 0 {
		errs = append(errs, errors.New("rotation.renewBefore must not be negative"))
	}
	if rb, life := c.Rotation.RenewBefore.Duration, c.Rotation.RequestedDuration.Duration; life > 0 && rb >= life {
		errs = append(errs, fmt.Errorf("rotation.renewBefore %s is not shorter than the certificate lifetime rotation.requestedDuration %s: every certificate would be due the moment it is issued; set renewBefore below %s (%s renews at two thirds of the lifetime), or leave it unset for the default 70-90 %%", rb, life, life, (life/3).Round(time.Second)))
	}
	errs = append(errs, validateHooks("hooks.postRenew", c.Hooks.PostRenew, true)...)
	errs = append(errs, validateHooks("hooks.postTrust", c.Hooks.PostTrust, false)...)
	if c.Timeout.Duration <= 0 {
		errs = append(errs, errors.New("timeout must be positive"))
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("logLevel: %w", err))
	}
	if err := c.Attestation.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Trust.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ServingEnabled reports whether the serving certificate is requested.
func (c Config) ServingEnabled() bool { return c.Serving.Enabled == nil || *c.Serving.Enabled }

// RenewalPolicy is the renewal policy the rotation settings make.
func (c Config) RenewalPolicy() rotate.Policy {
	return rotate.Policy{RenewBefore: c.Rotation.RenewBefore.Duration}
}

// ServingIPs parses serving.ipAddresses.
func (c Config) ServingIPs() ([]net.IP, error) {
	var ips []net.IP
	for _, s := range c.Serving.IPAddresses {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("serving.ipAddresses: %q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// ParseLogLevel reads --log-level and logLevel; "" means the default, info.
func ParseLogLevel(s string) (zapcore.Level, error) {
	switch s {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info", "":
		return zapcore.InfoLevel, nil
	case "warn":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return zapcore.InfoLevel, fmt.Errorf("unknown log level %q: use debug, info, warn or error", s)
}
