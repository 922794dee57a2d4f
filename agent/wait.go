package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"k8s.io/utils/clock"
)

// Poll intervals of certagent wait: the files are checked often (a local
// stat); after the API server rejected kubelet.conf it is asked again only
// this rarely.
const (
	waitPoll         = 2 * time.Second
	waitAfterReject  = 30 * time.Second
	waitReportPeriod = time.Minute
)

// WaitForKubelet returns once the kubelet can start (KubeletReady), saying so
// on stdout; on stderr it says what it waits for when that changes, and
// again every minute.
func (a *Agent) WaitForKubelet(ctx context.Context, clk clock.Clock, serving bool, stdout, stderr io.Writer) error {
	b := a.bootstrapper()
	last, lastAt := "", time.Time{}
	for {
		unconfirmed, missing := b.KubeletReady(ctx, serving)
		if missing == nil {
			what := "kubelet.conf is accepted by the API server"
			if unconfirmed != nil {
				what = fmt.Sprintf("kubelet.conf holds a valid client certificate; the API server could not be asked to confirm it (%v)", unconfirmed)
			}
			if serving {
				what += "; the serving certificate is in place"
			}
			fmt.Fprintf(stdout, "certagent wait: %s\n", what)
			return nil
		}
		if msg := missing.Error(); msg != last || clk.Since(lastAt) >= waitReportPeriod {
			fmt.Fprintf(stderr, "certagent wait: waiting: %s\n", msg)
			last, lastAt = msg, clk.Now()
		}
		pause := waitPoll
		if b.Identity().Rejected {
			pause = waitAfterReject
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("gave up waiting: %w", missing)
			}
			return fmt.Errorf("interrupted while waiting: %w", missing)
		case <-clk.After(pause):
		}
	}
}
