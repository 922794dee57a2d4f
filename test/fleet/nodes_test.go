package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/nodenet"
	"github.com/certagent/certagent/test/unitfile"
)

// Which program bootstraps a fleet's nodes.
const (
	certagentPath = "certagent"
	kubeletPath   = "kubelet"
)

// member is one node of a fleet: its directories, node name and process.
type member struct {
	name                                   string
	dir, boot, kubeconf, certDir, cfg, log string
	netns                                  string // its network namespace, "" for the host's

	mu       sync.Mutex
	pid      int
	restarts int     // the kubelet path, restarted as systemd restarts the kubelet
	exited   bool    //
	cpu      float64 // seconds of CPU of its processes that have exited
}

// fleet is N nodes of one kind started together against one cluster.
type fleet struct {
	kind    string
	prefix  string   // node names are <prefix>-0001…
	niced   bool     // processes run at nice 19 (the overload comparison)
	env     []string // certagent's environment: the shipped unit's, then the test's (which wins, as a drop-in's would)
	c       *cluster
	members []*member
	start   time.Time // just before the first process was started
	spawned time.Time // after the last one was started
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// newFleet lays out n nodes named <prefix>-0001… under work, each with a
// bootstrap kubeconfig holding the cluster's shared token and, for
// certagent, a config file with extra appended.
func newFleet(t *testing.T, c *cluster, kind, prefix string, n int, extra string) *fleet {
	t.Helper()
	f := &fleet{kind: kind, prefix: prefix, c: c}
	if kind != kubeletPath {
		unitEnv, err := unitfile.Environment(unitfile.Shipped)
		if err != nil {
			t.Fatal(err)
		}
		f.env = append(unitEnv, os.Environ()...)
	}
	base := filepath.Join(work, prefix)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("%s-%04d", prefix, i)
		dir := filepath.Join(base, fmt.Sprintf("%04d", i))
		m := &member{name: name, dir: dir,
			boot: filepath.Join(dir, "bootstrap-kubelet.conf"), kubeconf: filepath.Join(dir, "kubelet.conf"),
			certDir: filepath.Join(dir, "pki"), cfg: filepath.Join(dir, "config.yaml"), log: filepath.Join(dir, "log")}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteBootstrapKubeconfig(m.boot, c.token, false); err != nil {
			t.Fatal(err)
		}
		cfg := "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nmetrics:\n  address: 127.0.0.1:0\n" + extra
		if err := os.WriteFile(m.cfg, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		f.members = append(f.members, m)
	}
	return f
}

// argv is the command line of m's process.
func (f *fleet) argv(m *member) []string {
	var argv []string
	if m.netns != "" {
		argv = nodenet.InNetns(m.netns) // ip netns exec execs the program: same PID
	}
	if f.niced {
		argv = []string{"nice", "-n", "19"} // nice execs the program: same PID
	}
	if f.kind == kubeletPath {
		return append(argv, bins["kubelet"], "--kubeconfig", m.kubeconf, "--bootstrap-kubeconfig", m.boot,
			"--cert-dir", m.certDir, "--node-name", m.name, "--timeout", "1h")
	}
	return append(argv, bins["certagent"], "run", "--config", m.cfg, "--node-name", m.name, "--log-format", "json",
		"--bootstrap-kubeconfig", m.boot, "--kubeconfig", m.kubeconf, "--cert-dir", m.certDir)
}

// run starts every member's process, as fast as one thread can fork them.
// A kubelet that fails is started again 10 s later, as kubeadm's
// kubelet.service does (Restart=always, RestartSec=10); certagent is never
// expected to exit. Everything is stopped when the test ends.
func (f *fleet) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	t.Cleanup(f.stop)
	f.start = time.Now()
	for _, m := range f.members {
		cmd, err := f.spawn(m)
		if err != nil {
			t.Fatalf("starting %s for %s: %v", f.kind, m.name, err)
		}
		f.wg.Add(1)
		go f.supervise(ctx, m, cmd)
	}
	f.spawned = time.Now()
	t.Logf("%d %s processes started in %s", len(f.members), f.kind, f.spawned.Sub(f.start).Round(time.Millisecond))
}

func (f *fleet) spawn(m *member) (*exec.Cmd, error) {
	logFile, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	argv := f.argv(m)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = f.env // nil for the kubelet: the test's environment
	if err := controlplane.Spawn(cmd); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.pid, m.exited = cmd.Process.Pid, false
	m.mu.Unlock()
	return cmd, nil
}

