# extractedprism. `make help` lists the targets.

# bash with pipefail: a failing command on the left of a pipe fails the
# recipe (`build.sh | tail -1`, `extractedprism man | gzip`).
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c

GO      ?= go
MODULE  := github.com/lexfrei/extractedprism
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Package version (deb and rpm): v1.2.3 -> 1.2.3, N commits after it ->
# 1.2.3+gitN.gHASH, no tag -> 0.0.0+gitN.gHASH; sorts in build order in dpkg
# and rpm (hack/pkg-version.sh says why; test/packaging checks it).
PKG_VERSION ?= $(shell hack/pkg-version.sh)
GOARCH  ?= $(shell $(GO) env GOARCH)
NFPM    := $(GO) tool -modfile=tools/go.mod nfpm
# Its own module: goreleaser v2.17.0 needs nfpm v2.47, tools/go.mod keeps v2.45.
GORELEASER := $(GO) tool -modfile=tools/goreleaser/go.mod goreleaser
LDFLAGS := -s -w -X $(MODULE)/pkg/version.Version=$(VERSION) -X $(MODULE)/pkg/version.Commit=$(COMMIT)

.PHONY: help build share package repo release-snapshot test-packages test-release run demo test test-unit test-fuzz bench bench-fleet bench-go bench-discovery test-units test-integration test-provisioning test-e2e kube-bins lint clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/extractedprism (static, stripped)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/extractedprism ./cmd/extractedprism

share: build ## generate shell completions and the man page into bin/share/
	mkdir -p bin/share
	for sh in bash zsh fish; do ./bin/extractedprism completion $$sh > bin/share/extractedprism.$$sh || exit 1; done
	./bin/extractedprism man > bin/share/extractedprism.8
	grep -q '^\.TH ' bin/share/extractedprism.8 || { echo "bin/share/extractedprism.8 is not a man page" >&2; exit 1; }
	gzip -9nf bin/share/extractedprism.8

# Signing: SIGNING_KEY is an armoured OpenPGP secret key file, passphrase (if
# any) in the environment as SIGNING_PASSPHRASE. Empty: unsigned packages;
# `make repo` then signs with a throwaway test key in dist/throwaway-key/.
SIGNING_KEY ?=
# Where dist/repo/ will be served; fills in the client .sources/.repo files.
REPO_URL ?=

package: share ## build deb, rpm, apk and archlinux packages into dist/ for the host arch (signed deb/rpm with SIGNING_KEY=file)
	mkdir -p dist
	for p in deb rpm apk archlinux; do \
		GOARCH=$(GOARCH) PKG_VERSION=$(PKG_VERSION) SIGNING_KEY='$(SIGNING_KEY)' NFPM_PASSPHRASE="$$SIGNING_PASSPHRASE" \
			$(NFPM) package --config nfpm.yaml --packager $$p --target dist/ || exit 1; \
	done

# The packages of this build, signed, then every .deb/.rpm in dist/ (all
# versions there) into the repositories. hack/repo.sh says what goes where.
repo: ## signed apt + rpm repositories of dist/ in dist/repo/ (SIGNING_KEY=file, REPO_URL=url; no key: a throwaway test key)
	@key='$(SIGNING_KEY)'; \
	if [ -z "$$key" ]; then key=$$(hack/throwaway-key.sh dist/throwaway-key) || exit 1; fi; \
	$(MAKE) --no-print-directory package SIGNING_KEY="$$key" && \
	SIGNING_KEY="$$key" REPO_URL='$(REPO_URL)' hack/repo.sh dist dist/repo

release-snapshot: ## goreleaser snapshot into dist/ (signed: SIGNING_KEY or a throwaway key; SBOMs; no image, nothing published), then checks signatures and SBOMs (needs bsdtar)
	hack/release-snapshot.sh

test-release: ## goreleaser check of .goreleaser.yaml (goreleaser pinned in tools/goreleaser/go.mod; first build ~5 min)
	$(GORELEASER) check

test-packages: package ## inspect the .deb and .rpm: contents, modes, conffiles, scripts, lintian; version ordering
	hack/check-packages.sh
	$(GO) test -count=1 -tags packaging -run 'Version' ./test/packaging

