//go:build !failpoints

// Package failpoint marks the points where the crash-consistency suite kills
// certagent (test/e2e/crash_test.go). In normal builds Inject does nothing and
// compiles away; build with -tags failpoints to arm it.
package failpoint

// Inject marks a point where a crash may happen.
func Inject(name string) {}
