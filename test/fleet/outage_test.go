package fleet

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// outageDown is how long the API server stays stopped.
const outageDown = 60 * time.Second

// fleetCSRs lists the CSRs of f's nodes.
func (f *fleet) fleetCSRs(t *testing.T) []csrInfo {
	t.Helper()
	var out []csrInfo
	for _, c := range f.c.census(t) {
		if strings.HasPrefix(c.node, f.prefix+"-") {
			out = append(out, c)
		}
	}
	return out
}

var healthClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get200(addr, path string) bool {
	resp, err := healthClient.Get("http://" + addr + path)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// countNot200 asks every daemon once and counts those not answering 200.
func countNot200(f *fleet, addrs map[*member]string, path string) int {
	var bad atomic.Int64
	_ = f.parallel(func(m *member) error {
		if !get200(addrs[m], path) {
			bad.Add(1)
		}
		return nil
	})
	return int(bad.Load())
}

// waitHealthy asks every daemon's /healthz and /readyz until each answered
// 200 (once each), and returns how many never did within timeout.
func waitHealthy(f *fleet, addrs map[*member]string, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	var left atomic.Int64
	_ = f.parallel(func(m *member) error {
		for !(get200(addrs[m], "/healthz") && get200(addrs[m], "/readyz")) {
			if time.Now().After(deadline) {
				left.Add(1)
				return fmt.Errorf("not healthy")
			}
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	})
	return int(left.Load())
}
