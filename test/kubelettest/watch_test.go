package kubelettest

import (
	"testing"
	"time"
)

// A certificate's end is printed with its date: it is days or months after
// the test saw the certificate, and a time alone read as if it had expired.
func TestCertSeriesStringDatesTheEnd(t *testing.T) {
	seen := time.Date(2026, 12, 4, 21, 56, 48, 0, time.UTC)
	s := CertSeries{{Serial: "5aba4e37", Seen: seen, NotAfter: seen.AddDate(1, 0, 0).Add(-5 * time.Minute)}}
	if got, want := s.String(), "[5aba4e37 seen 21:56:48 until 2027-12-04 21:51:48]"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}
