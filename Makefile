# The test command README gives. It installs what the tests need that Go
# does not bring (kcat, the librdkafka client, headless Chromium for the
# IM example's browser test, and Node.js from apt;
# kafkajs and the Dapr JS SDK from npm), then vets, checks formatting,
# runs staticcheck and every test. The tests build mecha and
# their apps themselves and bind 127.0.0.1 on free ports.
GO ?= go
CORE := ./components/... ./runtime/... ./statestore/... ./broker/... ./bindings/... ./stream/... ./internal/... ./sdk/...

.PHONY: test deps build build-full bench fmt vet im-demo

# The default build: mecha's own components and the contrib components
# that bring no cloud SDK (README, "Build"). build-full adds state.redis,
# pubsub.redis and state.postgresql (-tags contrib_all).
LDFLAGS := -s -w
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/mecha ./cmd/mecha

build-full:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -tags contrib_all -o bin/mecha ./cmd/mecha

deps:
	@command -v kcat >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; }
	@command -v kcat >/dev/null 2>&1 || { echo "kcat is required (apt-get install -y kcat)"; exit 1; }
	@command -v npm >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	@test -x /usr/lib/chromium/chromium || command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@if command -v npm >/dev/null 2>&1 && [ ! -d broker/testdata/kafkajs/node_modules/kafkajs ]; then \
		cd broker/testdata/kafkajs && npm install --silent --no-audit --no-fund; fi
	@if command -v npm >/dev/null 2>&1 && [ ! -d e2e/testdata/quickstarts/js/node_modules/@dapr/dapr ]; then \
		cd e2e/testdata/quickstarts/js && npm install --silent --no-audit --no-fund; fi

# staticcheck at a pinned version, run from the module cache (go run
# builds it once).
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.6.1

test: deps
	$(GO) vet ./...
	$(GO) vet -tags contrib_all ./components/
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(STATICCHECK) ./...
	$(GO) test -race -count=1 -timeout 10m $(CORE)
	$(GO) test -count=1 -timeout 10m ./cmd/... ./examples/... ./e2e/...

bench:
	./bench/http.sh

# The IM example on two runtimes with a gateway each (examples/im).
im-demo:
	./examples/im/demo.sh
