package command

import "runtime"

// oneProcessor runs certagent's Go code on one processor at a time
// (GOMAXPROCS 1), as node_exporter does by default, unless the operator set
// GOMAXPROCS in the environment: every command is sequential work (a key, a
// CSR, a wait, a file), and each processor the runtime keeps has caches of
// its own — memory spans per size class, a garbage-collection worker — that
// a daemon on every node pays for on a node with many cores (docs/metrics.md,
// "Memory"). It returns the GOMAXPROCS in effect.
func oneProcessor(getenv func(string) string) int {
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	return runtime.GOMAXPROCS(0)
}
