# The test command README gives. It needs only Go: the tests build mecha and
# their apps themselves and bind 127.0.0.1 on free ports.
GO ?= go
CORE := ./components/... ./runtime/... ./statestore/...

.PHONY: test build bench fmt vet

build:
	$(GO) build -o bin/mecha ./cmd/mecha

test:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) test -race -count=1 $(CORE)
	$(GO) test -count=1 -timeout 10m ./cmd/... ./e2e/...

bench:
	./bench/http.sh
