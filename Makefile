# spot-rebalancer. `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/spot-rebalancer/spot-rebalancer/internal/version.Version=$(VERSION) \
	-X github.com/spot-rebalancer/spot-rebalancer/internal/version.Commit=$(COMMIT)

# Packages that need no cluster; everything under tests/ runs against one.
UNIT_PKGS = $(shell go list ./... | grep -v /tests/)
E2E_PKGS  = ./tests/...

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/spot-rebalancer
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/spot-rebalancer ./cmd/spot-rebalancer

.PHONY: plugin
plugin: ## Build the kubectl plugin bin/kubectl-spot_rebalancer (`kubectl spot-rebalancer plan`)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/kubectl-spot_rebalancer ./cmd/spot-rebalancer

.PHONY: tools
tools: ## Build the local test cluster's binaries, Karpenter included, into bin/ (once; about 25 min cold)
	./hack/tools.sh

# The Spot signal the demos give their node: rebalance (a rebalance
# recommendation) or interruption (a two-minute interruption notice), e.g.
# `make demo-karpenter SIGNAL=interruption`.
SIGNAL ?= rebalance

.PHONY: demo
demo: tools build ## Start a local cluster and watch a Spot node hand off without a dip (Ctrl-C tears it down; SIGNAL=interruption for a notice)
	go run ./hack/demo --signal $(SIGNAL)

.PHONY: demo-karpenter
demo-karpenter: tools build ## The same hand-off on a Karpenter NodePool: the real Karpenter launches for the reservations and surges (SIGNAL=interruption for a notice)
	go run ./hack/demo --karpenter --signal $(SIGNAL)

.PHONY: manifests
manifests: ## Render deploy/spot-rebalancer.yaml from the Helm chart (a test fails when it is stale)
	./hack/tools.sh helm
	./hack/manifests.sh

# The image's name and tag, as the release publishes it and the chart's
# default names it: the tag is the chart's appVersion (the version without
# its v).
REGISTRY ?= ghcr.io/spot-rebalancer
IMAGE ?= $(REGISTRY)/spot-rebalancer:$(patsubst v%,%,$(VERSION))

.PHONY: image
image: ## Build the multi-arch image $(IMAGE) as an OCI layout in dist/image, no Docker needed
	go run ./hack/release --image-only --version $(patsubst v%,%,$(VERSION)) --registry $(REGISTRY)

.PHONY: docker-image
docker-image: ## Build the image for this machine's platform with Docker (Dockerfile), named $(IMAGE)
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

.PHONY: release-dry-run
release-dry-run: ## Rehearse a release: image, chart, plan binaries, pushed to a registry on 127.0.0.1 and checked
	./hack/tools.sh helm
	go run ./hack/release --dry-run

.PHONY: test
test: lint tools test-unit test-alerts e2e ## Run every test: lint, unit, alert rules, and end-to-end on a local cluster

.PHONY: test-unit
test-unit: ## Run the tests that need no cluster
	go test -race -count=1 $(UNIT_PKGS)

ALERTS = deploy/chart/spot-rebalancer/files/alerts.yaml

.PHONY: test-alerts
test-alerts: ## Check the alerting rules and run their unit tests with the real promtool
	./hack/tools.sh promtool
	bin/promtool check rules $(ALERTS)
	bin/promtool test rules deploy/monitoring/alerts_test.yaml

.PHONY: e2e
e2e: tools ## Run the end-to-end tests on a local cluster
	go test -count=1 -timeout 30m $(E2E_PKGS)

# Fuzz targets as package:Target; FUZZTIME each (CI uses the default). A
# count, not a duration: Go 1.26's fuzz coordinator can fail a run that ends
# on a -fuzztime deadline with "context deadline exceeded" and no failing
# input (golang/go#75804, fixed in Go 1.27); a count has no deadline.
FUZZ_TARGETS = ./agent:FuzzPoll ./config:FuzzDecode ./webhook:FuzzMutatePod ./webhook:FuzzHandleAdmissionReview ./sources/queue:FuzzHandleMessage ./rebalancer/planner:FuzzPlanInvariants
FUZZTIME ?= 20000x

.PHONY: fuzz
fuzz: ## Run every fuzz target FUZZTIME each (default 20000 inputs, 10-50 s)
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz: $$name in $$pkg for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

.PHONY: bench
bench: bench-plan bench-webhook bench-handoff ## Run every benchmark (figures in docs/benchmarks.md)

.PHONY: bench-webhook
bench-webhook: tools build ## Webhook under load against controller-runtime's floor, on a local cluster
	go run ./tests/bench/webhook

.PHONY: bench-handoff
bench-handoff: tools ## The hand-off against draining at once, and an interruption notice on Karpenter, on a local cluster; draws docs/img/handoff*.png
	go run ./tests/bench/handoff --json docs/img/handoff.json

.PHONY: bench-storm
bench-storm: tools ## Interruption notices on 10 full Karpenter nodes at once: spot-rebalancer against Karpenter's own handling (about 10 minutes)
	go run ./tests/bench/handoff --scenario karpenter-storm --storm-nodes 10 --launch-delay 30s --json docs/img/storm-karpenter.json

.PHONY: bench-plan
bench-plan: ## Planner benchmarks: 500 nodes/10k pods and 5,000 nodes/100k pods
	go test -run '^$$' -bench . -benchmem -benchtime 20x ./rebalancer/planner/

.PHONY: soak
soak: tools build ## 40 Spot nodes, ~1,500 pods with PDBs, all at risk at once (about 15 minutes; figures in docs/benchmarks.md)
	go run ./tests/bench/soak

.PHONY: soak-itn
soak-itn: tools build ## The soak's fleet gets interruption notices at once (2-minute deadline): the controller, then kubectl drain of every node, compared (about 15 minutes)
	rc=0; \
	go run ./tests/bench/soak --signal interruption --replacement-every 1.5s || rc=1; \
	go run ./tests/bench/soak --signal interruption --replacement-every 1.5s --drainer kubectl-drain || rc=1; \
	exit $$rc

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

.PHONY: clean
clean: ## Remove built binaries (the cluster tools too)
	rm -rf bin