func (f *fleet) supervise(ctx context.Context, m *member, cmd *exec.Cmd) {
	defer f.wg.Done()
	for {
		waited := make(chan error, 1)
		go func(cmd *exec.Cmd) { waited <- cmd.Wait() }(cmd)
		var err error
		select {
		case err = <-waited:
		case <-ctx.Done():
			controlplane.Terminate(cmd.Process, waited, 15*time.Second)
			return
		}
		m.mu.Lock()
		m.exited = true
		m.cpu += (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
		m.mu.Unlock()
		if f.kind != kubeletPath || err == nil {
			return // a kubelet that bootstrapped is done; a certagent that exits is caught by the checks
		}
		sleepCtx(ctx, 10*time.Second)
		if ctx.Err() != nil {
			return
		}
		if cmd, err = f.spawn(m); err != nil {
			return
		}
		m.mu.Lock()
		m.restarts++
		m.mu.Unlock()
	}
}

// stop ends every process (SIGTERM, then SIGKILL after 15 s) and waits.
func (f *fleet) stop() {
	if f.cancel != nil {
		f.cancel()
		f.wg.Wait()
	}
}

// pids of the members' running processes.
func (f *fleet) pids() []int {
	var out []int
	for _, m := range f.members {
		m.mu.Lock()
		if !m.exited && m.pid != 0 {
			out = append(out, m.pid)
		}
		m.mu.Unlock()
	}
	return out
}

// memory is the fleet's daemons' memory now; every one must still be running.
func (f *fleet) memory(t *testing.T) DaemonMemory {
	t.Helper()
	pids := f.pids()
	if len(pids) != len(f.members) {
		t.Errorf("%d of %d daemons still running", len(pids), len(f.members))
	}
	var m DaemonMemory
	for _, pid := range pids {
		anon, err1 := statusKiB(pid, "RssAnon")
		rss, err2 := statusKiB(pid, "VmRSS")
		pss, err3 := smapsRollupKiB(pid, "Pss")
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatal(err)
		}
		a, p, r := float64(anon)/1024, float64(pss)/1024, float64(rss)/1024
		m.AnonMean, m.PSSMean, m.RSSMean = m.AnonMean+a, m.PSSMean+p, m.RSSMean+r
		m.AnonMax, m.PSSMax, m.RSSMax = max(m.AnonMax, a), max(m.PSSMax, p), max(m.RSSMax, r)
	}
	if n := float64(len(pids)); n > 0 {
		m.AnonMean, m.PSSMean, m.RSSMean = m.AnonMean/n, m.PSSMean/n, m.RSSMean/n
	}
	return m
}

// checkIdleMemory fails t if the daemons, idle since, hold more anonymous
// memory or PSS on average than an idle daemon may (docs/metrics.md,
// "Memory"). RSS is reported, not judged: it counts the binary's page-cache
// pages, shared by every daemon of the fleet, in each of them.
func checkIdleMemory(t *testing.T, m DaemonMemory, since string) {
	t.Helper()
	if m.AnonMean > idleAnonLimitMiB || m.PSSMean > idlePSSLimitMiB {
		t.Errorf("daemons idle %s hold on average %.1f MiB anonymous and %.1f MiB PSS (%s), want at most %.1f and %.1f MiB (docs/metrics.md, \"Memory\")",
			since, m.AnonMean, m.PSSMean, m, idleAnonLimitMiB, idlePSSLimitMiB)
	}
}

// cpuSeconds is the CPU time of every process of the fleet so far: those
// that exited and those still running.
func (f *fleet) cpuSeconds() float64 {
	total := 0.0
	for _, m := range f.members {
		m.mu.Lock()
		total += m.cpu
		if !m.exited && m.pid != 0 {
			if s, err := cpuSeconds(m.pid); err == nil {
				total += s
			}
		}
		m.mu.Unlock()
	}
	return total
}

// waitAll polls every member until done(m) holds for all of them, and
// returns when the last one did (when the poll saw it; the exact times come
// from the files and logs).
func (f *fleet) waitAll(t *testing.T, what string, timeout time.Duration, done func(*member) bool) time.Time {
	t.Helper()
	left := map[*member]bool{}
	for _, m := range f.members {
		left[m] = true
	}
	deadline := time.Now().Add(timeout)
	last := time.Now()
	for len(left) > 0 {
		for m := range left {
			if done(m) {
				delete(left, m)
				last = time.Now()
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var some []string
			for m := range left {
				if len(some) < 3 {
					some = append(some, m.name+": "+tailFile(m.log, 5))
				}
			}
			t.Fatalf("%d of %d %s nodes lack %s after %s; some:\n%s", len(left), len(f.members), f.kind, what, timeout, strings.Join(some, "\n"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	return last
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func hasKubeconfig(m *member) bool { return exists(m.kubeconf) }
func hasServing(m *member) bool {
	return exists(filepath.Join(m.certDir, "kubelet-server-current.pem"))
}

// mtime of p (following links), zero if absent.
func mtime(p string) time.Time {
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// logLine is one line of certagent's JSON log.
type logLine struct {
	TS      string `json:"ts"`
	Msg     string `json:"msg"`
	Signer  string `json:"signer"`
	Address string `json:"address"`
	raw     string
}

// zap's ISO8601 time layout, as certagent logs it.
const zapTime = "2006-01-02T15:04:05.000Z0700"

func (l logLine) time() time.Time {
	t, _ := time.Parse(zapTime, l.TS)
	return t
}

// lines reads m's log (certagent's JSON lines; other lines are skipped).
func (m *member) lines() []logLine {
	f, err := os.Open(m.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			l.raw = sc.Text()
			out = append(out, l)
		}
	}
	return out
}

// first returns the time of the first log line match accepts, zero if none.
func (m *member) first(match func(logLine) bool) time.Time {
	for _, l := range m.lines() {
		if match(l) {
			return l.time()
		}
	}
	return time.Time{}
}

// servingStored is when certagent logged storing m's first serving
// certificate, zero if it did not.
func (m *member) servingStored() time.Time {
	return m.first(func(l logLine) bool {
		return l.Msg == "certificate stored" && l.Signer == certificatesv1.KubeletServingSignerName
	})
}

// metricsAddr is the address certagent logged for /metrics, /healthz and /readyz.
func (m *member) metricsAddr() string {
	for _, l := range m.lines() {
		if strings.HasPrefix(l.Msg, "serving /metrics") {
			return l.Address
		}
	}
	return ""
}

func tailFile(p string, n int) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// whoAmI asks the API server, with m's kubelet.conf, who it is.
func whoAmI(m *member) (string, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", m.kubeconf)
	if err != nil {
		return "", err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}

// parallel runs fn for every member with a few workers and returns the
// errors joined.
func (f *fleet) parallel(fn func(*member) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	ch := make(chan *member)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				if err := fn(m); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
					mu.Unlock()
				}
			}
		}()
	}
	for _, m := range f.members {
		ch <- m
	}
	close(ch)
	wg.Wait()
	return errors.Join(errs...)
}
