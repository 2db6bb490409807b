# Holdfast. `make test` is the one test command; CI runs exactly it.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

TOOLS_BIN ?= $(CURDIR)/bin/tools
CONTROLLER_GEN := $(TOOLS_BIN)/controller-gen
GO_TEST_FLAGS ?= -count=1 -timeout=30m
# Generated paths: `make test` fails when regenerating them changes anything.
GENERATED := apis config/crd config/rbac config/webhook

export KUBEBUILDER_ASSETS := $(TOOLS_BIN)
export HOLDFAST_TOOLS_BIN := $(TOOLS_BIN)

.PHONY: all
all: build

##@ Build

.PHONY: build
build: ## Build the holdfast binary into bin/holdfast (static, as in the image).
	CGO_ENABLED=0 go build -trimpath -o bin/holdfast .

.PHONY: tools
tools: ## Build the test toolchain (cached outside the repo by version; ~20 min cold, seconds warm).
	bash test/tools/build.sh

$(CONTROLLER_GEN):
	bash test/tools/build.sh controller-gen

##@ Generated code

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy functions.
	$(CONTROLLER_GEN) object paths=./apis/...

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

##@ Checks and tests

.PHONY: fmt-check
fmt-check: ## Fail when gofmt would change a file.
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## go vet the product module and the tools wrapper.
	go vet ./...

.PHONY: test
test: tools verify-generated fmt-check vet ## The one test command: tools, generated code, gofmt, vet, every test.
	go test $(GO_TEST_FLAGS) ./...

.PHONY: test-unit
test-unit: ## Only the tests that need no tools (quick feedback while editing).
	go test $(GO_TEST_FLAGS) -short ./...

.PHONY: clean
clean: ## Remove build output (the tool cache outside the repo stays).
	rm -rf bin

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
