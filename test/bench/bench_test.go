// Package bench compares, on one real control plane and in alternating runs,
// `certagent run --once --serving=false` with the kubelet's own
// bootstrap.LoadClientCert built as a process (cmd/kubelet-bootstrap): wall
// time, CPU time and peak RSS of the whole process, its anonymous memory, PSS
// and USS at exit (cmd/rusage), and binary sizes.
package bench

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/test/controlplane"
)

var (
	cp   *controlplane.ControlPlane
	work string
	bins = map[string]string{} // name -> binary
)

// buildFlags are used for both binaries, built as the Makefile builds
// certagent (static: CGO_ENABLED=0), so their sizes and start-up compare.
var buildFlags = []string{"build", "-trimpath", "-ldflags=-s -w"}

// benchPace is the pause before each bootstrap ($BENCH_PACE, default 300ms).
var benchPace = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("BENCH_PACE")); err == nil {
		return d
	}
	return 300 * time.Millisecond
}()

// runSeq numbers every bootstrap run of the process: Go calls a benchmark
// with N=1 first and then with the N asked for, so i alone repeats.
var runSeq atomic.Int64

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }
	var err error
	if work, err = os.MkdirTemp("", "certagent-bench-"); err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(work)
	for name, spec := range map[string][2]string{
		"certagent": {"../..", "./cmd/certagent"},
		"kubelet":   {"..", "./cmd/kubelet-bootstrap"},
		"rusage":    {"..", "./cmd/rusage"},
	} {
		out := filepath.Join(work, name)
		cmd := exec.CommandContext(ctx, "go", append(buildFlags, "-o", out, spec[1])...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = spec[0], os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if err := cmd.Run(); err != nil {
			logf("building %s: %v", name, err)
			return 1
		}
		bins[name] = out
	}
	cpBins, err := controlplane.EnsureBinaries(ctx, logf)
	if err != nil {
		logf("%v", err)
		return 1
	}
	if cp, err = controlplane.Start(ctx, cpBins, controlplane.Options{Dir: filepath.Join(work, "cp"), Logf: logf}); err != nil {
		logf("%v", err)
		return 1
	}
	defer cp.Stop()
	return m.Run()
}

type sample struct {
	wall, cpu time.Duration
	rssKiB    int64 // peak RSS (ru_maxrss)
	// At exit (/proc/PID/smaps_rollup): anonymous memory, PSS, USS.
	anonKiB, pssKiB, ussKiB int64
}

