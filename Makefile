# certagent — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
# Package version: the last v* tag (0.1.0 if none) + commits since the first commit + hash, so every
# commit's package sorts above the previous one.
VERSION   ?= $(shell v=$$(git describe --tags --match 'v*' --abbrev=0 2>/dev/null | sed 's/^v//'); echo "$${v:-0.1.0}+git$$(git rev-list --count HEAD 2>/dev/null || echo 0).$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
ARCHES    ?= amd64 arm64
NFPM      := $(GO) tool -modfile=$(CURDIR)/packaging/tools/go.mod nfpm
LDFLAGS   := -s -w -X github.com/certagent/certagent/agent.Version=$(VERSION)
BIN       := bin/certagent
E2E_FLAGS ?= -count=1 -timeout 30m

.PHONY: help build unit e2e node test demo bench vet tidy-check deps clean packages package-check

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Download the Go modules of the product and the test modules
	$(GO) mod download
	cd test && $(GO) mod download
	cd test/tools/etcd && $(GO) mod download
	cd packaging/tools && $(GO) mod download

build: ## Build bin/certagent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/certagent

vet: ## go vet and gofmt over every module
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	cd test && $(GO) vet ./...

tidy-check: ## Fail if go.mod/go.sum are not tidy
	$(GO) mod tidy && git diff --exit-code go.mod go.sum
	cd test && $(GO) mod tidy && git diff --exit-code go.mod go.sum

unit: ## Unit tests with the race detector
	$(GO) test -race -count=1 ./...

e2e: build ## End-to-end tests against a real kube-apiserver, controller-manager and etcd (built and cached on first use)
	cd test && CERTAGENT_BIN=$(CURDIR)/$(BIN) $(GO) test $(E2E_FLAGS) ./controlplane/ ./e2e/

test: deps vet tidy-check unit e2e ## Every test suite (what CI runs)

demo: build ## Start a local control plane, bootstrap a node with certagent, show its status, clean up
	cd test && $(GO) run ./cmd/demo -certagent $(CURDIR)/$(BIN)

bench: ## Benchmarks: certagent vs the kubelet's bootstrap, approval-to-disk latency, idle cost over a minute
	cd test && $(GO) test -run '^$$' -bench BenchmarkClientBootstrap -benchtime $${BENCH_RUNS:-20}x -count=1 ./bench/
	cd test && $(GO) test -run '^$$' -bench BenchmarkApprovalToDisk -benchtime $${BENCH_RUNS:-20}x -count=1 ./bench/
	cd test && $(GO) test -run '^$$' -bench BenchmarkIdle -benchtime 1x -count=1 ./bench/

packages: ## dist/: .deb and .rpm for amd64 and arm64 (nfpm), version from git
	@mkdir -p dist/build
	set -e; for arch in $(ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/build/certagent-$$arch ./cmd/certagent; \
		sed -e 's|$${VERSION}|$(VERSION)|; s|$${ARCH}|'$$arch'|; s|$${BIN}|dist/build/certagent-'$$arch'|' \
			packaging/nfpm.yaml > dist/build/nfpm-$$arch.yaml; \
		for fmt in deb rpm; do \
			$(NFPM) package --config dist/build/nfpm-$$arch.yaml --packager $$fmt --target dist/; \
		done; \
	done
	@ls -l dist/*.deb dist/*.rpm

package-check: packages ## lintian and rpmlint (no errors) and file lists against packaging/testdata golden files
	packaging/check.sh dist

clean: ## Remove build output (not the control-plane cache in ~/.cache/certagent-test)
	rm -rf bin dist
