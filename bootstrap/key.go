package bootstrap

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/util/keyutil"

	"github.com/certagent/certagent/internal/atomicfile"
)

// PendingKeyPath is where the key of a not-yet-issued request is kept (0600)
// until its certificate is stored, so a restart reuses the same key and so the
// same CSR name.
func PendingKeyPath(certDir string, kind Kind) string {
	return filepath.Join(certDir, kind.FilePrefix()+"-pending.key")
}

// loadOrCreatePendingKey returns the pending key for kind, creating a fresh
// ECDSA P-256 key if there is none (or if the one on disk is unreadable).
func loadOrCreatePendingKey(certDir string, kind Kind) (crypto.Signer, []byte, bool, error) {
	path := PendingKeyPath(certDir, kind)
	if data, err := os.ReadFile(path); err == nil {
		if key, perr := parseSigner(data); perr == nil {
			return key, data, false, nil
		}
		// A corrupt pending key cannot have a usable CSR: replace it.
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, false, fmt.Errorf("reading pending key %s: %w", path, err)
	}
	data, err := keyutil.MakeEllipticPrivateKeyPEM()
	if err != nil {
		return nil, nil, false, fmt.Errorf("generating key: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return nil, nil, false, fmt.Errorf("saving pending key: %w", err)
	}
	key, err := parseSigner(data)
	return key, data, true, err
}

// LoadPendingKey reads the pending key for kind; it returns (nil, nil) if there is none.
func LoadPendingKey(certDir string, kind Kind) (crypto.Signer, error) {
	data, err := os.ReadFile(PendingKeyPath(certDir, kind))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading pending key: %w", err)
	}
	return parseSigner(data)
}

// discardPendingKey removes the pending key so that the next attempt makes a
// new key and a new CSR (used after a denial or an unusable issuance, and
// after storing). The directory is not fsynced: if a crash loses the removal,
// the next attempt finds a key that is already stored, or whose CSR was
// denied, and discards it again.
func discardPendingKey(certDir string, kind Kind) error {
	_ = os.Remove(pendingCSRPath(certDir, kind)) // an attested request's CSR, if any: first, it is the key's
	err := os.Remove(PendingKeyPath(certDir, kind))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing pending key: %w", err)
	}
	return nil
}

func parseSigner(data []byte) (crypto.Signer, error) {
	k, err := keyutil.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", k)
	}
	return s, nil
}
