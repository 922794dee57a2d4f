package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/unitfile"
)

// benchNode is a fresh node directory with a bootstrap kubeconfig.
type benchNode struct {
	name, dir, certDir string
	args               []string
}

func newBenchNode(b *testing.B, tag string, i int) benchNode {
	b.Helper()
	return newBenchNodeWithMetrics(b, tag, i, "")
}

// newBenchNodeWithMetrics is newBenchNode with metrics.address set to addr
// ("" turns the endpoint off).
func newBenchNodeWithMetrics(b *testing.B, tag string, i int, addr string) benchNode {
	b.Helper()
	n := benchNode{name: fmt.Sprintf("%s-%d-%d", tag, i, time.Now().UnixNano()%1000000)}
	n.dir = filepath.Join(work, n.name)
	n.certDir = filepath.Join(n.dir, "pki")
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		b.Fatal(err)
	}
	tok, err := cp.CreateBootstrapToken(context.Background(), controlplane.TokenOptions{AutoApprove: true})
	if err != nil {
		b.Fatal(err)
	}
	boot := filepath.Join(n.dir, "bootstrap-kubelet.conf")
	if err := cp.WriteBootstrapKubeconfig(boot, tok, false); err != nil {
		b.Fatal(err)
	}
	cfg := filepath.Join(n.dir, "config.yaml")
	_ = os.WriteFile(cfg, []byte(fmt.Sprintf("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nmetrics:\n  address: %q\n", addr)), 0o600)
	n.args = []string{"--config", cfg, "--node-name", n.name, "--bootstrap-kubeconfig", boot,
		"--kubeconfig", filepath.Join(n.dir, "kubelet.conf"), "--cert-dir", n.certDir}
	return n
}

// pendingServingCSR waits for the node's serving CSR and returns its name.
func pendingServingCSR(b *testing.B, node string) string {
	b.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range list.Items {
			if c.Spec.SignerName == certificatesv1.KubeletServingSignerName && c.Spec.Username == "system:node:"+node {
				return c.Name
			}
		}
	}
	b.Fatalf("no serving CSR for %s", node)
	return ""
}

