package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// etcdReadyTimeout bounds how long etcd may take to report healthy.
const etcdReadyTimeout = 60 * time.Second

// startEtcd starts a single-member etcd with its data under dir/etcd on free
// loopback client and peer ports, retrying with new ports if a port was
// taken in the meantime, and waits until /health reports healthy. It returns
// the process and the client URL.
func startEtcd(ctx context.Context, bin, dir string) (*process, string, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return nil, "", err
		}
		dataDir := filepath.Join(dir, "etcd")
		// A failed attempt may have initialized a member with other URLs.
		if err := os.RemoveAll(dataDir); err != nil {
			return nil, "", fmt.Errorf("clear etcd data dir: %w", err)
		}
		clientURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		args := []string{
			"--name", "certagent",
			"--data-dir", dataDir,
			"--listen-client-urls", clientURL,
			"--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL,
			"--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "certagent=" + peerURL,
			"--initial-cluster-state", "new",
			// Test data is thrown away; fsync only slows a loaded machine down.
			"--unsafe-no-fsync",
			"--log-level", "warn",
		}
		p, err := startProcess("etcd", bin, args, filepath.Join(dir, "logs", "etcd.log"))
		if err != nil {
			return nil, "", err
		}
		err = waitEtcdHealthy(ctx, p, clientURL)
		if err == nil {
			return p, clientURL, nil
		}
		p.kill()
		lastErr = err
		if !portInUse(p) {
			break
		}
	}
	return nil, "", fmt.Errorf("start etcd: %w", lastErr)
}

// waitEtcdHealthy polls etcd's /health endpoint until it reports healthy,
// the process exits, ctx ends or etcdReadyTimeout passes.
func waitEtcdHealthy(ctx context.Context, p *process, clientURL string) error {
	ctx, cancel := context.WithTimeout(ctx, etcdReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	var last string
	for {
		if p.exited() {
			return p.exitError()
		}
		ok, msg := etcdHealthy(ctx, client, clientURL)
		if ok {
			return nil
		}
		last = msg
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd not healthy at %s (last: %s): %w; last lines of %s:\n%s",
				clientURL, last, ctx.Err(), p.logPath, p.logTail())
		case <-p.done:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// etcdHealthy makes one /health request.
func etcdHealthy(ctx context.Context, client *http.Client, clientURL string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, clientURL+"/health", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var h struct {
		Health string `json:"health"`
	}
	if err := json.Unmarshal(body, &h); err != nil || h.Health != "true" {
		return false, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
	}
	return true, ""
}
