package fleet

// The overload comparison's ordinary user.

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// probeConfig makes probeUser, allowed to get namespaces and nothing else.
func probeConfig(t *testing.T, c *cluster) *rest.Config {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "fleet:" + probeUser},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}}},
	}
	if _, err := c.api().RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "fleet:" + probeUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: probeUser}},
	}
	if _, err := c.api().RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.UserConfig(probeUser)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = -1, 0 // the server, not client-go, must be what slows it
	return cfg
}

// probe is an ordinary user's steady stream of reads: one request every
// 1/rate seconds, each in its own goroutine (an open loop: a slow answer does
// not slow the stream), without client-go's retries, so every 429 is seen.
type probe struct {
	client  kubernetes.Interface
	stopped chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []probeSample
}

type probeSample struct {
	at   time.Time
	took time.Duration
	code int // 0: no answer
	err  error
}

func startProbe(t *testing.T, cfg *rest.Config, rate float64) *probe {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{client: cs, stopped: make(chan struct{})}
	if s := p.ask(); s.code != http.StatusOK { // the connection, and the permission
		t.Fatalf("the probe's first request: %d %v", s.code, s.err)
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer tick.Stop()
		for {
			select {
			case <-p.stopped:
				return
			case <-tick.C:
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					s := p.ask()
					p.mu.Lock()
					p.samples = append(p.samples, s)
					p.mu.Unlock()
				}()
			}
		}
	}()
	return p
}

func (p *probe) ask() probeSample {
	s := probeSample{at: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.err = p.client.CoreV1().RESTClient().Get().AbsPath(probePath).MaxRetries(0).Do(ctx).StatusCode(&s.code).Error()
	s.took = time.Since(s.at)
	return s
}

// halt stops the stream and waits for the requests under way.
func (p *probe) halt() {
	p.once.Do(func() { close(p.stopped) })
	p.wg.Wait()
}

// stats covers the requests started in [from, to): the latency of those
// answered 200, how many there were, and how many were answered 429 or
// failed otherwise.
func (p *probe) stats(from, to time.Time) (ok Dist, requests, throttled, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var took []time.Duration
	for _, s := range p.samples {
		if s.at.Before(from) || !s.at.Before(to) {
			continue
		}
		requests++
		switch s.code {
		case http.StatusOK:
			took = append(took, s.took)
		case http.StatusTooManyRequests:
			throttled++
		default:
			failed++
		}
	}
	return NewDist(took), requests, throttled, failed
}

func (p *probe) firstError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.samples {
		if s.code != http.StatusOK && s.code != http.StatusTooManyRequests {
			return fmt.Errorf("%d: %v", s.code, s.err)
		}
	}
	return nil
}
