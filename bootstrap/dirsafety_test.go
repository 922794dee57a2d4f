package bootstrap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// safeBase is a private directory for the cases (t.TempDir lives under the sticky /tmp).
func safeBase(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "base")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCheckDirSafe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		root    bool // needs root to chown
		setup   func(t *testing.T, base string) string
		wantErr string
	}{
		{"private directory", false, func(t *testing.T, b string) string {
			d := filepath.Join(b, "pki")
			_ = os.Mkdir(d, 0o700)
			return d
		}, ""},
		{"missing directory under a safe parent", false, func(t *testing.T, b string) string { return filepath.Join(b, "new", "pki") }, ""},
		{"directory writable by others", false, func(t *testing.T, b string) string {
			d := filepath.Join(b, "pki")
			_ = os.Mkdir(d, 0o700)
			_ = os.Chmod(d, 0o777)
			return d
		}, "is writable by other users (mode 0777)"},
		{"parent writable by others, not sticky", false, func(t *testing.T, b string) string {
			p := filepath.Join(b, "shared")
			_ = os.Mkdir(p, 0o755)
			_ = os.Chmod(p, 0o777)
			d := filepath.Join(p, "pki")
			_ = os.Mkdir(d, 0o700)
			return d
		}, "shared is writable by other users (mode 0777)"},
		{"sticky world-writable parent", false, func(t *testing.T, b string) string {
			p := filepath.Join(b, "tmp")
			_ = os.Mkdir(p, 0o755)
			_ = os.Chmod(p, 0o777|os.ModeSticky)
			d := filepath.Join(p, "pki")
			_ = os.Mkdir(d, 0o700)
			return d
		}, ""},
		{"root-owned symlink to another disk", false, func(t *testing.T, b string) string {
			real := filepath.Join(b, "disk2", "kubelet")
			_ = os.MkdirAll(filepath.Join(real, "pki"), 0o700)
			link := filepath.Join(b, "kubelet")
			_ = os.Symlink(real, link)
			return filepath.Join(link, "pki")
		}, ""},
		{"symlink planted by another user", true, func(t *testing.T, b string) string {
			real := filepath.Join(b, "elsewhere")
			_ = os.MkdirAll(real, 0o700)
			link := filepath.Join(b, "pki")
			_ = os.Symlink(real, link)
			if err := os.Lchown(link, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return link
		}, "is a symlink owned by uid 65534"},
		{"directory owned by another user", true, func(t *testing.T, b string) string {
			d := filepath.Join(b, "pki")
			_ = os.Mkdir(d, 0o700)
			if err := os.Chown(d, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return d
		}, "is a directory owned by uid 65534"},
		{"symlink to a directory writable by others", false, func(t *testing.T, b string) string {
			real := filepath.Join(b, "open")
			_ = os.Mkdir(real, 0o700)
			_ = os.Chmod(real, 0o777)
			link := filepath.Join(b, "pki")
			_ = os.Symlink(real, link)
			return link
		}, "open is writable by other users"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Fatal("this case chowns to another user and must run as root (make test runs as root)")
			}
			dir := tc.setup(t, safeBase(t))
			err := CheckDirSafe(dir)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "refusing to write under") {
				t.Fatalf("error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestObtainRefusesUnsafeCertDir: nothing is written into a directory others can write to.
func TestObtainRefusesUnsafeCertDir(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	if err := os.MkdirAll(f.cfg.CertDir, 0o700); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(f.cfg.CertDir, 0o777)
	_, err := f.bootstrapper().EnsureClient(t.Context(), false)
	if err == nil || !strings.Contains(err.Error(), "is writable by other users (mode 0777)") {
		t.Fatalf("error = %v", err)
	}
	if entries, _ := os.ReadDir(f.cfg.CertDir); len(entries) != 0 || exists(f.cfg.KubeconfigPath) || f.creates.Load() != 0 {
		t.Fatalf("wrote %d files / kubeconfig / %d CSRs despite the unsafe directory", len(entries), f.creates.Load())
	}
}
