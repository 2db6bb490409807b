# Holdfast. `make test` is the one test command; CI runs exactly it.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

TOOLS_BIN ?= $(CURDIR)/bin/tools
CONTROLLER_GEN := $(TOOLS_BIN)/controller-gen
GO_TEST_FLAGS ?= -count=1 -timeout=30m
# Generated paths: `make test` fails when regenerating them changes anything.
GENERATED := apis config/crd config/rbac config/webhook config/grafana

export KUBEBUILDER_ASSETS := $(TOOLS_BIN)
export HOLDFAST_TOOLS_BIN := $(TOOLS_BIN)

.PHONY: all
all: build

##@ Build

.PHONY: build
build: ## Build the holdfast binary into bin/holdfast (static, as in the image).
	CGO_ENABLED=0 go build -trimpath -o bin/holdfast .

.PHONY: tools
tools: ## Build the test toolchain (cached outside the repo by version; 20-30 min cold, seconds warm).
	bash test/tools/build.sh

$(CONTROLLER_GEN):
	bash test/tools/build.sh controller-gen

# The image (test/images): IMAGE_PLATFORMS to build, IMAGE_VERSION for the tag and the
# version label (default `git describe --tags --always --dirty`), CA_CERTIFICATES the
# directory of PEM roots (Debian's ca-certificates package) that become its CA bundle.
IMAGE_ARCHIVE ?= bin/holdfast-image.tar
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64
IMAGE_VERSION ?=
CA_CERTIFICATES ?= /usr/share/ca-certificates/mozilla

.PHONY: image
image: ## Build the Holdfast image (holdfast + restic, CA roots, user 65532) for linux/amd64 and linux/arm64 as one OCI archive: bin/holdfast-image.tar.
	@if [ ! -d "$(CA_CERTIFICATES)" ] && [ "$(CA_CERTIFICATES)" = /usr/share/ca-certificates/mozilla ]; then \
		echo "image: installing Debian's ca-certificates package: the image's CA roots"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ca-certificates; \
	fi
	@for p in $$(echo "$(IMAGE_PLATFORMS)" | tr , ' '); do bash test/tools/build.sh --platform "$$p" restic; done
	go run ./test/images/cmd/holdfast-image -out $(IMAGE_ARCHIVE) -platforms $(IMAGE_PLATFORMS) \
		-tools-bin $(TOOLS_BIN) -ca-certificates $(CA_CERTIFICATES) $(if $(IMAGE_VERSION),-version $(IMAGE_VERSION))

##@ Generated code

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy functions and the Grafana dashboard (config/grafana).
	$(CONTROLLER_GEN) object paths=./apis/...
	go generate ./internal/dashboard

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs, RBAC roles and the webhook configuration.
	$(CONTROLLER_GEN) crd paths=./apis/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=holdfast-manager paths=./controllers/... output:rbac:artifacts:config=config/rbac/manager
	$(CONTROLLER_GEN) rbac:roleName=holdfast-agent paths=./agent/... output:rbac:artifacts:config=config/rbac/agent
	$(CONTROLLER_GEN) webhook paths=./controllers/... output:webhook:artifacts:config=config/webhook

.PHONY: verify-generated
verify-generated: ## Fail when generated code is stale (regenerates it, so you can commit the result).
	@before=$$({ find $(GENERATED) -type f 2>/dev/null || true; } | sort | xargs -r sha256sum); \
	$(MAKE) --no-print-directory generate manifests >/dev/null; \
	after=$$({ find $(GENERATED) -type f 2>/dev/null || true; } | sort | xargs -r sha256sum); \
	if [ "$$before" != "$$after" ]; then \
		diff <(echo "$$before") <(echo "$$after") || true; \
		echo "generated code was stale: 'make generate manifests' changed the files above; commit them"; \
		exit 1; \
	fi

##@ Local cluster (needs root; see test/cluster)

# The binaries the local cluster runs, built by test/tools/build.sh.
CLUSTER_TOOLS := etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl containerd containerd-shim-runc-v2 ctr restic
HOLDFAST_CLUSTER := bin/holdfast-cluster
# NODES=2 starts a second node (see test/cluster/README.md); unset, `up` takes
# $HOLDFAST_CLUSTER_NODES or 1.
NODES ?=

