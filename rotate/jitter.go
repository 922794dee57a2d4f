package rotate

import (
	"crypto/sha256"
	"encoding/binary"
)

// JitterFor maps a certificate's serial number to a number in [0, 1) that is
// uniform across certificates and the same every time for one certificate.
// The agent and `certagent status` thus agree on a deadline without sharing
// state, and a restart does not move it.
func JitterFor(serial []byte) float64 {
	sum := sha256.Sum256(serial)
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}
