# The two set-up commands of the README. Both work on a fresh machine.
#   make demo   builds latchkey and the demo guests, and runs them on the embedded store
#   make test   installs what the tests need (redis-server, the wasm target) and runs them all
# and, besides them:
#   make bench  the benchmarks of BENCHMARKS.md

GUESTS := target/guests/wasm32-wasip2/release
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench wasm-target redis-server wrk

wasm-target:
	rustup target add wasm32-wasip2

redis-server:
	@command -v redis-server >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server; }

DEMO_ADDR := 127.0.0.1:18080

demo: wasm-target
	cargo build --release -p latchkey-host
	cargo build --release --target wasm32-wasip2 -p latchkey-demos -p latchkey-http-demo \
	  -p latchkey-http-nolock --target-dir target/guests
	@echo
	@echo "== Two instances of Dapr's sample contend for my_file_name (embedded store) =="
	./target/release/latchkey run --instances 2 $(GUESTS)/try-lock.wasm
	@echo
	@echo "== Four counter instances, 100 locked increments each, on one shared file =="
	@mkdir -p target/demo && rm -f target/demo/counter
	./target/release/latchkey run --instances 4 --dir target/demo::/data $(GUESTS)/counter.wasm --iterations 100
	@echo "The file says $$(cat target/demo/counter): 4 x 100, no update lost."
	@echo
	@echo "== latchkey serve: one instance per request; a job runs at most once at a time =="
	@rm -f target/demo/counter
	@./target/release/latchkey serve --addr $(DEMO_ADDR) --dir target/demo::/data \
	  $(GUESTS)/http_demo.wasm & server=$$!; \
	  until curl -s -o /dev/null http://$(DEMO_ADDR)/; do sleep 0.1; done; \
	  set -x; \
	  curl -s -X POST 'http://$(DEMO_ADDR)/jobs/nightly?ms=1000' & first=$$!; sleep 0.3; \
	  curl -s -i -X POST http://$(DEMO_ADDR)/jobs/nightly; wait $$first; \
	  for i in 1 2 3; do curl -s -X POST http://$(DEMO_ADDR)/counter; done; \
	  kill -TERM $$server; wait $$server

test: wasm-target redis-server
	cargo test --workspace --release

# The benchmarks of BENCHMARKS.md: each figure beside its baseline from the same run.
# B6 also needs wrk and, as its baseline, wasmtime-cli 48: built once into target/tools
# (about ten minutes on two cores), then reused.
bench: wasm-target redis-server wrk target/tools/bin/wasmtime
	cargo bench -p latchkey-tests

wrk:
	@command -v wrk >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }

target/tools/bin/wasmtime:
	cargo install wasmtime-cli --version 48.0.8 --locked --root target/tools
