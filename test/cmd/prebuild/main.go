// Command prebuild builds (or finds in the cache) a Kubernetes minor's
// control plane and, with -kubelet, its kubelet, at the lowest CPU priority,
// so that make test can start the build for a later suite while earlier
// suites run: a suite that needs the binaries before the build is done waits
// for it on the cache's lock (controlplane.EnsureBinaries, EnsureKubelet).
// With -while-pid it stops, and its build with it, once that process (make)
// is gone, so a make test that failed early leaves no build behind.
//
// Usage (from the test module):
//
//	go run ./cmd/prebuild -minor v1.30 [-kubelet] [-while-pid PID]
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/certagent/certagent/test/controlplane"
)

func main() {
	minor := flag.String("minor", controlplane.Newest, "the Kubernetes minor (a directory under test/k8s)")
	kubelet := flag.Bool("kubelet", false, "also build that minor's kubelet")
	whilePID := flag.Int("while-pid", 0, "stop when this process has exited (0: never)")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(*minor, *kubelet, *whilePID); err != nil {
		log.Fatal(err)
	}
}

func run(minor string, kubelet bool, whilePID int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if whilePID > 0 {
		ctx = whileAlive(ctx, whilePID)
	}
	// Niceness is inherited: go build and its compilers run at 19 too, and
	// take only the CPU the suites running meanwhile leave.
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, 19); err != nil {
		return err
	}
	if err := os.Setenv("CERTAGENT_K8S", minor); err != nil {
		return err
	}
	start := time.Now()
	bins, err := controlplane.EnsureBinaries(ctx, log.Printf)
	if err != nil {
		return err
	}
	log.Printf("control plane %s ready (%s): %s", bins.Version, time.Since(start).Round(time.Second), bins.APIServer)
	if kubelet {
		path, err := controlplane.EnsureKubelet(ctx, log.Printf)
		if err != nil {
			return err
		}
		log.Printf("kubelet %s ready (%s): %s", minor, time.Since(start).Round(time.Second), path)
	}
	return nil
}

// whileAlive is ctx, cancelled once process pid no longer exists.
func whileAlive(ctx context.Context, pid int) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer cancel()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
					log.Printf("process %d has exited: stopping", pid)
					return
				}
			}
		}
	}()
	return ctx
}
