package kubelettest

import (
	"os"
	"path/filepath"
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
