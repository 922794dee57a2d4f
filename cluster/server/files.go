package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/cluster/attestor"
)

// servingCert serves the certificate and key in two files (a mounted
// kubernetes.io/tls Secret) and reloads them when they change, so re-running
// init-tls rotates the service's certificate without a restart: the kubelet
// swaps a Secret volume's files atomically. It looks at the files at most
// every checkEvery; a pair that fails to load keeps the last good one.
type servingCert struct {
	certFile, keyFile string
	checkEvery        time.Duration
	log               *zap.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // the files' modification times and sizes when loaded
	checked time.Time
}

// loadServingCert loads the pair once; a failure here is fatal (there is
// nothing to serve with).
func loadServingCert(certFile, keyFile string, log *zap.Logger) (*servingCert, error) {
	s := &servingCert{certFile: certFile, keyFile: keyFile, checkEvery: 10 * time.Second, log: log}
	stamp, err := s.fileStamp()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the serving certificate %s and key %s: %w; create them with certagent-cluster init-tls", certFile, keyFile, err)
	}
	s.cert, s.stamp, s.checked = &cert, stamp, time.Now()
	return s, nil
}

func (s *servingCert) fileStamp() (string, error) {
	stamp := ""
	for _, f := range []string{s.certFile, s.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("reading the serving certificate: %w; create it with certagent-cluster init-tls", err)
		}
		stamp += fmt.Sprintf("%s:%d:%d;", f, fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}

// getCertificate is tls.Config.GetCertificate.
func (s *servingCert) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.checked) < s.checkEvery {
		return s.cert, nil
	}
	s.checked = time.Now()
	stamp, err := s.fileStamp()
	if err != nil || stamp == s.stamp {
		return s.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		s.log.Warn("the serving certificate changed but does not load; serving the previous one", zap.Error(err))
		return s.cert, nil
	}
	s.cert, s.stamp = &cert, stamp
	s.log.Info("serving certificate reloaded", zap.String("file", s.certFile))
	return s.cert, nil
}

// loadManufacturerCAs reads the TPM manufacturers' CAs: roots (required
// when the policy is on) and intermediates (optional), PEM files.
func loadManufacturerCAs(rootsFile, intermediatesFile string) (*attestor.ManufacturerCAs, error) {
	if rootsFile == "" {
		if intermediatesFile != "" {
			return nil, fmt.Errorf("--manufacturer-intermediates %s without --manufacturer-roots: the policy needs roots to trust", intermediatesFile)
		}
		return nil, nil
	}
	roots, err := certPool(rootsFile)
	if err != nil {
		return nil, err
	}
	cas := &attestor.ManufacturerCAs{Roots: roots}
	if intermediatesFile != "" {
		if cas.Intermediates, err = certPool(intermediatesFile); err != nil {
			return nil, err
		}
	}
	return cas, nil
}

// certPool reads a PEM file of one or more certificates; a file without any
// is an error, never an empty pool (which would trust nothing, silently).
func certPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading TPM manufacturer CAs: %w", err)
	}
	pool, n := x509.NewCertPool(), 0
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing a certificate in %s: %w", file, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
