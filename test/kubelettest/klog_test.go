package kubelettest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The v1.30 kubelet's client-go logs its client certificate switch in lower
// case, later ones capitalised: both are the switch.
func TestKlogTimesMatchesEitherCase(t *testing.T) {
	log := filepath.Join(t.TempDir(), "kubelet.log")
	lines := "I1204 10:00:01.000000   1 cert_rotation.go:88] certificate rotation detected, shutting down client connections to start using new credentials\n" +
		"I1204 10:00:02.000000   1 kubelet.go:1] something else\n" +
		"I1204 10:00:03.500000   1 cert_rotation.go:92] \"Certificate rotation detected, shutting down client connections to start using new credentials\" logger=\"tls-transport-cache\"\n"
	if err := os.WriteFile(log, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	got := KlogTimes(log, ClientRotationLogged)
	if len(got) != 2 {
		t.Fatalf("KlogTimes found %d switches, want 2: %v", len(got), got)
	}
	for i, want := range []string{"10:00:01.000", "10:00:03.500"} {
		if s := got[i].Format("15:04:05.000"); s != want || got[i].Month() != time.December || got[i].Day() != 4 {
			t.Errorf("switch %d at %s, want December 4 %s", i, got[i], want)
		}
	}
}

// KlogLinesSince keeps the matching lines from its time on, whatever the
// case of the rest of the line.
func TestKlogLinesSince(t *testing.T) {
	log := filepath.Join(t.TempDir(), "kube-apiserver.log")
	lines := "E1204 09:59:59.000000   1 authentication.go:73] \"Unable to authenticate the request\" err=\"x509: certificate signed by unknown authority\"\n" +
		"I1204 10:00:01.000000   1 server.go:3] http: TLS handshake error from 127.0.0.1:5: EOF\n" +
		"E1204 10:00:02.000000   1 server.go:3] http: TLS handshake error from 127.0.0.1:6: remote error: tls: bad certificate\n" +
		"I1204 10:00:03.000000   1 other.go:1] nothing\n"
	if err := os.WriteFile(log, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	since := time.Date(time.Now().Year(), time.December, 4, 10, 0, 0, 0, time.Local)
	got := KlogLinesSince(log, TLSFailureLogged, since)
	if len(got) != 1 || !strings.Contains(got[0], "bad certificate") {
		t.Fatalf("KlogLinesSince = %q, want the one bad certificate line after 10:00", got)
	}
}
