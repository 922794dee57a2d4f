package noderuntime

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestContainerdRunsTheTestImage: the locally built image imports into a
// containerd of the test's own and runs under runc.
func TestContainerdRunsTheTestImage(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatalf("the kubelet suite needs a container runtime: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	archive, err := BuildImage(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	c, err := Start(ctx, dir, archive)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := c.ctr(ctx, "run", "--rm", ImageName, "noderuntime-test", ImageBinary, "echo", "hello", "from", "runc")
	if err != nil || strings.TrimSpace(out) != "hello from runc" {
		t.Fatalf("ctr run %s echo: %v\n%s\ncontainerd log:\n%s", ImageName, err, out, tail(c.Log, 20))
	}
}
