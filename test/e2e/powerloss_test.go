package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/test/controlplane"
)

// TestPowerLoss: a SIGKILL keeps the page cache, so the crash suite cannot
// see a missing fsync. Here a bootstrap and a forced renewal are recorded
// with strace, and every state a power loss could leave at every point is
// checked (see fsModel for what may be lost): kubelet.conf absent or
// loadable with its certificate and key; every -current.pem a complete
// matching pair; and from the moment a request's key is ready (before its
// CSR is posted) until its certificate is stored, the pending key there to
// find the same CSR again.
func TestPowerLoss(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Fatalf("strace is needed (make e2e installs it): %v", err)
	}
	bin := buildFailpointBinary(t)
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.approveServing(ctx)

	total := 0
	for _, run := range []struct {
		name string
		args []string
	}{
		{"bootstrap", append(n.args("--once"), "--serving=true")},
		{"renewal", append([]string{"renew", "--force"}, n.args()[1:]...)},
	} {
		t.Run(run.name, func(t *testing.T) {
			model, err := newModel(n.dir)
			if err != nil {
				t.Fatal(err)
			}
			trace := filepath.Join(t.TempDir(), "trace")
			marks := filepath.Join(t.TempDir(), "failpoints.log")
			cmd := exec.Command("strace", append([]string{"-f", "-y", "-xx", "-s", "262144", "-o", trace,
				"-e", "trace=openat,write,pwrite64,fsync,fdatasync,rename,renameat,renameat2,unlinkat,symlinkat,mkdirat,close,ftruncate",
				"--", bin}, run.args...)...)
			cmd.Env = append(os.Environ(), "CERTAGENT_FAILPOINT_LOG="+marks)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s under strace: %v\n%s", run.name, err, out)
			}
			if prefix := os.Getenv("CERTAGENT_POWERLOSS_KEEP"); prefix != "" { // keep the trace to read
				if b, err := os.ReadFile(trace); err == nil {
					_ = os.WriteFile(prefix+"-"+run.name+".strace", b, 0o644)
				}
			}
			ops, err := parseTrace(trace)
			if err != nil {
				t.Fatal(err)
			}
			// Which kind's key must be recoverable now, and where.
			var keyPath string
			checked, states := 0, 0
			check := func(where string) {
				checked++
				for _, st := range model.states(4096) {
					states++
					if msg := powerLossInvariants(st, n, keyPath); msg != "" {
						t.Fatalf("after a power loss %s: %s", where, msg)
					}
				}
			}
			for i, op := range ops {
				if err := model.apply(op, marks, func(point string) {
					switch point {
					case "obtain.key-ready":
						keyPath = lastPendingKey(ops[:i])
						if keyPath == "" {
							t.Fatalf("no pending key written before %s", point)
						}
					case "obtain.stored":
						keyPath = ""
					}
					check("at failpoint " + point)
				}); err != nil {
					t.Fatal(err)
				}
				if isMutation(op.name) {
					check(fmt.Sprintf("after syscall %d (%s)", i, op.name))
				}
			}
			if checked < 20 {
				t.Fatalf("only %d points checked in the %s: the trace did not record certagent's writes", checked, run.name)
			}
			total += states
			t.Logf("%s: %d syscalls, %d points, %d crash states checked", run.name, len(ops), checked, states)
		})
	}
	t.Logf("%d crash states in all", total)
}

func isMutation(name string) bool {
	switch name {
	case "write", "pwrite64", "fsync", "fdatasync", "renameat", "renameat2", "rename", "unlinkat", "symlinkat", "mkdirat", "ftruncate":
		return true
	}
	return false
}

// lastPendingKey is the pending key path the trace renamed into place last.
func lastPendingKey(ops []traceOp) string {
	for i := len(ops) - 1; i >= 0; i-- {
		op := ops[i]
		if (op.name == "renameat" || op.name == "renameat2") && len(op.args) >= 4 {
			if p := at(op.args[2], op.args[3]); strings.HasSuffix(p, "-pending.key") {
				return p
			}
		}
	}
	return ""
}

// powerLossInvariants returns what is wrong with a crash state, "" if nothing.
func powerLossInvariants(st crashState, n *node, keyPath string) string {
	if f, ok := st.resolve(n.kubeconf); ok {
		cfg, err := clientcmd.Load(f.data)
		if err != nil {
			return fmt.Sprintf("kubelet.conf does not load: %v", err)
		}
		ctx := cfg.Contexts[cfg.CurrentContext]
		if ctx == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
			return "kubelet.conf has no current context and user"
		}
		user := cfg.AuthInfos[ctx.AuthInfo]
		pemFile, ok := st.resolve(user.ClientCertificate)
		if !ok {
			return fmt.Sprintf("kubelet.conf references %s, which is not there", user.ClientCertificate)
		}
		if _, err := tls.X509KeyPair(pemFile.data, pemFile.data); err != nil {
			return fmt.Sprintf("kubelet.conf's certificate and key %s are not a pair: %v", user.ClientCertificate, err)
		}
	}
	for _, kind := range []string{"client", "server"} {
		p := filepath.Join(n.certDir, "kubelet-"+kind+"-current.pem")
		if _, present := st[p]; !present {
			continue
		}
		f, ok := st.resolve(p)
		if !ok {
			return fmt.Sprintf("%s points at a file that is not there", p)
		}
		if _, err := tls.X509KeyPair(f.data, f.data); err != nil {
			return fmt.Sprintf("%s is not a complete pair: %v", p, err)
		}
	}
	if keyPath != "" {
		f, ok := st.resolve(keyPath)
		if !ok {
			return fmt.Sprintf("the pending key %s is gone although its CSR may have been posted", keyPath)
		}
		block, _ := pem.Decode(f.data)
		if block == nil {
			return fmt.Sprintf("the pending key %s is incomplete", keyPath)
		}
		if _, err := x509.ParseECPrivateKey(block.Bytes); err != nil {
			return fmt.Sprintf("the pending key %s does not parse: %v", keyPath, err)
		}
	}
	return ""
}
