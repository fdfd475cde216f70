# nbchat: run `make help` for the targets.
GO      ?= go
BIN     ?= bin/nbchat
ADDR    ?= 127.0.0.1:8080
PKGS    := ./...
FUZZTIME ?= 30s

.PHONY: help run build nats-server cluster test test-short bench lint fmt vet deps fuzz fuzz-short loadtest loadtest-max loadtest-cluster soak check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

run: ## run the server on $(ADDR) (open http://$(ADDR)/)
	$(GO) run . -addr $(ADDR)

build: ## build the server into $(BIN)
	$(GO) build -o $(BIN) .

nats-server: ## build the NATS server from the Go module proxy into bin/nats-server
	$(GO) build -o bin/nats-server github.com/nats-io/nats-server/v2

cluster: nats-server build ## a NATS server and three nodes on 127.0.0.1:9101-9103; Ctrl-C stops them
	loadtest/cluster.sh -serve

test: lint deps ## vet, format check, every test with the race detector, load-test smoke runs and reconnect storms (sockets closed or left silent) on one node and on a 3-node cluster, a leak check
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
# allocation guards again without -race, where sync.Pool is exact
	$(GO) test -count=1 -run 'NoAlloc|Allocs|DoesNotAllocate' ./protocol ./room ./loop ./loadtest
	loadtest/with-server.sh -preset smoke -progress lines -out reports/smoke
# every reader drops and rejoins with since; past the upgrade limit (above the ramp's rate) some wait out a 503
	SERVER_FLAGS='-max-upgrade-rate 1000' loadtest/with-server.sh -preset smoke -scenario storm -rate 800 -progress lines -out reports/storm-smoke
# the old sockets stay open and silent: each reader is back at once beside its old socket (a name may have
# several connections), and the server's probe of the name's holders must close every old one (on a
# cluster, through the name's owner)
	SERVER_FLAGS='-max-upgrade-rate 1000' loadtest/with-server.sh -preset smoke -scenario storm -storm-silent -rate 800 -progress lines -out reports/storm-silent-smoke
	loadtest/cluster.sh -preset smoke -progress lines -out reports/smoke-cluster
	loadtest/cluster.sh -preset smoke -scenario storm -progress lines -out reports/storm-smoke-cluster
	loadtest/cluster.sh -preset smoke -scenario storm -storm-silent -progress lines -out reports/storm-silent-smoke-cluster
# the server is back where it started after each wave of scenarios (leaks)
	WAVES=2 loadtest/soak.sh

test-short: ## the tests without the race detector
	$(GO) test -count=1 $(PKGS)

bench: ## benchmarks of the hot paths, with allocations
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./protocol ./room ./loop

lint: fmt vet ## gofmt and go vet

fmt: ## fail if gofmt would change a file
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet: ## go vet
	$(GO) vet $(PKGS)

deps: ## rooms and the protocol must not depend on the network layer
	@bad=$$($(GO) list -deps ./room ./protocol | grep -E 'nbio|nats-io|nbchat/loop|nbchat/cluster' || true); \
	if [ -n "$$bad" ]; then echo "room/protocol import the network layer: $$bad"; exit 1; fi

# Each fuzz target, its package and the executions fuzz-short gives it
# (about 10 s each here).
FUZZ_TARGETS := FuzzDecoder:./loop:40000 FuzzServerInbound:./loop:6000 FuzzQuery:./loop:50000 \
	FuzzUpgradeHead:./loop:80000 FuzzDecodeRequest:./protocol:200000 \
	FuzzAppendString:./protocol:200000 FuzzDecodeEnvelope:./cluster:40000

fuzz: ## run each fuzz target for $(FUZZTIME)
	@set -e; for t in $(FUZZ_TARGETS); do name=$${t%%:*}; rest=$${t#*:}; pkg=$${rest%%:*}; n=$${rest#*:}; \
		echo "fuzz $$name $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; done

# Counted, not timed: when a timed -fuzztime ends while a worker is busy (as
# when it is minimizing a new input, 60 s by default), Go can fail the run
# with "context deadline exceeded" and no failing input (go.dev/issue/75804).
fuzz-short: ## run each fuzz target for a fixed number of inputs, about 10 s each (CI)
	@set -e; for t in $(FUZZ_TARGETS); do name=$${t%%:*}; rest=$${t#*:}; pkg=$${rest%%:*}; n=$${rest#*:}; \
		echo "fuzz $$name $$pkg for $${n} inputs"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $${n}x -fuzzminimizetime 1000x $$pkg; done

loadtest: ## start a server and run the default load test (10,000 connections, ~2 min); report in reports/default
	loadtest/with-server.sh -preset default -out reports/default

soak: ## leak check: 5 waves of every scenario against one server, which must be back where it started after each (about 7 min)
	WAVES=5 loadtest/soak.sh

loadtest-max: ## the 19,000-connection idle, one-big-room and many-rooms scenarios
	loadtest/with-server.sh -preset idle19k -out reports/idle19k
	loadtest/with-server.sh -preset room5k -out reports/room5k
	loadtest/with-server.sh -preset room5k-max -out reports/room5k-max
	loadtest/with-server.sh -preset rooms19k -out reports/rooms19k

loadtest-cluster: ## 51,000 connections over a three-node cluster; report in reports/cluster50k
	loadtest/cluster.sh -preset cluster50k -out reports/cluster50k

check: lint deps test ## everything CI runs

clean: ## remove build output and reports
	rm -rf bin reports
