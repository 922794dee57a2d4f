// Package agent is certagent's daemon on the node (node side): it wires the
// configuration, the bootstrapper and one renewal loop per certificate
// (packages config, bootstrap and rotate) into a process: the workers and
// their tasks, the one-shot runs (run --once, renew, wait), the directory
// lock, the control socket renew talks to, reloads, post-renew hooks, the
// systemd notification (READY, STATUS, WATCHDOG, STOPPING) and the /metrics,
// /healthz and /readyz listener.
//
// It holds no certificate logic (package bootstrap), no renewal arithmetic
// (package rotate) and renders nothing itself: the STATUS line, the metrics
// and the Events are package observe's. It parses no command line (package
// command) and knows nothing of the cluster-side service.
package agent
