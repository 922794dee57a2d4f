# certagent — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
# Package version: the last v* tag (0.1.0 if none) + commits since the first commit + hash, so every
# commit's package sorts above the previous one.
VERSION   ?= $(shell v=$$(git describe --tags --match 'v*' --abbrev=0 2>/dev/null | sed 's/^v//'); echo "$${v:-0.1.0}+git$$(git rev-list --count HEAD 2>/dev/null || echo 0).$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
ARCHES    ?= amd64 arm64
DIST      ?= dist
NFPM      := $(GO) tool -modfile=$(CURDIR)/packaging/tools/go.mod nfpm
LDFLAGS   := -s -w -X github.com/certagent/certagent/agent.Version=$(VERSION)
BIN       := bin/certagent
# The cluster-side attestation service (packaging/cluster runs it as a Deployment).
CLUSTER_LDFLAGS := -s -w -X github.com/certagent/certagent/cluster/command.Version=$(VERSION)
CLUSTER_BIN     := bin/certagent-cluster
E2E_FLAGS ?= -count=1 -timeout 50m

FUZZTIME  ?= 30s
# make fleet: nodes in each fleet (make test runs FLEET_SHORT_N without the renewal waves), and the raised
# controller-manager QPS it compares with the default (burst twice that).
FLEET_N       ?= 500
FLEET_SHORT_N ?= 20
FLEET_QPS     ?= 500
# make fleet-carotation: nodes that follow a cluster CA rotation, and their trust.reissueSpread.
FLEET_CAROT_N      ?= 100
FLEET_CAROT_SPREAD ?= 2m
# make fleet-approver: nodes in each of its three fleets (the test's ad-hoc serving CSR approver; certagent-cluster approve, its
# client limit as shipped and raised).
FLEET_APPROVER_N ?= 100
# make fleet-attest: nodes in each of its two fleets (by TPM attestation, each with its own swtpm; by token).
FLEET_ATTEST_N ?= 100
# make fleet: times the like-for-like pair (certagent client only, the kubelet's path) runs under each limit,
# alternating (one 500-node fleet against another varies by a fifth from run to run here).
FLEET_ROUNDS  ?= 3
# make fleet-overload: nodes in each of its two fleets (API Priority and Fairness with and without
# packaging/flowcontrol), against an API server lowered to 20 + 10 concurrent requests.
FLEET_OVERLOAD_N ?= 200
# e.g. FLEET_OVERLOAD_ARGS=-fleet.overload.default-first to run the default configuration first.
FLEET_OVERLOAD_ARGS ?=
# make sim: seeds simulated (each one node over SIM_YEARS), spread over two processes; SEED=n replays one.
SIM_SEEDS ?= 1000
SIM_YEARS ?= 1
SIM_FIRST ?= 1
# Extra flags for the simulation (make sim-rotation sets -sim.rotate); seeds for make sim-rotation.
SIM_ARGS  ?=
SIM_ROTATION_SEEDS ?= 200

# The Go vulnerability database (v1 layout, for govulncheck -db file://…): an offline copy.
VULNDB    ?= $(firstword $(wildcard $(CURDIR)/../shared/vulndb /work/shared/vulndb))
GOVULNCHECK := $(GO) tool -modfile=$(CURDIR)/test/tools/govulncheck/go.mod govulncheck
# Kubernetes minors with a module under test/k8s, newest first; make compat runs COMPAT_MINORS.
K8S_MINORS    := $(shell ls test/k8s | grep '^v1\.' | sort -t. -k2,2nr)
COMPAT_MINORS ?= $(K8S_MINORS)
COMPAT_TESTS  := ^(TestBootstrapClientAndServing|TestDaemonRenewsBothCertificates|TestRestartWhilePendingReusesCSR|TestDeniedClientCSR|TestDeniedServingCSR)$$

.PHONY: help prebuild-oldest build tpm-deps unit e2e e2e-deps carotation carotation-oldest node node-deps test demo bench fuzz vet tidy-check deps clean packages package-check sim sim-short sim-rotation vuln compat compat-oldest rules rules-deps fleet fleet-short fleet-approver fleet-overload fleet-attest fleet-carotation fleet-deps

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Download the Go modules of the product and the test modules
	$(GO) mod download
	cd test && $(GO) mod download
	cd test/tools/etcd && $(GO) mod download
	cd test/tools/govulncheck && $(GO) mod download
	cd test/tools/kubectl && $(GO) mod download
	cd test/tools/kubelet && $(GO) mod download
	cd test/tools/kubeadm && $(GO) mod download
	cd test/tools/capi && $(GO) mod download
	cd packaging/tools && $(GO) mod download

build: ## Build bin/certagent (the node agent) and bin/certagent-cluster (the attestation service and the serving CSR approver); the node binary must not link the cluster side or Prometheus's client
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/certagent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(CLUSTER_LDFLAGS)' -o $(CLUSTER_BIN) ./cmd/certagent-cluster
	@! $(GO) list -deps ./cmd/certagent | grep -E '^github.com/certagent/certagent/cluster/|^github.com/prometheus/client_golang' || { echo "cmd/certagent links the cluster side or client_golang"; exit 1; }

vet: ## go vet and gofmt over every module; the test module's non-test code must build on its own (govulncheck loads it so)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags failpoints ./...
	cd test && $(GO) vet ./...
	cd test/tools/capi && $(GO) vet ./...
	cd test && $(GO) build ./...

tidy-check: ## Fail if go.mod/go.sum are not tidy
	$(GO) mod tidy && git diff --exit-code go.mod go.sum
	cd test && $(GO) mod tidy && git diff --exit-code go.mod go.sum
	cd packaging/tools && $(GO) mod tidy && git diff --exit-code go.mod go.sum
	cd test/tools/govulncheck && $(GO) mod tidy && git diff --exit-code go.mod go.sum
	cd test/tools/kubectl && $(GO) mod tidy && git diff --exit-code go.mod go.sum
	cd test/tools/kubelet && $(GO) mod tidy && git diff --exit-code go.mod go.sum
	cd test/tools/kubeadm && $(GO) mod tidy && git diff --exit-code go.mod go.sum
	cd test/tools/capi && $(GO) mod tidy && git diff --exit-code go.mod go.sum

vuln: ## govulncheck (pinned in test/tools/govulncheck) against the offline database VULNDB: none reachable in the product or nfpm; the test module's findings reported
	@test -f "$(VULNDB)/index/db.json" || { echo "no vulnerability database at '$(VULNDB)': set VULNDB to a copy of the Go vulnerability database (v1 layout)"; exit 1; }
	@echo "govulncheck against $(VULNDB) (snapshot of $$(sed -n 's/.*"modified":"\([0-9-]*\)T.*/\1/p' $(VULNDB)/index/db.json))"
	$(GOVULNCHECK) -db file://$(VULNDB) ./...
	cd packaging/tools && $(GOVULNCHECK) -db file://$(VULNDB) github.com/goreleaser/nfpm/v2/cmd/nfpm
	@echo "test module (reported, not gating):"; cd test && $(GOVULNCHECK) -db file://$(VULNDB) ./... | grep -E '^(Vulnerability #|Your code|No vulnerabilities|  [A-Z])' || true

tpm-deps: ## Install (apt-get, as root) the software TPM the attestation tests run: swtpm, swtpm-tools (swtpm_setup, swtpm_localca), tpm2-tools
	@command -v swtpm >/dev/null && command -v swtpm_setup >/dev/null && command -v swtpm_localca >/dev/null && command -v tpm2_nvread >/dev/null || { echo "installing swtpm, swtpm-tools, tpm2-tools"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends swtpm swtpm-tools tpm2-tools; }

unit: tpm-deps ## Unit tests with the race detector (the attestation tests with a real software TPM each)
	$(GO) test -race -count=1 ./...

sim: ## Simulate SIM_SEEDS nodes (default 1000) for a year each against a faulty control plane; SEED=n replays one with its log
	@if [ -n "$(SEED)" ]; then \
		GOGC=400 $(GO) test -tags failpoints -count=1 -run '^TestSim$$' ./internal/sim/ -sim.seed=$(SEED) -sim.years=$(SIM_YEARS) $(SIM_ARGS) -sim.debug -v; \
	else \
		$(GO) test -tags failpoints -c -o bin/sim.test ./internal/sim/ || exit 1; rm -f bin/sim.report; \
		( GOGC=400 GOMAXPROCS=1 bin/sim.test -test.run '^TestSim$$' -sim.seeds=$(SIM_SEEDS) -sim.first=$(SIM_FIRST) -sim.years=$(SIM_YEARS) -sim.shard=0/2 -sim.report=bin/sim.report $(SIM_ARGS) > bin/sim-0.log 2>&1; echo $$? > bin/sim-0.rc ) & \
		( GOGC=400 GOMAXPROCS=1 bin/sim.test -test.run '^TestSim$$' -sim.seeds=$(SIM_SEEDS) -sim.first=$(SIM_FIRST) -sim.years=$(SIM_YEARS) -sim.shard=1/2 -sim.report=bin/sim.report $(SIM_ARGS) > bin/sim-1.log 2>&1; echo $$? > bin/sim-1.rc ) & \
		wait; cat bin/sim.report; grep -h -A30 -- '--- FAIL' bin/sim-0.log bin/sim-1.log | head -80; \
		test "$$(cat bin/sim-0.rc bin/sim-1.rc)" = "$$(printf '0\n0')"; \
	fi

rules-deps: ## Install (apt-get, as root) promtool and prometheus for make rules: Debian's prometheus package
	@test -x /usr/bin/promtool -a -x /usr/bin/prometheus || { echo "installing prometheus (for promtool)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

rules: rules-deps ## promtool check/test the shipped alert rules, check the scrape example, validate the Grafana dashboard
	cd test && $(GO) test -count=1 ./packaging/

e2e-deps: rules-deps ## Install (apt-get, as root) what the end-to-end suite needs: strace for the power-loss check, prometheus for the operator's view, containerd, runc and the CNI plugins for the kubelet
	@command -v strace >/dev/null || { echo "installing strace"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends strace; }
	@command -v containerd >/dev/null && command -v runc >/dev/null && test -x /usr/lib/cni/bridge || { echo "installing containerd, runc, containernetworking-plugins"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd runc containernetworking-plugins; }

e2e: build e2e-deps tpm-deps ## End-to-end tests against a real kube-apiserver, controller-manager and etcd, the real kubelet on containerd, the attestation service with a software TPM per node, the serving CSR approver, and a cluster CA rotation under the real kubelet (built and cached on first use; as root)
	cd test && CERTAGENT_BIN=$(CURDIR)/$(BIN) CERTAGENT_CLUSTER_BIN=$(CURDIR)/$(CLUSTER_BIN) $(GO) test $(E2E_FLAGS) ./controlplane/ ./noderuntime/ ./kubelettest/ ./unitfile/ ./e2e/ ./attestation/ ./approver/ ./carotation/

carotation: build e2e-deps ## Only the cluster CA rotation of make e2e: five phases on a control plane of its own under certagent and the real kubelet (CERTAGENT_CAROT_PHASE_GAP=30s between phases; CERTAGENT_CAROT_NODE=off logs the node side's failures instead of failing; as root)
	cd test && CERTAGENT_BIN=$(CURDIR)/$(BIN) $(GO) test $(E2E_FLAGS) -v -run TestCARotation ./carotation/

test: prebuild-oldest deps vet tidy-check vuln rules unit sim-short sim-rotation e2e compat-oldest carotation-oldest fleet-short package-check node ## Every test suite (what CI runs; as root: the package checks and the node suite need it)

compat: build e2e-deps ## The e2e core against every Kubernetes minor under test/k8s (COMPAT_MINORS="v1.33 v1.30" for some); table in bin/compat.md
	@mkdir -p bin; rm -f bin/compat.md; fail=0; for v in $(COMPAT_MINORS); do \
		start=$$(date +%s); echo "== $$v: building (first run only) and running the e2e core"; \
		if (cd test && CERTAGENT_K8S=$$v CERTAGENT_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 40m -v -run '$(COMPAT_TESTS)' ./e2e/ > $(CURDIR)/bin/compat-$$v.log 2>&1); then r=pass; else r=FAIL; fail=1; fi; \
		echo "| $$(grep -oE 'k8s.io/kubernetes v[0-9.]+' test/k8s/$$v/go.mod | head -1 | cut -d' ' -f2) | $$r | $$(grep -c '^--- PASS' bin/compat-$$v.log) passed, $$(grep -c '^--- FAIL' bin/compat-$$v.log) failed | $$(( $$(date +%s) - start )) s |" | tee -a bin/compat.md; \
		[ $$r = pass ] || grep -B2 -A20 -- '--- FAIL\|^FAIL\|e2e: building' bin/compat-$$v.log | head -60; \
	done; echo; echo "| Kubernetes | e2e core | tests | time (with a first build) |"; echo "|---|---|---|---|"; cat bin/compat.md; exit $$fail

prebuild-oldest: ## make test's first step (it stops when make does): start building the oldest minor's control plane and kubelet in the background at the lowest CPU priority (test/cmd/prebuild; make test starts it first, compat-oldest and carotation-oldest wait for it on the cache's lock); log in bin/prebuild-oldest.log
	@mkdir -p bin; echo "building the $(lastword $(K8S_MINORS)) control plane and kubelet in the background, niced (first run only; bin/prebuild-oldest.log)"; \
	make_pid=$$PPID; (cd test && nice -n 19 $(GO) build -o ../bin/prebuild ./cmd/prebuild && exec ../bin/prebuild -minor $(lastword $(K8S_MINORS)) -kubelet -while-pid $$make_pid) > bin/prebuild-oldest.log 2>&1 < /dev/null &

compat-oldest: ## make compat for the oldest minor only (make test runs it; make e2e covers the newest)
	$(MAKE) --no-print-directory compat COMPAT_MINORS=$(lastword $(K8S_MINORS))

carotation-oldest: build e2e-deps ## make carotation against the oldest minor under test/k8s, with its kubelet (test/tools/kubelet-<minor>) restarted by certagent's postTrust hook and, for its serving certificate, postRenew (make test runs it; as root)
	cd test && CERTAGENT_K8S=$(lastword $(K8S_MINORS)) CERTAGENT_BIN=$(CURDIR)/$(BIN) $(GO) test $(E2E_FLAGS) -v -run TestCARotation ./carotation/

sim-short: ## The simulation at 100 seeds (make test runs it; make sim runs 1000)
	$(MAKE) --no-print-directory sim SIM_SEEDS=100

sim-rotation: ## The simulation with a CA rotation in every seed (SIM_ROTATION_SEEDS, default 200; make test runs it; SEED=n replays one)
	$(MAKE) --no-print-directory sim SIM_SEEDS=$(SIM_ROTATION_SEEDS) SIM_ARGS=-sim.rotate

demo: build ## Start a local control plane, bootstrap a node with certagent, show its status, clean up
	cd test && $(GO) run ./cmd/demo -certagent $(CURDIR)/$(BIN)

fuzz: ## Run each fuzz target for FUZZTIME (default 30s); seed corpora live in */testdata/fuzz
	set -e; for t in agent/config:FuzzConfig bootstrap/kubeconfig:FuzzBootstrapKubeconfig bootstrap:FuzzCertificateBundle bootstrap:FuzzCSRStatus; do \
		$(GO) test ./$${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME); \
	done

fleet-deps: ## Install (apt-get, as root) gnuplot for make fleet's plot
	@command -v gnuplot >/dev/null || { echo "installing gnuplot-nox"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox; }

# $(call fleet-run,N,WAVE,OUT,ROUNDS): the fleet suite into OUT (fleet.md, plot data, test log, fleet.png).
define fleet-run
	@rm -rf $(3); mkdir -p $(3)
	set -o pipefail; cd test && CERTAGENT_BIN=$(CURDIR)/$(BIN) CERTAGENT_CLUSTER_BIN=$(CURDIR)/$(CLUSTER_BIN) FLEET_N=$(1) FLEET_WAVE=$(2) FLEET_OUT=$(3) FLEET_ROUNDS=$(4) \
		FLEET_APPROVER=1 FLEET_APPROVER_N=$(1) $(GO) test -count=1 -timeout 90m -v ./fleet/ -args -fleet.qps=$(FLEET_QPS) 2>&1 | tee $(3)/test.log
	gnuplot -e "dir='$(3)'; n=$(1); qps=$(FLEET_QPS); out='$(3)/fleet.png'" test/fleet/fleet.gp
endef

fleet: build fleet-deps ## FLEET_N (500) real certagent daemons on one control plane: scale-up vs the kubelet's bootstrap (FLEET_ROUNDS (3) alternating rounds), an API server outage, renewal waves, overload with and without packaging/flowcontrol, the serving CSR approvers compared (the test's, certagent-cluster approve); bin/fleet/fleet.md, docs/fleet.png (27 min at 500; as root)
	$(call fleet-run,$(FLEET_N),1,$(CURDIR)/bin/fleet,$(FLEET_ROUNDS))
	cp bin/fleet/fleet.png docs/fleet.png
	@cat bin/fleet/fleet.md

fleet-short: build fleet-deps ## make fleet at FLEET_SHORT_N (20) nodes without the renewal waves (make test runs it); bin/fleet-short/
	$(call fleet-run,$(FLEET_SHORT_N),0,$(CURDIR)/bin/fleet-short,1)
	@cat bin/fleet-short/fleet.md

fleet-approver: build ## Only the fleet's serving-approver comparison (make fleet runs it at FLEET_N): FLEET_APPROVER_N (100) certagent daemons, each in a network namespace with its Node made first, approved by the test's ad-hoc approver, then by certagent-cluster approve (shipped RBAC, its service account) with its client limit as shipped and raised to FLEET_QPS, and the anchors whose binaries FLEET_KUBELET_CSR_APPROVER / FLEET_KUBELET_SERVING_CERT_APPROVER name (docs/approver.md); bin/fleet-approver/fleet.md (as root)
	@rm -rf $(CURDIR)/bin/fleet-approver; mkdir -p $(CURDIR)/bin/fleet-approver
	set -o pipefail; cd test && CERTAGENT_BIN=$(CURDIR)/$(BIN) CERTAGENT_CLUSTER_BIN=$(CURDIR)/$(CLUSTER_BIN) FLEET_N=$(FLEET_APPROVER_N) FLEET_APPROVER=1 FLEET_OUT=$(CURDIR)/bin/fleet-approver \
		$(GO) test -count=1 -timeout 30m -v -run '^TestServingApprovers$$' ./fleet/ -args -fleet.qps=$(FLEET_QPS) 2>&1 | tee $(CURDIR)/bin/fleet-approver/test.log
	@grep -q -- '--- PASS: TestServingApprovers' $(CURDIR)/bin/fleet-approver/test.log || { echo 'TestServingApprovers did not run and pass'; exit 1; }
	@cat bin/fleet-approver/fleet.md

fleet-overload: build ## Only the fleet's overload comparison: FLEET_OVERLOAD_N (200) daemons against an API server lowered to 20 + 10 concurrent requests, with and without packaging/flowcontrol, an ordinary user's latency meanwhile; bin/fleet-overload/fleet.md
	@rm -rf $(CURDIR)/bin/fleet-overload; mkdir -p $(CURDIR)/bin/fleet-overload
	set -o pipefail; cd test && CERTAGENT_BIN=$(CURDIR)/$(BIN) FLEET_N=$(FLEET_OVERLOAD_N) FLEET_OUT=$(CURDIR)/bin/fleet-overload \
		$(GO) test -count=1 -timeout 60m -v -run '^TestOverload$$' ./fleet/ -args -fleet.qps=$(FLEET_QPS) $(FLEET_OVERLOAD_ARGS) 2>&1 | tee $(CURDIR)/bin/fleet-overload/test.log
	@cat bin/fleet-overload/fleet.md

fleet-carotation: build ## FLEET_CAROT_N (100) certagent nodes with trust.follow through a cluster CA rotation's five phases (docs/ca-rotation.md): how long each phase took to reach every node, the re-issue CSRs and their peak per 10 s with trust.reissueSpread FLEET_CAROT_SPREAD (2m); bin/fleet-carotation/carotation.md (as root)
	@rm -rf $(CURDIR)/bin/fleet-carotation; mkdir -p $(CURDIR)/bin/fleet-carotation
	set -o pipefail; cd test && CERTAGENT_BIN=$(CURDIR)/$(BIN) FLEET_N=$(FLEET_CAROT_N) FLEET_CAROT=1 FLEET_OUT=$(CURDIR)/bin/fleet-carotation \
		$(GO) test -count=1 -timeout 60m -v -run '^TestCARotationFleet$$' ./fleet/ -args -fleet.qps=$(FLEET_QPS) -fleet.reissue-spread=$(FLEET_CAROT_SPREAD) 2>&1 | tee $(CURDIR)/bin/fleet-carotation/test.log
	@grep -q -- '--- PASS: TestCARotationFleet' $(CURDIR)/bin/fleet-carotation/test.log || { echo 'TestCARotationFleet did not run and pass'; exit 1; }
	@cat bin/fleet-carotation/carotation.md

fleet-attest: build tpm-deps ## FLEET_ATTEST_N (100) nodes, each with its own swtpm, join at once by TPM attestation (certagent-cluster serve, shipped RBAC), then as many by bootstrap token, on one control plane: time to kubelet.conf, API requests per node by identity, CSRs, CPU; bin/fleet-attest/fleet.md (as root)
	@rm -rf $(CURDIR)/bin/fleet-attest; mkdir -p $(CURDIR)/bin/fleet-attest
	set -o pipefail; cd test && CERTAGENT_BIN=$(CURDIR)/$(BIN) CERTAGENT_CLUSTER_BIN=$(CURDIR)/$(CLUSTER_BIN) FLEET_N=$(FLEET_ATTEST_N) FLEET_ATTEST=1 FLEET_OUT=$(CURDIR)/bin/fleet-attest \
		$(GO) test -count=1 -timeout 60m -v -run '^TestAttestationScaleUp$$' ./fleet/ -args -fleet.qps=$(FLEET_QPS) 2>&1 | tee $(CURDIR)/bin/fleet-attest/test.log
	@grep -q -- '--- PASS: TestAttestationScaleUp' $(CURDIR)/bin/fleet-attest/test.log || { echo 'TestAttestationScaleUp did not run and pass'; exit 1; }
	@cat bin/fleet-attest/fleet.md

bench: ## Benchmarks: certagent vs the kubelet's bootstrap (whole process, and traced phase by phase; BENCH_RUNS (20) alternating pairs, BENCH_PACE (300ms) apart), approval-to-disk latency, an idle daemon's memory (anonymous, PSS, USS, RSS) and CPU over BENCH_IDLE (3m)
	cd test && $(GO) test -run '^$$' -bench 'BenchmarkClientBootstrap$$' -benchtime $${BENCH_RUNS:-20}x -count=1 ./bench/
	cd test && $(GO) test -run '^$$' -bench 'BenchmarkClientBootstrapPhases$$' -benchtime $${BENCH_RUNS:-20}x -count=1 ./bench/
	cd test && $(GO) test -run '^$$' -bench BenchmarkApprovalToDisk -benchtime $${BENCH_RUNS:-20}x -count=1 ./bench/
	cd test && $(GO) test -run '^$$' -bench BenchmarkIdle -benchtime 1x -count=1 ./bench/

packages: ## $(DIST)/: .deb and .rpm for amd64 and arm64 (nfpm), version from git
	@mkdir -p $(DIST)/build
	rm -f $(DIST)/*.deb $(DIST)/*.rpm
	gzip -9n -c packaging/certagent.1 > $(DIST)/build/certagent.1.gz
	set -e; for arch in $(ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '-s -w -X github.com/certagent/certagent/agent.Version=$(VERSION)' -o $(DIST)/build/certagent-$$arch ./cmd/certagent; \
		sed -e 's|$${VERSION}|$(VERSION)|; s|$${ARCH}|'$$arch'|; s|$${BIN}|$(DIST)/build/certagent-'$$arch'|; s|$${MAN}|$(DIST)/build/certagent.1.gz|' \
			packaging/nfpm.yaml > $(DIST)/build/nfpm-$$arch.yaml; \
		for fmt in deb rpm; do \
			$(NFPM) package --config $(DIST)/build/nfpm-$$arch.yaml --packager $$fmt --target $(DIST)/; \
		done; \
	done
	@ls -l $(DIST)/*.deb $(DIST)/*.rpm

package-check: node-deps packages ## lintian and rpmlint (no errors), golden file lists, rpm --root install
	packaging/check.sh $(DIST)

node-deps: ## Install (apt-get, as root) what the package checks and the node suite need
	@missing=""; for c in systemd-nspawn:systemd-container debootstrap:debootstrap lintian:lintian rpm:rpm rpmlint:rpmlint nsenter:util-linux; do \
		command -v $${c%%:*} >/dev/null || missing="$$missing $${c#*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

node: node-deps tpm-deps packages ## Node suite (root): boot Debian with systemd in systemd-nspawn, cloud-init installs the .deb (with a bootstrap token, and with TPM attestation against a software TPM and the cluster-side service); the .rpm with its scriptlets; the real kubeadm join, reset and the Cluster API example's cloud-init on such nodes (kubeadm built once)
	$(MAKE) --no-print-directory packages ARCHES=amd64 VERSION='$(VERSION)+upgrade' DIST=$(DIST)/newer
	CGO_ENABLED=0 $(GO) build -tags failpoints -trimpath -o $(DIST)/build/certagent-failpoints ./cmd/certagent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(CLUSTER_LDFLAGS)' -o $(DIST)/build/certagent-cluster ./cmd/certagent-cluster
	cd test && CERTAGENT_DEB='$(CURDIR)/$(DIST)/certagent_*_amd64.deb' CERTAGENT_DEB_NEWER='$(CURDIR)/$(DIST)/newer/certagent_*_amd64.deb' \
		CERTAGENT_RPM='$(CURDIR)/$(DIST)/certagent-*.x86_64.rpm' CERTAGENT_RPM_NEWER='$(CURDIR)/$(DIST)/newer/certagent-*.x86_64.rpm' \
		CERTAGENT_FAILPOINT_BIN='$(CURDIR)/$(DIST)/build/certagent-failpoints' CERTAGENT_CLUSTER_BIN='$(CURDIR)/$(DIST)/build/certagent-cluster' \
		$(GO) test -count=1 -timeout 30m -v ./node/

clean: ## Remove build output (not the control-plane cache in ~/.cache/certagent-test)
	rm -rf bin dist
