# make test: install what the tests need (Debian packages, when missing),
# run every test of every module, root-only ones included when run as root,
# then the checks reviewers make (`make check`). CI runs exactly this
# (.ci/run).

GO ?= go
# The race detector stays on: the whole suite takes about a minute with it
# on a 2-CPU VM. Each package's tests are bounded by the timeout.
GOTESTFLAGS ?= -race -timeout 10m

# The modules of the workspace (go.work): the library at the root, and
# containerize, metrics and tools nested in it (docs/architecture.md). A
# `./...` pattern stops at a nested go.mod, so every command names them all.
MODULES := $(shell $(GO) list -m -f '{{.Dir}}')
PKGS := $(addsuffix /...,$(MODULES))

# staticcheck at a pinned release (2026.2.2), built by the go command from
# the module proxy on first use and cached after.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test deps check fmt vet staticcheck tidy light build bench run

# The onload backend is cgo behind a build tag: its tests run a second
# time, built with the tag.
test: deps
	$(GO) test $(GOTESTFLAGS) $(PKGS)
	$(GO) test $(GOTESTFLAGS) -tags onload ./bypass/onload/...
	$(MAKE) --no-print-directory check

deps:
	./scripts/install-test-deps.sh

# What a reviewer checks, for every module; each step fails on a finding.
check: fmt vet staticcheck tidy light

fmt:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags onload ./bypass/onload/...

staticcheck:
	$(STATICCHECK) $(PKGS)

# Every go.mod and go.sum is what `go mod tidy` would write.
tidy:
	@for d in $(MODULES); do (cd $$d && GOWORK=off $(GO) mod tidy -diff >/dev/null) || { echo "go mod tidy needed in $$d"; exit 1; }; done

# A program importing only bypass gets no Kubernetes, Prometheus or gonum.
light:
	./scripts/check-light-import.sh

# Static binaries of the commands in bin/ (the efvi-tagged build: README).
build:
	CGO_ENABLED=0 $(GO) build -o bin/ ./tools/latprobe ./tools/onload-run

# One full round trip per op, 0 allocs/op on every backend.
bench:
	$(GO) test -run XXX -bench RoundTrip -benchmem ./latency/
	$(GO) test -tags onload -run XXX -bench RoundTrip -benchmem ./bypass/onload/

# The main job: a 3-second ping-pong on 127.0.0.1.
run:
	$(GO) run ./tools/latprobe
