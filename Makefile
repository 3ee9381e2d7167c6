# extractedprism. `make help` lists the targets.

GO      ?= go
MODULE  := github.com/lexfrei/extractedprism
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X $(MODULE)/pkg/version.Version=$(VERSION) -X $(MODULE)/pkg/version.Commit=$(COMMIT)

.PHONY: help build run test test-unit test-units lint clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/extractedprism (static, stripped)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/extractedprism ./cmd/extractedprism

run: build ## run the proxy on 127.0.0.1:7445 with hack/local.toml
	./bin/extractedprism run --config hack/local.toml

test: test-unit test-units ## run every test (what CI runs)

test-unit: ## unit, CLI and loopback tests, with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

test-units: build ## systemd-analyze verify + security exposure of the units
	hack/check-units.sh bin/extractedprism

clean: ## remove build outputs
	rm -rf bin dist
