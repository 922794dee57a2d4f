package command

import (
	"context"
	"io"

	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent"
)

// waitCommand is certagent wait: block until a kubelet can start on the
// files (kubelet.service's ExecStartPre in the package's drop-in).
func waitCommand(args []string, stdout, stderr io.Writer) int {
	c := newCommonFlags("wait", stderr)
	timeout := c.fs.Duration("timeout", 0, "give up after this long, exit 1 (default: wait as long as it takes)")
	c.addServingFlag("also wait for the serving certificate (default: unless serving.enabled is false)")
	cfg, code := c.start(args, true)
	if code != 0 {
		return code
	}
	return runAgent(stderr, cfg, agent.Options{Notifier: agent.NopNotifier{}}, func(ctx context.Context, a *agent.Agent) error {
		if *timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *timeout)
			defer cancel()
		}
		return a.WaitForKubelet(ctx, clock.RealClock{}, cfg.ServingEnabled(), stdout, stderr)
	})
}