// once bootstraps a fresh node (new directory, name and token) with the
// named binary, measures the process, and checks that it did what it
// claims: one new CSR for this node, and a kubelet.conf whose certificate
// is this node's.
func once(b *testing.B, name string) sample {
	b.Helper()
	dir, node, args := freshNode(b, name)
	cmd := exec.Command(bins["rusage"], append([]string{bins[name]}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v\n%s%s", name, err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	var r struct {
		WallNS    int64 `json:"wall_ns"`
		CPUNS     int64 `json:"cpu_ns"`
		MaxRSSKiB int64 `json:"max_rss_kib"`
		AnonKiB   int64 `json:"anon_kib"`
		PSSKiB    int64 `json:"pss_kib"`
		USSKiB    int64 `json:"uss_kib"`
		ExitRead  bool  `json:"exit_read"`
		ExitCode  int   `json:"exit_code"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil || r.ExitCode != 0 {
		b.Fatalf("%s: exit %d (%v)\n%s%s", name, r.ExitCode, err, stdout.String(), stderr.String())
	}
	if !r.ExitRead {
		b.Fatalf("%s: rusage did not read its memory at exit\n%s", name, stderr.String())
	}
	checkBootstrapped(b, name, dir, node)
	return sample{wall: time.Duration(r.WallNS), cpu: time.Duration(r.CPUNS), rssKiB: r.MaxRSSKiB,
		anonKiB: r.AnonKiB, pssKiB: r.PSSKiB, ussKiB: r.USSKiB}
}

// freshNode makes a node for one run of the named binary: a new directory,
// name and bootstrap token; it returns the directory, the node's name and
// the binary's arguments.
func freshNode(b *testing.B, name string) (dir, node string, args []string) {
	b.Helper()
	seq := runSeq.Add(1)
	dir = filepath.Join(work, fmt.Sprintf("%s-%d", name, seq))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err) // a directory from an earlier run would skip the work
	}
	tok, err := cp.CreateBootstrapToken(context.Background(), controlplane.TokenOptions{AutoApprove: true})
	if err != nil {
		b.Fatal(err)
	}
	// One node at a time: back to back, the runs would exhaust the
	// controller-manager's client rate limit (QPS 20, burst 30; a bootstrap
	// costs it 3 requests, a new token 1 more), and its token bucket, not the
	// agents, would set the pace of both (a run of 30 took 80 and 77 ms).
	time.Sleep(benchPace)
	boot := filepath.Join(dir, "bootstrap-kubelet.conf")
	if err := cp.WriteBootstrapKubeconfig(boot, tok, false); err != nil {
		b.Fatal(err)
	}
	node = fmt.Sprintf("bench-%s-%d", name, seq)
	args = []string{"--kubeconfig", filepath.Join(dir, "kubelet.conf"), "--bootstrap-kubeconfig", boot,
		"--cert-dir", filepath.Join(dir, "pki"), "--node-name", node}
	if name == "certagent" {
		cfg := filepath.Join(dir, "config.yaml")
		_ = os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\n"), 0o600)
		args = append([]string{"run", "--once", "--serving=false", "--config", cfg}, args...)
	}
	return dir, node, args
}

// BenchmarkClientBootstrap runs both, alternating, b.N times each, and reports
// medians and certagent/kubelet ratios (below 1 means certagent is better).
func BenchmarkClientBootstrap(b *testing.B) {
	samples := map[string][]sample{}
	for i := 0; i < b.N; i++ {
		order := []string{"certagent", "kubelet"}
		if i%2 == 1 {
			order = []string{"kubelet", "certagent"}
		}
		for _, name := range order {
			samples[name] = append(samples[name], once(b, name))
		}
	}
	b.StopTimer()
	med := map[string]sample{}
	for name, s := range samples {
		med[name] = median(s)
	}
	size := map[string]int64{}
	for _, name := range []string{"certagent", "kubelet"} {
		p := bins[name]
		fi, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		size[name] = fi.Size()
	}
	c, k := med["certagent"], med["kubelet"]
	// Each certagent run against the kubelet run beside it: the machine's
	// pace drifts over a series, and the pairs see the same.
	var paired []float64
	for i := range samples["certagent"] {
		paired = append(paired, float64(samples["certagent"][i].wall)/float64(samples["kubelet"][i].wall))
	}
	sort.Float64s(paired)
	b.ReportMetric(paired[len(paired)/2], "paired-wall-ratio")
	b.ReportMetric(ms(c.wall), "certagent-wall-ms")
	b.ReportMetric(ms(k.wall), "kubelet-wall-ms")
	b.ReportMetric(ms(c.cpu), "certagent-cpu-ms")
	b.ReportMetric(ms(k.cpu), "kubelet-cpu-ms")
	b.ReportMetric(float64(c.rssKiB)/1024, "certagent-rss-MiB")
	b.ReportMetric(float64(k.rssKiB)/1024, "kubelet-rss-MiB")
	b.ReportMetric(float64(c.anonKiB)/1024, "certagent-anon-MiB")
	b.ReportMetric(float64(k.anonKiB)/1024, "kubelet-anon-MiB")
	b.ReportMetric(float64(c.pssKiB)/1024, "certagent-pss-MiB")
	b.ReportMetric(float64(k.pssKiB)/1024, "kubelet-pss-MiB")
	b.ReportMetric(float64(size["certagent"])/1e6, "certagent-size-MB")
	b.ReportMetric(float64(size["kubelet"])/1e6, "kubelet-size-MB")
	fmt.Printf("\n%-22s %12s %12s %8s\n", fmt.Sprintf("median of %d runs", b.N), "certagent", "kubelet", "ratio")
	row := func(label string, cv, kv float64, unit string) {
		fmt.Printf("%-22s %9.1f %-2s %9.1f %-2s %8.2f\n", label, cv, unit, kv, unit, cv/kv)
	}
	row("wall time", ms(c.wall), ms(k.wall), "ms")
	row("CPU time", ms(c.cpu), ms(k.cpu), "ms")
	row("peak RSS", float64(c.rssKiB)/1024, float64(k.rssKiB)/1024, "MiB")
	row("anonymous at exit", float64(c.anonKiB)/1024, float64(k.anonKiB)/1024, "MiB")
	row("PSS at exit", float64(c.pssKiB)/1024, float64(k.pssKiB)/1024, "MiB")
	row("USS at exit", float64(c.ussKiB)/1024, float64(k.ussKiB)/1024, "MiB")
	row("binary size (-s -w)", float64(size["certagent"])/1e6, float64(size["kubelet"])/1e6, "MB")
	fmt.Printf("%-22s %8.2f (quartiles %.2f, %.2f)\n", "wall ratio, pair by pair", paired[len(paired)/2], paired[len(paired)/4], paired[len(paired)*3/4])
}

// checkBootstrapped requires kubelet.conf's certificate to be node's and
// exactly one CSR for node to exist: the run posted one and reused nothing.
func checkBootstrapped(b *testing.B, name, dir, node string) {
	b.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "kubelet.conf"))
	if err != nil {
		b.Fatalf("%s: kubelet.conf: %v", name, err)
	}
	certPEM := rc.CertData
	if rc.CertFile != "" {
		if certPEM, err = os.ReadFile(rc.CertFile); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		b.Fatalf("%s: kubelet.conf has no client certificate", name)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	if want := "system:node:" + node; leaf.Subject.CommonName != want {
		b.Fatalf("%s: kubelet.conf's certificate is for %q, want %q", name, leaf.Subject.CommonName, want)
	}
	list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, c := range list.Items {
		if block, _ := pem.Decode(c.Spec.Request); block != nil {
			if req, err := x509.ParseCertificateRequest(block.Bytes); err == nil && req.Subject.CommonName == "system:node:"+node {
				n++
			}
		}
	}
	if n != 1 {
		b.Fatalf("%s: %d CSRs for %s, want exactly the one this run posted", name, n, node)
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// median takes the median of each measure independently.
func median(s []sample) sample {
	pick := func(vals []int64) int64 {
		sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
		return vals[len(vals)/2]
	}
	var w, c, r, an, ps, us []int64
	for _, x := range s {
		w, c, r = append(w, int64(x.wall)), append(c, int64(x.cpu)), append(r, x.rssKiB)
		an, ps, us = append(an, x.anonKiB), append(ps, x.pssKiB), append(us, x.ussKiB)
	}
	return sample{wall: time.Duration(pick(w)), cpu: time.Duration(pick(c)), rssKiB: pick(r),
		anonKiB: pick(an), pssKiB: pick(ps), ussKiB: pick(us)}
}
