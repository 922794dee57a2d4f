package fleet

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certagent/certagent/test/controlplane"
)

var (
	flagN    = flag.Int("fleet.n", envInt("FLEET_N", 20), "nodes in each fleet (default $FLEET_N, else 20)")
	flagWave = flag.Bool("fleet.wave", os.Getenv("FLEET_WAVE") == "1", "also run the renewal waves (about 13 minutes whatever N; default $FLEET_WAVE=1)")
	flagOut  = flag.String("fleet.out", os.Getenv("FLEET_OUT"), "directory for fleet.md and the plot's data (default $FLEET_OUT; none if empty)")
	flagQPS  = flag.Float64("fleet.qps", 500, "the raised controller-manager --kube-api-qps (--kube-api-burst twice that)")
	// For comparisons run by hand: which limits and fleets TestScaleUp runs, in order (a fleet may repeat,
	// e.g. -fleet.limits=raised -fleet.variants=kubelet,client,client,kubelet to see what the order does).
	flagLimits    = flag.String("fleet.limits", "default,raised", "the controller-manager limits TestScaleUp runs: default, raised")
	flagVariants  = flag.String("fleet.variants", "certagent,client,kubelet", "the fleets TestScaleUp runs under each limit, in order: certagent, client (certagent, client only), kubelet")
	flagApprover  = flag.Bool("fleet.approver", os.Getenv("FLEET_APPROVER") == "1", "also compare the serving CSR approvers, the test's and certagent-cluster approve, at -fleet.approver-n nodes (as root; default $FLEET_APPROVER=1)")
	flagApproverN = flag.Int("fleet.approver-n", envInt("FLEET_APPROVER_N", 0), "nodes in each approver fleet (default $FLEET_APPROVER_N, else -fleet.n)")
	flagRounds    = flag.Int("fleet.rounds", envInt("FLEET_ROUNDS", 1), "times the like-for-like pair (client only, kubelet) runs under each limit, alternating (default $FLEET_ROUNDS, else 1)")
)

var (
	work   string // scratch directory for every node and control plane
	bins   = map[string]string{}
	cpBins controlplane.Binaries
	report = &Report{}
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	if kubeconfig := os.Getenv(adhocApproverEnv); kubeconfig != "" {
		os.Exit(runAdhocApprover(kubeconfig)) // the test binary as the ad-hoc approver's process
	}
	flag.Parse()
	os.Exit(run(m))
}

// stderrf logs outside any test (the limits are restored after the last).
func stderrf(f string, a ...any) { fmt.Fprintf(os.Stderr, "fleet: "+f+"\n", a...) }

func run(m *testing.M) int {
	logf := stderrf
	var err error
	// A short path: each node's control socket lives under it (unix socket
	// names are limited to 108 bytes).
	if work, err = os.MkdirTemp("", "fleet-"); err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(work)
	report.N, report.RaisedQPS, report.Started = *flagN, float32(*flagQPS), time.Now()
	code := m.Run()
	stopSharedCluster()
	restoreLimits()
	report.Took = time.Since(report.Started)
	if *flagOut != "" && (len(report.ScaleUps)+len(report.Waves)+len(report.Overloads)+len(report.Joins)+len(report.Approvers) > 0 || report.Outage != nil) {
		if err := report.Write(*flagOut); err != nil {
			logf("writing the report: %v", err)
			return 1
		}
		logf("report in %s", filepath.Join(*flagOut, "fleet.md"))
	}
	return code
}

var (
	setupOnce     sync.Once
	setupErr      error
	restoreLimits = func() {}
)

// setup builds the binaries and the control plane's (cached) and makes room
// for the fleets, once, for the first test that needs them.
func setup(t *testing.T) {
	t.Helper()
	setupOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		if setupErr = buildBinaries(ctx); setupErr != nil {
			return
		}
		if cpBins, setupErr = controlplane.EnsureBinaries(ctx, t.Logf); setupErr != nil {
			setupErr = fmt.Errorf("building the control plane: %w", setupErr)
			return
		}
		report.Kubernetes = cpBins.Version
		var restore func()
		if restore, setupErr = raiseLimits(*flagN, stderrf); setupErr == nil {
			restoreLimits = restore
		}
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// buildBinaries takes certagent from $CERTAGENT_BIN (the Makefile builds it)
// or builds it, and builds the kubelet's bootstrap as a process
// (test/cmd/kubelet-bootstrap); both static, as the bench builds them.
func buildBinaries(ctx context.Context) error {
	specs := map[string][2]string{"kubelet": {"..", "./cmd/kubelet-bootstrap"}}
	if p := os.Getenv("CERTAGENT_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		bins["certagent"] = abs
	} else {
		specs["certagent"] = [2]string{"../..", "./cmd/certagent"}
	}
	for name, spec := range specs {
		out := filepath.Join(work, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, spec[1])
		cmd.Dir, cmd.Stdout, cmd.Stderr = spec[0], os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %w", name, err)
		}
		bins[name] = out
	}
	return nil
}

// raiseLimits makes room for n daemons on this one machine: each certagent
// holds one inotify instance (fs.inotify.max_user_instances is often 128;
// certagent would fall back to checking its files every minute), so the
// limit is raised with sysctl for the run and put back afterwards.
func raiseLimits(n int, logf func(string, ...any)) (func(), error) {
	const path = "/proc/sys/fs/inotify/max_user_instances"
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	old, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	want := 2*n + 256 // two fleets may overlap briefly, and the rest of the machine
	if old >= want {
		return func() {}, nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(want)), 0o644); err != nil {
		if old >= n+64 {
			logf("cannot raise fs.inotify.max_user_instances from %d (%v); enough for %d daemons alone", old, err, n)
			return func() {}, nil
		}
		return nil, fmt.Errorf("raising fs.inotify.max_user_instances from %d to %d (run as root, or sysctl -w it): %w", old, want, err)
	}
	logf("sysctl fs.inotify.max_user_instances=%d for the run (was %d)", want, old)
	report.Notes = append(report.Notes, fmt.Sprintf("fs.inotify.max_user_instances raised from %d to %d for the run (one inotify instance per certagent)", old, want))
	return func() {
		if err := os.WriteFile(path, []byte(strconv.Itoa(old)), 0o644); err == nil {
			logf("sysctl fs.inotify.max_user_instances=%d again", old)
		}
	}, nil
}
