package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A phase of one client bootstrap: from the end of the one before until
// the first traced call that matches upTo.
type phase struct {
	label string
	upTo  *regexp.Regexp
}

var (
	callBootstrap = regexp.MustCompile(`^openat\(.*bootstrap-kubelet\.conf"`)
	callConnect   = regexp.MustCompile(`^connect\(.*AF_INET`)
	callCertFile  = regexp.MustCompile(`^openat\(.*/\.?kubelet-client-20[^"]*"`) // certagent's temporary file, the kubelet's own
	callKubeconf  = regexp.MustCompile(`^(renameat|openat)\(.*/kubelet\.conf"[,)]`)
	callRemoveBK  = regexp.MustCompile(`^unlinkat\(.*bootstrap-kubelet\.conf"`)
	callExit      = regexp.MustCompile(`^exit_group\(`)
	straceLine    = regexp.MustCompile(`^\s*\d+\s+(\d+\.\d+)\s+(.*)$`) // strace -f -ttt: pid, time, call
)

// phases are the same for both programs where they do the same work; the
// kubelet's LoadClientCert has no proof and keeps the bootstrap kubeconfig.
var phases = []phase{
	{"process start, configuration (exec to reading the bootstrap kubeconfig)", callBootstrap},
	{"key generated and written (certagent: synced) until connecting", callConnect},
	{"TLS, CSR posted, watched, approved and signed (connect to certificate file)", callCertFile},
	{"certificate and kubelet.conf stored (certagent: synced)", callKubeconf},
	{"certagent: the proof's end, bootstrap kubeconfig removed", callRemoveBK},
	{"to exit", callExit},
}

// BenchmarkClientBootstrapPhases traces, with strace (seccomp-filtered to
// the few calls that mark the phases, so the rest runs untraced), where the
// time of one client bootstrap goes, certagent against the kubelet's
// LoadClientCert: b.N alternating runs each on fresh nodes, checked as
// BenchmarkClientBootstrap checks them; medians per phase. strace slows
// the traced calls, so the totals run above BenchmarkClientBootstrap's.
func BenchmarkClientBootstrapPhases(b *testing.B) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		b.Fatalf("strace is needed (make e2e-deps installs it): %v", err)
	}
	got := map[string][][]time.Duration{}
	for i := 0; i < b.N; i++ {
		order := []string{"certagent", "kubelet"}
		if i%2 == 1 {
			order = []string{"kubelet", "certagent"}
		}
		for _, name := range order {
			dir, node, args := freshNode(b, name)
			trace := filepath.Join(dir, "strace.out")
			cmd := exec.Command(strace, append([]string{"-f", "--seccomp-bpf", "-ttt", "-o", trace,
				"-e", "trace=execve,connect,openat,renameat,unlinkat,exit_group", bins[name]}, args...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%s under strace: %v\n%s", name, err, out)
			}
			checkBootstrapped(b, name, dir, node)
			d, err := phaseTimes(trace)
			if err != nil {
				b.Fatalf("%s: %v", name, err)
			}
			got[name] = append(got[name], d)
		}
	}
	b.StopTimer()
	fmt.Printf("\n| phase (median of %d runs, ms, under strace) | certagent | kubelet LoadClientCert |\n|---|---|---|\n", b.N)
	for i, p := range append(phases, phase{label: "total"}) {
		c, k := medianAt(got["certagent"], i), medianAt(got["kubelet"], i)
		fmt.Printf("| %s | %.1f | %.1f |\n", p.label, ms(c), ms(k))
		if p.label == "total" {
			b.ReportMetric(ms(c), "certagent-traced-ms")
			b.ReportMetric(ms(k), "kubelet-traced-ms")
		}
	}
}

// phaseTimes reads an strace -ttt -f log and returns each phase's
// duration, then the total. A phase whose end call never happened (the
// kubelet removes nothing) lasts zero, and the next one starts where it
// started.
func phaseTimes(path string) ([]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	type call struct {
		at   float64
		text string
	}
	var calls []call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := straceLine.FindStringSubmatch(sc.Text())
		if m == nil || strings.Contains(m[2], "resumed>") {
			continue
		}
		at, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			continue
		}
		calls = append(calls, call{at, m[2]})
	}
	if len(calls) == 0 {
		return nil, fmt.Errorf("%s: no traced calls", path)
	}
	find := func(re *regexp.Regexp, after float64) (float64, bool) {
		for _, c := range calls {
			if c.at >= after && re.MatchString(c.text) {
				return c.at, true
			}
		}
		return 0, false
	}
	start := calls[0].at
	at := start
	var out []time.Duration
	for _, p := range phases {
		end, ok := find(p.upTo, at)
		if !ok {
			out = append(out, 0)
			continue
		}
		out = append(out, time.Duration((end-at)*1e9))
		at = end
	}
	return append(out, time.Duration((at-start)*1e9)), nil
}

func medianAt(runs [][]time.Duration, i int) time.Duration {
	var v []time.Duration
	for _, r := range runs {
		v = append(v, r[i])
	}
	sort.Slice(v, func(a, b int) bool { return v[a] < v[b] })
	return v[len(v)/2]
}
