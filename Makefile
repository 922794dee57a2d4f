# certagent — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/certagent/certagent/agent.Version=$(VERSION)
BIN       := bin/certagent
E2E_FLAGS ?= -count=1 -timeout 30m

.PHONY: help build unit e2e test demo bench vet tidy-check deps clean

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Download the Go modules of the product and the test modules
	$(GO) mod download
	cd test && $(GO) mod download
	cd test/tools/etcd && $(GO) mod download

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

clean: ## Remove build output (not the control-plane cache in ~/.cache/certagent-test)
	rm -rf bin dist