.PHONY: cluster-packages
cluster-packages: ## Install the Debian packages the cluster needs (runc, CNI plugins, iptables, conntrack, busybox-static); says what and why, skips installed ones.
	bash test/cluster/packages.sh

.PHONY: $(HOLDFAST_CLUSTER)
$(HOLDFAST_CLUSTER):
	go build -o $(HOLDFAST_CLUSTER) ./test/cluster/cmd/holdfast-cluster

.PHONY: cluster-up
cluster-up: cluster-packages $(HOLDFAST_CLUSTER) ## Start the cluster on 127.0.0.1, one node or NODES=2 (state in HOLDFAST_CLUSTER_DIR, default /var/lib/holdfast-cluster).
	bash test/tools/build.sh $(CLUSTER_TOOLS)
	$(HOLDFAST_CLUSTER) up $(if $(NODES),-nodes $(NODES))
	@echo "export KUBECONFIG=$$($(HOLDFAST_CLUSTER) kubeconfig)"

.PHONY: cluster-down
cluster-down: $(HOLDFAST_CLUSTER) ## Stop the cluster (every node); removes every process, mount, network device, iptables chain, cgroup and file it made.
	$(HOLDFAST_CLUSTER) down

.PHONY: cluster-images
cluster-images: $(HOLDFAST_CLUSTER) ## Rebuild the holdfast, busybox and pause images and import them into every node of the running cluster.
	$(HOLDFAST_CLUSTER) images

.PHONY: cluster-status
cluster-status: $(HOLDFAST_CLUSTER) ## Show the cluster's daemons, whether every node is Ready and the memory the cluster uses.
	$(HOLDFAST_CLUSTER) status

.PHONY: test-cluster
test-cluster: cluster-packages ## Only the cluster harness tests (a real cluster up and down, twice).
	bash test/tools/build.sh $(CLUSTER_TOOLS)
	go test $(GO_TEST_FLAGS) -v ./test/cluster/

.PHONY: test-e2e
test-e2e: cluster-packages ## Only the end-to-end stories: a real cluster, Holdfast installed with kubectl apply -k, backup and restore (a few minutes).
	bash test/tools/build.sh $(CLUSTER_TOOLS)
	go test $(GO_TEST_FLAGS) -v ./test/e2e/

.PHONY: test-e2e-multinode
test-e2e-multinode: cluster-packages ## Only the two-node stories: each agent serves its own node, work follows pods across nodes, a node without an agent (about 1.5 minutes; part of `make test`).
	bash test/tools/build.sh $(CLUSTER_TOOLS)
	go test $(GO_TEST_FLAGS) -v ./test/multinode/

##@ Demo (needs root)

KEEP ?=
STORAGE ?=
.PHONY: demo
demo: ## Build what is missing, start the local cluster, install Holdfast, back up a sample app, damage it, restore it, verify. KEEP=1 leaves the cluster up; STORAGE=minio backs up to MinIO.
	@echo "==> make demo: building the toolchain the local cluster needs (cached; ~25 min on the first run, seconds after)"
	$(MAKE) --no-print-directory tools
	@echo "==> make demo: installing the Debian packages the cluster needs (runc, CNI plugins, iptables, conntrack, busybox-static)"
	$(MAKE) --no-print-directory cluster-packages
	go run ./test/demo $(if $(KEEP),-keep) $(if $(STORAGE),-storage=$(STORAGE))

##@ Checks and tests

.PHONY: fmt-check
fmt-check: ## Fail when gofmt would change a file.
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## go vet the product module and the tools wrapper.
	go vet ./...

.PHONY: tidy-check
tidy-check: ## Fail when go.mod or go.sum is not what go mod tidy makes.
	@go mod tidy -diff || { echo "go.mod is not tidy: run go mod tidy and commit the result"; exit 1; }

.PHONY: test
test: tools cluster-packages verify-generated fmt-check vet tidy-check ## The one test command: tools, cluster packages, generated code, gofmt, vet, go.mod, every test.
	go test $(GO_TEST_FLAGS) ./...