run: build ## run the proxy on 127.0.0.1:7445 with hack/local.toml
	./bin/extractedprism run --config hack/local.toml

# Real kube-apiservers + etcd in a private network namespace (root), the
# daemon in front, a short tour, then a shell inside when run from a terminal.
demo: build ## run 3 real kube-apiservers and extractedprism in front of them
	KUBE_BINS=$$(hack/kube-bins/build.sh | tail -1) && export KUBE_BINS && \
	$(GO) test -c -tags demo -o bin/demo.test ./test/demo && \
	cd test/demo && DEMO_SHELL=$$([ -t 0 ] && echo 1) ../../hack/netns-run.sh ../../bin/demo.test -test.run TestDemo -test.timeout 0

test: test-unit test-fuzz bench-go bench-discovery test-units test-packages test-release test-integration test-provisioning test-e2e ## run every test (what CI runs)

test-unit: ## unit, CLI and loopback tests, with the race detector; the data path and the model again on one CPU
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	GOMAXPROCS=1 $(GO) test -race -count=1 ./pkg/balancer ./pkg/upstream ./pkg/check

bench: build ## side by side with HAProxy and nginx on loopback (~6 min; installs them with apt): bench/results/latest.md; then bench-fleet
	BENCH_SKIP_BUILD=1 bench/run.sh
	FLEET_DAEMON=$(CURDIR)/bin/extractedprism hack/bench-fleet.sh

# FLEET_REV=<commit> measures the daemon built from another commit with this
# harness; FLEET_DAEMON=<binary> a given build. See docs/fleet.md.
bench-fleet: ## what an idle fleet of daemons costs a real kube-apiserver (root, ~35 min): bench/results/fleet.md, docs/fleet.md
	hack/bench-fleet.sh

bench-discovery: build ## idle RSS and CPU of the built daemon with discovery on, against three real kube-apiservers (root, ~1 min)
	KUBE_BINS=$$(hack/kube-bins/build.sh | tail -1) && export KUBE_BINS && \
	hack/must-run.sh BenchmarkIdleWithDiscovery \
		$(GO) test -count=1 -tags integration -exec $(CURDIR)/hack/netns-run.sh -run '^$$' -bench '^BenchmarkIdleWithDiscovery$$' -benchtime 1x ./test/integration

bench-go: ## Go micro-benchmarks of the hot paths (pick, relay round trip and bulk, connect + 64 B round trip)
	hack/must-run.sh 'Benchmark[[:alnum:]_/]+' $(GO) test -run '^$$' -bench . -benchmem ./pkg/balancer

FUZZTIME ?= 10s
test-fuzz: ## a bounded fuzz run of the config loader and the slice conversion (seed corpus in the tests)
	hack/must-run.sh FuzzLoad $(GO) test -v -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./pkg/config
	hack/must-run.sh FuzzFromSlice $(GO) test -v -run '^$$' -fuzz '^FuzzFromSlice$$' -fuzztime $(FUZZTIME) ./pkg/discovery

test-units: build ## systemd-analyze verify + security exposure of the units
	hack/check-units.sh bin/extractedprism

test-e2e: ## under a real systemd (nspawn, root): the service from the .deb, socket activation, reload, watchdog, restarts; deb and rpm install, upgrade, removal; cold boots with every control plane down; cloud-init provisioning
	test/e2e/run.sh
	test/provisioning/e2e-cloud-init.sh

test-provisioning: ## cloud-init schema, Butane/Ignition, kubelet wiring, manifests and chart dry-run applied to a real kube-apiserver (root)
	test/provisioning/run.sh

kube-bins: ## build kube-apiserver + etcd for the integration tests (cached; ~5-10 min cold)
	hack/kube-bins/build.sh

# The test binaries are built outside the network namespace (it has no
# network) and run inside it, from their package directory, by -exec.
test-integration: ## discovery against real kube-apiservers + etcd, in a private network namespace (root)
	KUBE_BINS=$$(hack/kube-bins/build.sh | tail -1) && export KUBE_BINS && \
	$(GO) test -count=1 -timeout 20m -tags integration -exec $(CURDIR)/hack/netns-run.sh ./test/integration ./test/kubeharness

clean: ## remove build outputs
	rm -rf bin dist
