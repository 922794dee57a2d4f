// Package kubelettest runs the real kubelet on the files a certagent daemon
// keeps, and watches it, for the suites that need both (test/e2e,
// test/carotation): the kubelet's configuration and process, a pod to reach
// through the API server, what the test sees of the kubelet over time (the
// certificates on disk and served, Lease renewals, kubectl logs and exec,
// the node proxy, TLS dials), and the daemon's side (certagent's build, a
// systemd notify socket, an approver of serving CSRs).
//
// It never fails a test from a goroutine of its own; helpers that take a
// *testing.T call it from the test's goroutine only.
package kubelettest
