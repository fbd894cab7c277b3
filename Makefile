# berth — see README.md. Two commands matter:
#   make demo   provision what is missing, then converge the sample apps
#   make test   provision what is missing, then run every test (the
#               single-host tests, then the cluster tests: make test-cluster)
SHELL := /bin/bash
GO ?= go
# Go lives in /usr/local/go on these machines, and `go install` puts
# staticcheck in $(go env GOPATH)/bin: both on PATH, whatever the caller's.
# ($(shell) does not see exported variables, hence the explicit PATH.)
GOPATH_BIN := $(shell PATH="/usr/local/go/bin:$$PATH" $(GO) env GOPATH)/bin
export PATH := /usr/local/go/bin:$(GOPATH_BIN):$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
# Integration and end-to-end tests share one LXD; running their packages one
# at a time keeps 2 cores from timing out health checks.
TEST_FLAGS ?= -count=1 -timeout 25m -p 1

.PHONY: all build test unit testenv lint bench demo demo-clean clean testenv-down tools screenshot testenv-cluster test-cluster testenv-cluster-down

all: build

build:
	$(GO) build -buildvcs=false -ldflags "$(LDFLAGS)" -o bin/berth ./cmd/berth

testenv:
	./testenv/testenv.sh up

# Unit tests need nothing but Go.
unit:
	$(GO) test -count=1 ./...  -short

# Tests named TestCluster* need the 3-member cluster (testenv.sh cluster):
# they run apart, with the cluster's environment (BERTH_LXD and the rest)
# exported, which must not reach the single-host tests.
CLUSTER_TESTS := ^TestCluster
define run_cluster_tests
	eval "$$(./testenv/testenv.sh cluster env)" && \
		BERTH_REQUIRE_CLUSTER=1 $(GO) test $(TEST_FLAGS) -race -run '$(CLUSTER_TESTS)' ./...
endef

test: testenv testenv-cluster lint
	BERTH_REQUIRE_LXD=1 $(GO) test $(TEST_FLAGS) -race -skip '$(CLUSTER_TESTS)' ./...
	$(run_cluster_tests)

# The cluster's berth-test profile reaches the single-host environment's
# registry, and its images come from the same cache.
testenv-cluster: testenv
	./testenv/testenv.sh cluster up

test-cluster: testenv-cluster
	$(run_cluster_tests)

testenv-cluster-down:
	./testenv/testenv.sh cluster down

lint: tools
	@files=$$(git ls-files '*.go'); fmt=$$([ -z "$$files" ] || gofmt -l $$files); if [ -n "$$fmt" ]; then echo "gofmt needed:"; echo "$$fmt"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...
	$(GO) mod tidy -diff

tools:
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# Benchmarks named BenchmarkCluster* need the cluster (like TestCluster*).
bench: testenv testenv-cluster
	BERTH_REQUIRE_LXD=1 $(GO) test -run '^$$' -bench . -skip '^BenchmarkCluster' -benchmem -count 1 -p 1 -timeout 30m ./...
	eval "$$(./testenv/testenv.sh cluster env)" && \
		BERTH_REQUIRE_CLUSTER=1 $(GO) test -run '^$$' -bench '^BenchmarkCluster' -benchtime 1x -count 1 -p 1 -timeout 60m ./cmd/berth

# docs/status-page.png: the status page of a daemon on real LXD, taken by
# the browser test in headless Chromium right after a rollout.
screenshot: testenv
	BERTH_REQUIRE_LXD=1 BERTH_SCREENSHOT=$(CURDIR)/docs/status-page.png $(GO) test -count=1 -timeout 15m -run '^TestStatusPageInBrowser$$' ./cmd/berth

demo: testenv build
	./samples/demo.sh

demo-clean: build
	./samples/demo-clean.sh

testenv-down:
	./testenv/testenv.sh down

clean:
	rm -rf bin
