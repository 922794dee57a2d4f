package unitfile

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name, unit string
		want       []string
		err        string
	}{
		{name: "none", unit: "[Service]\nExecStart=/bin/true\n"},
		{name: "one", unit: "[Service]\nEnvironment=GOMAXPROCS=1\n", want: []string{"GOMAXPROCS=1"}},
		{name: "several lines and words", unit: "[Service]\nEnvironment=A=1 B=2\nEnvironment=C=3\n", want: []string{"A=1", "B=2", "C=3"}},
		{name: "quoted", unit: "[Service]\nEnvironment=\"A=x y\" B=2\n", want: []string{"A=x y", "B=2"}},
		{name: "empty clears", unit: "[Service]\nEnvironment=A=1\nEnvironment=\nEnvironment=B=2\n", want: []string{"B=2"}},
		{name: "comments and other sections", unit: "[Unit]\nEnvironment=X=1\n[Service]\n# Environment=Y=1\nEnvironment=Z=1\n[Install]\nEnvironment=W=1\n", want: []string{"Z=1"}},
		{name: "not an assignment", unit: "[Service]\nEnvironment=GOMAXPROCS\n", err: "not an assignment"},
		{name: "unterminated quote", unit: "[Service]\nEnvironment=\"A=1\n", err: "unterminated quote"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.service")
			if err := os.WriteFile(path, []byte(tc.unit), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := Environment(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("Environment = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestTheShippedUnitRunsOnOneProcessor: the unit the packages install starts
// certagent with GOMAXPROCS=1 in its environment (docs/metrics.md, Memory).
func TestTheShippedUnitRunsOnOneProcessor(t *testing.T) {
	env, err := Environment(Shipped)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "GOMAXPROCS=1") {
		t.Fatalf("the shipped unit's environment is %q, without GOMAXPROCS=1", env)
	}
}
