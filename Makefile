# make test: install what the tests need (Debian packages, when missing) and
# run every test, root-only ones included when run as root. CI runs exactly
# this (.ci/run).

GO ?= go
# The race detector stays on: the whole suite takes about a minute with it
# on a 2-CPU VM. Each package's tests are bounded by the timeout.
GOTESTFLAGS ?= -race -timeout 10m

.PHONY: test deps check bench run

test: deps
	$(GO) test $(GOTESTFLAGS) ./...

deps:
	./scripts/install-test-deps.sh

# Formatting and vet, for before a commit.
check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# One full round trip per op, 0 allocs/op on every backend.
bench:
	$(GO) test -run XXX -bench RoundTrip -benchmem ./latency/

# The main job: a 3-second ping-pong on 127.0.0.1.
run:
	$(GO) run ./tools/latprobe