// BenchmarkApprovalToDisk: from the API call that approves a pending serving
// CSR to kubelet-server-current.pem pointing at the new certificate, as seen
// by inotify on the certificate directory. certagent waits by watch.
func BenchmarkApprovalToDisk(b *testing.B) {
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		n := newBenchNode(b, "latency", i)
		cmd := exec.Command(bins["certagent"], append([]string{"run", "--once"}, n.args...)...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		name := pendingServingCSR(b, n.name)
		w, err := fsnotify.NewWatcher()
		if err != nil {
			b.Fatal(err)
		}
		for !dirExists(n.certDir) {
			time.Sleep(time.Millisecond)
		}
		if err := w.Add(n.certDir); err != nil {
			b.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // let certagent reach its watch
		start := time.Now()
		if err := cp.ApproveCSR(context.Background(), name); err != nil {
			b.Fatal(err)
		}
		current := filepath.Join(n.certDir, "kubelet-server-current.pem")
		var took time.Duration
		for took == 0 {
			select {
			case ev := <-w.Events:
				if ev.Name == current && ev.Has(fsnotify.Create) {
					took = time.Since(start)
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("no serving certificate 30 s after approval")
			}
		}
		w.Close()
		lat = append(lat, took)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("certagent: %v", err)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	med, p90 := lat[len(lat)/2], lat[len(lat)*9/10]
	b.ReportMetric(ms(med), "median-ms")
	b.ReportMetric(ms(p90), "p90-ms")
	fmt.Printf("\napproval -> serving certificate on disk, %d runs: median %.1f ms, p90 %.1f ms, max %.1f ms\n", len(lat), ms(med), ms(p90), ms(lat[len(lat)-1]))
}

func dirExists(p string) bool { fi, err := os.Stat(p); return err == nil && fi.IsDir() }

// BenchmarkIdle: the daemon with both certificates valid, over a window
// ($BENCH_IDLE, default 3m: the runtime's forced collection, every 2
// minutes, falls in it): API requests it made (the API server's audit log),
// CPU time it used, and its memory read every second, mean and max: its
// anonymous memory (RssAnon: what the node pays for this process alone), its
// PSS and USS (/proc/PID/smaps_rollup: the binary's page-cache pages counted
// in shares, or not at all) and its RSS (docs/metrics.md, "Memory"), and its
// open connections to the API server (closed once it settles: client-go
// would keep them 90 s). As on a node, /metrics is on and scraped every 15 s
// during the window.
func BenchmarkIdle(b *testing.B) {
	window := 3 * time.Minute
	if v := os.Getenv("BENCH_IDLE"); v != "" {
		var err error
		if window, err = time.ParseDuration(v); err != nil {
			b.Fatal(err)
		}
	}
	// As the shipped unit starts it (GOMAXPROCS=1); a variable set for the
	// benchmark wins, as a drop-in's would.
	unitEnv, err := unitfile.Environment(unitfile.Shipped)
	if err != nil {
		b.Fatal(err)
	}
	env := append(unitEnv, os.Environ()...)
	for i := 0; i < b.N; i++ {
		addr := freeAddr(b)
		n := newBenchNodeWithMetrics(b, "idle", i, addr)
		cmd := exec.Command(bins["certagent"], append([]string{"run"}, n.args...)...)
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if err := cp.ApproveCSR(context.Background(), pendingServingCSR(b, n.name)); err != nil {
			b.Fatal(err)
		}
		for !fileExists(filepath.Join(n.certDir, "kubelet-server-current.pem")) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(2 * time.Second) // let start-up settle
		pid := cmd.Process.Pid
		apiPort := port(b, cp.URL)
		cpu0, from := cpuTime(b, pid), time.Now()
		// Memory every second while idle: between scrapes and across the
		// runtime's forced collection (every 2 minutes), not one moment.
		samples := make(chan memSample, int(window/time.Second)+2)
		stopSampling := make(chan struct{})
		go func() {
			defer close(samples)
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopSampling:
					return
				case <-t.C:
					if m, err := readMemory(pid); err == nil {
						m.conns, _ = apiConns(pid, apiPort)
						samples <- m
					}
				}
			}
		}()
		scrapes := scrapeEvery(b, "http://"+addr+"/metrics", 15*time.Second, window)
		cpu1, to := cpuTime(b, pid), time.Now()
		close(stopSampling)
		var all []memSample
		for s := range samples {
			all = append(all, s)
		}
		if len(all) == 0 {
			b.Fatal("no memory sample: the daemon exited")
		}
		mean, most := memStats(all)
		hwm := procStatus(b, pid, "VmHWM")
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		reqs, err := cp.RequestsBy("system:node:"+n.name, from, to)
		if err != nil {
			b.Fatal(err)
		}
		everything, err := cp.RequestsBy("system:node:"+n.name, time.Time{}, to)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(reqs)), "idle-api-requests")
		b.ReportMetric(ms(cpu1-cpu0), "idle-cpu-ms")
		for _, m := range []struct {
			name       string
			mean, most int64
		}{{"anon", mean.anon, most.anon}, {"pss", mean.pss, most.pss}, {"uss", mean.uss, most.uss}, {"rss", mean.rss, most.rss}} {
			b.ReportMetric(float64(m.mean)/1024, m.name+"-mean-MiB")
			b.ReportMetric(float64(m.most)/1024, m.name+"-max-MiB")
		}
		b.ReportMetric(float64(hwm)/1024, "peak-rss-MiB")
		b.ReportMetric(meanConns(all), "api-conns-mean")
		fmt.Printf("\nidle for %s (%s) with both certificates valid and %d scrapes of /metrics: %d API requests (%d by the node in all, start-up included), %.1f ms CPU; memory each second, mean / max: anonymous %.2f / %.2f MiB, PSS %.2f / %.2f, USS %.2f / %.2f, RSS %.2f / %.2f (the binary's file pages %.2f on average); peak RSS %.1f MiB (start-up and bootstrap); connections to the API server %.2f on average\n",
			window, lastValue(cmd.Env, "GOMAXPROCS"), scrapes, len(reqs), len(everything), ms(cpu1-cpu0), mib(mean.anon), mib(most.anon), mib(mean.pss), mib(most.pss),
			mib(mean.uss), mib(most.uss), mib(mean.rss), mib(most.rss), mib(mean.file), float64(hwm)/1024, meanConns(all))
	}
}

