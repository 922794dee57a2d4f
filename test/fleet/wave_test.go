package fleet

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"time"
)

// serial is the serial number of m's current certificate of kind, "" if none.
func serial(m *member, kind string) string {
	data, err := os.ReadFile(filepath.Join(m.certDir, "kubelet-"+kind+"-current.pem"))
	if err != nil {
		return ""
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return ""
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

// peakWithin is the most sorted times within any window of width w (a
// sliding window: not tied to bins).
func peakWithin(sorted []time.Duration, w time.Duration) int {
	best, j := 0, 0
	for i := range sorted {
		for sorted[i]-sorted[j] >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