.PHONY: test-alerts
test-alerts: ## Only the alerting rules and monitors of config/prometheus: promtool check and unit tests, strict decoding as the Prometheus Operator's types.
	bash test/tools/build.sh promtool
	go test $(GO_TEST_FLAGS) ./test/prometheus/

.PHONY: test-unit
test-unit: ## Only the tests that need no tools (quick feedback while editing).
	go test $(GO_TEST_FLAGS) -short ./...

##@ Benchmarks (not part of `make test`)

# BENCH_REPEAT runs of every measurement (the report gives the median); BENCH_SETS
# picks data sets; BENCH_SCALE shrinks them (0.01 for a smoke test), and name@scale
# gives one set a scale of its own. The defaults measure every target of
# docs/performance.md in one run: small, large and mixed at full scale, many
# (2,000,000 small files at scale 1) at 0.1 and db (one 10 GiB file, 0.1 % of its
# pages changed) at 0.4, which at scale 1 need about 60 GiB more disk and hours on
# 2 cores. Needs about 30 GiB free under BENCH_TMP and about 45 minutes on 2 cores.
# BENCH_DROP_CACHES=true empties the page cache before every measured run (needs root;
# see docs/performance.md for what it changes).
BENCH_REPEAT ?= 3
BENCH_SETS ?= small,large,mixed,many@0.1,db@0.4
BENCH_SCALE ?= 1
BENCH_TMP ?= /var/tmp
BENCH_OUT ?= docs/performance
BENCH_DROP_CACHES ?= false
# BENCH_RESTORE_DIR: where restored trees go, e.g. a tmpfs mounted for the run, so that
# restores of many files do not pay for inodes the bench freed minutes before (ext4
# without a journal; docs/performance.md "Restores against the faster CLI").
BENCH_RESTORE_DIR ?=

.PHONY: bench
bench: ## Data path beside the kopia and restic CLIs, then the policy controller and a metrics scrape at scale; writes docs/performance/.
	go run ./test/bench/cmd/holdfast-bench -repeat $(BENCH_REPEAT) -sets $(BENCH_SETS) -scale $(BENCH_SCALE) \
		-tools-bin $(TOOLS_BIN) -tmp $(BENCH_TMP) -restore-dir "$(BENCH_RESTORE_DIR)" -drop-caches=$(BENCH_DROP_CACHES) -out $(BENCH_OUT)
	go run ./test/bench/cmd/holdfast-bench -control-plane -out $(BENCH_OUT)
	$(MAKE) --no-print-directory bench-scrape
	$(MAKE) --no-print-directory bench-preview

.PHONY: bench-preview
bench-preview: ## One kubectl holdfast preview over 10,000 pods, without the API server; writes docs/performance/preview.txt.
	go test -short -run '^$$' -bench BenchmarkPreview -benchmem -count 3 ./cli/ >$(BENCH_TMP)/holdfast-bench-preview.out 2>&1 \
		|| { cat $(BENCH_TMP)/holdfast-bench-preview.out; exit 1; }
	grep -E '^(goos|goarch|cpu|Benchmark)' $(BENCH_TMP)/holdfast-bench-preview.out > $(BENCH_OUT)/preview.txt
	rm -f $(BENCH_TMP)/holdfast-bench-preview.out

.PHONY: bench-scrape
bench-scrape: ## One scrape of the manager's state metrics with 10,000 volumes; writes docs/performance/metrics-scrape.txt.
	go test -run '^$$' -bench BenchmarkCollect -benchmem -count 3 ./controllers/monitoring/ >$(BENCH_TMP)/holdfast-bench-scrape.out 2>&1 \
		|| { cat $(BENCH_TMP)/holdfast-bench-scrape.out; exit 1; }
	grep -E '^(goos|goarch|cpu|Benchmark)' $(BENCH_TMP)/holdfast-bench-scrape.out > $(BENCH_OUT)/metrics-scrape.txt
	rm -f $(BENCH_TMP)/holdfast-bench-scrape.out

.PHONY: clean
clean: ## Remove build output (the tool cache outside the repo stays).
	rm -rf bin

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_-]+:.*##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
