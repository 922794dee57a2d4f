//go:build !failpoints

// Package failpoint marks the points where the crash-consistency suite kills
// certagent (test/e2e/crash_test.go). In normal builds Inject does nothing and
// compiles away; build with -tags failpoints to arm it. It is the node
// binary's (node side) and changes nothing in a build without the tag.
package failpoint

import "time"

// Inject marks a point where a crash may happen.
func Inject(name string) {}

// Duration returns def; failpoint builds let the environment variable env
// override it (say, to make the watchdog's patience short in a test).
func Duration(env string, def time.Duration) time.Duration { return def }
