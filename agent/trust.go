package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/internal/atomicfile"
	"github.com/certagent/certagent/trust"
)

// trustCAFile is the file kubelet.conf names as its CA when the agent
// follows the published trust, "" otherwise.
func trustCAFile(cfg config.Config) string {
	if !cfg.Trust.Follow {
		return ""
	}
	return cfg.TrustCAFile()
}

// follower is the agent's part in following a CA rotation
// (docs/ca-rotation.md): it keeps the trust files and re-issues the
// certificates whose signer moved to a new CA.
type follower struct {
	a  *Agent
	wg sync.WaitGroup // re-issues under way

	mu        sync.Mutex
	known     trust.Bundle              // every CA published, for naming the CA of a certificate
	reissuing map[bootstrap.Kind]bool   // a re-issue is scheduled or running
	tried     map[bootstrap.Kind]string // the newest CA a re-issue was tried for and did not reach
}

// followTrust follows the published trust until ctx ends, from the moment
// the node has its identity.
func (a *Agent) followTrust(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-a.readyCh:
	}
	fo := &follower{a: a, reissuing: map[bootstrap.Kind]bool{}, tried: map[bootstrap.Kind]string{}}
	a.mu.Lock()
	a.trust = fo
	a.mu.Unlock()
	a.certs.UpdateTrust(func(t *observe.TrustState) { t.Following = true })
	f := &trust.Follower{Source: fo.source, Apply: fo.apply, Failed: fo.failed,
		Clock: a.clock, Rand: a.rand, Log: a.log.Named("trust")}
	f.Run(ctx)
	fo.wg.Wait()
}

// source is the published trust as kubelet.conf reaches it now; kubelet.conf
// is first moved over to the CA file the agent keeps.
func (fo *follower) source(ctx context.Context) (trust.Source, error) {
	b := fo.a.bootstrapper()
	if err := b.UseTrustFile(ctx); err != nil {
		return nil, fmt.Errorf("moving kubelet.conf to the CA file %s: %w", fo.a.Config().TrustCAFile(), err)
	}
	if fo.a.opts.TrustSource != nil {
		return fo.a.opts.TrustSource(b)
	}
	api, err := b.NodeAPI()
	if err != nil {
		return nil, err
	}
	return api.TrustBundles(), nil
}

func (fo *follower) failed(err error) {
	switch {
	case apierrors.IsForbidden(err):
		fo.a.log.Warn("not allowed to read the cluster's published trust: apply packaging/cluster/trust/rbac.yaml (asking again once soon, then about every 10 minutes)", zap.Error(err))
	case errors.Is(err, trust.ErrNotServed):
		fo.a.log.Warn("not following the cluster's trust: the API server serves no ClusterTrustBundles (Kubernetes 1.37, or 1.33–1.36 with the ClusterTrustBundle feature gate and certificates.k8s.io/v1beta1 on), and kube-public's ConfigMaps cannot be read either; kubelet.conf's CA stays as it is (asking again in about an hour)", zap.Error(err))
	default:
		fo.a.log.Warn("cannot read the cluster's published trust; retrying", zap.Error(err))
	}
}

// apply adopts what the cluster publishes: kubelet.conf's CA, the kubelet's
// client CA, and re-issues for the kubelet signers' newest CAs.
func (fo *follower) apply(ctx context.Context, src trust.Source, all []trust.Published) error {
	cfg := fo.a.Config()
	fo.remember(all)
	serving, ok, err := trust.BySigner(all, trust.SignerAPIServerServing)
	if ok && err == nil {
		chain, name, cerr := src.ServerChain(ctx)
		if cerr != nil {
			return cerr // not a refusal: the round is retried
		}
		err = trust.CheckServer(serving, chain, name, fo.a.clock.Now())
	}
	if ok {
		fo.keep(observe.TrustFileCA, "kubelet.conf's CA file", cfg.TrustCAFile(), serving, err)
	}
	if p := cfg.Trust.KubeletClientCAFile; p != "" {
		// The default signer is the API server's: one CA signs the API
		// server's certificates, as kubeadm sets it up, and the same check
		// keeps a bundle that does not trust it out.
		b := serving
		if signer := cfg.KubeletClientCASigner(); signer != trust.SignerAPIServerServing {
			b, ok, err = trust.BySigner(all, signer)
		}
		if ok {
			fo.keep(observe.TrustFileKubeletClientCA, "the kubelet's client CA file", p, b, err)
		}
	}
	for kind, signer := range map[bootstrap.Kind]string{bootstrap.Client: trust.SignerKubeletClient, bootstrap.Serving: trust.SignerKubeletServing} {
		if kind == bootstrap.Serving && !cfg.ServingEnabled() {
			continue
		}
		b, ok, err := trust.BySigner(all, signer)
		if !ok {
			continue
		}
		if err != nil {
			fo.refuse("the "+string(kind)+" certificate's signer bundle", err)
			continue
		}
		fo.planReissue(ctx, kind, b)
	}
	fo.a.runDueTrustHooks(ctx)
	return nil
}

// keep writes b to path (role: the metric's file label) unless err refuses
// it or the file holds b already.
func (fo *follower) keep(role, what, path string, b trust.Bundle, err error) {
	if err != nil {
		fo.refuse(what+" "+path, err)
		return
	}
	if cur, rerr := trust.ReadBundle(path); rerr == nil && cur.Equal(b) {
		fo.noteFile(role, path, len(b.CAs))
		return
	}
	if merr := fo.a.markTrustHooksDue(path); merr != nil {
		fo.a.log.Error("cannot record that the postTrust hooks are due; keeping the file as it is", zap.String("path", path), zap.Error(merr))
		return
	}
	if werr := atomicfile.WriteFile(path, b.PEM(), 0o644); werr != nil {
		fo.a.log.Error("cannot write the cluster's published trust", zap.String("path", path), zap.Error(werr))
		return
	}
	fo.noteFile(role, path, len(b.CAs))
	fo.a.log.Info("trust updated from the cluster's published bundle", zap.String("file", path), zap.String("cas", b.DescribeAll()))
	fo.a.events.TrustUpdated(what, path, b.DescribeAll())
}

// noteFile records what the trust file of role holds and when it changed.
func (fo *follower) noteFile(role, path string, cas int) {
	var changed time.Time
	if fi, err := os.Stat(path); err == nil {
		changed = fi.ModTime()
	}
	fo.a.certs.UpdateTrust(func(t *observe.TrustState) { t.CAs[role], t.Changed[role] = cas, changed })
}

// refuse logs and tells a refusal; nothing changes.
func (fo *follower) refuse(what string, err error) {
	fo.a.certs.UpdateTrust(func(t *observe.TrustState) { t.Refused++ })
	fo.a.log.Error("refusing the cluster's published trust; "+what+" kept as it was", zap.Error(err))
	fo.a.events.TrustRefused(what, err)
}

// remember keeps every published CA, valid or not, to name the CA of a
// certificate by.
func (fo *follower) remember(all []trust.Published) {
	var parts []trust.Bundle
	for _, p := range all {
		if b, err := trust.ParseBundle([]byte(p.PEM)); err == nil {
			parts = append(parts, b)
		}
	}
	fo.mu.Lock()
	fo.known = trust.Merge(parts...)
	fo.mu.Unlock()
}