// lastValue is "NAME=value" as env, read as exec reads it (the last wins),
// gives NAME; "NAME unset" if it does not.
func lastValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if strings.HasPrefix(env[i], name+"=") {
			return env[i]
		}
	}
	return name + " unset"
}

// memSample is a process's memory at one moment, in KiB: VmRSS, RssAnon and
// RssFile from /proc/PID/status, Pss and USS (Private_Clean + Private_Dirty)
// from /proc/PID/smaps_rollup; and its connections to the API server.
type memSample struct{ rss, anon, file, pss, uss, conns int64 }

// readMemory reads pid's memSample.
func readMemory(pid int) (memSample, error) {
	st, err := readStatus(pid)
	if err != nil {
		return memSample{}, err
	}
	roll, err := readKBFields(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memSample{}, err
	}
	return memSample{rss: st["VmRSS"], anon: st["RssAnon"], file: st["RssFile"], pss: roll["Pss"],
		uss: roll["Private_Clean"] + roll["Private_Dirty"]}, nil
}

// memStats is the mean and the largest of each measure of s.
func memStats(s []memSample) (mean, most memSample) {
	for _, x := range s {
		mean.rss, mean.anon, mean.file, mean.pss, mean.uss = mean.rss+x.rss, mean.anon+x.anon, mean.file+x.file, mean.pss+x.pss, mean.uss+x.uss
		most.rss, most.anon, most.file, most.pss, most.uss = max(most.rss, x.rss), max(most.anon, x.anon), max(most.file, x.file), max(most.pss, x.pss), max(most.uss, x.uss)
	}
	n := int64(len(s))
	mean.rss, mean.anon, mean.file, mean.pss, mean.uss = mean.rss/n, mean.anon/n, mean.file/n, mean.pss/n, mean.uss/n
	return mean, most
}

// meanConns is the mean number of connections to the API server of s.
func meanConns(s []memSample) float64 {
	var sum int64
	for _, x := range s {
		sum += x.conns
	}
	return float64(sum) / float64(len(s))
}

// port is the port of url.
func port(b *testing.B, url string) int {
	b.Helper()
	i := strings.LastIndexByte(url, ':')
	p, err := strconv.Atoi(strings.TrimSuffix(url[i+1:], "/"))
	if err != nil {
		b.Fatalf("no port in %s", url)
	}
	return p
}

// apiConns counts pid's established TCP connections to the local port
// (its sockets, found through /proc/PID/fd, in /proc/PID/net/tcp and tcp6).
func apiConns(pid, port int) (int64, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	sockets := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			sockets[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var n int64
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(l)
			if len(f) < 10 || f[3] != "01" || !sockets[f[9]] {
				continue
			}
			if _, remPort, ok := strings.Cut(f[2], ":"); ok {
				if p, err := strconv.ParseInt(remPort, 16, 32); err == nil && int(p) == port {
					n++
				}
			}
		}
	}
	return n, nil
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrapeEvery GETs url at once and then every interval until window has
// passed, as Prometheus would, and returns the number of good scrapes.
func scrapeEvery(b *testing.B, url string, interval, window time.Duration) int {
	b.Helper()
	n := 0
	end := time.Now().Add(window)
	for {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatalf("scraping %s: %v", url, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("scraping %s: %s", url, resp.Status)
		}
		n++
		left := time.Until(end)
		if left <= 0 {
			return n
		}
		time.Sleep(min(interval, left))
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// cpuTime is utime+stime of pid from /proc/<pid>/stat.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// procStatus reads a kB field of /proc/<pid>/status.
func procStatus(b *testing.B, pid int, field string) int64 {
	b.Helper()
	v, err := readStatus(pid)
	if err != nil {
		b.Fatal(err)
	}
	kib, ok := v[field]
	if !ok {
		b.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	return kib
}

// readStatus reads the kB fields of /proc/<pid>/status.
func readStatus(pid int) (map[string]int64, error) {
	return readKBFields(fmt.Sprintf("/proc/%d/status", pid))
}

// readKBFields reads the "Name: N kB" lines of a /proc file.
func readKBFields(path string) (map[string]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, l := range strings.Split(string(data), "\n") {
		if name, rest, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(rest, " kB") {
			if v, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64); err == nil {
				out[name] = v
			}
		}
	}
	return out, nil
}
