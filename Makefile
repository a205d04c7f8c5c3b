# The two set-up commands of the README. Both work on a fresh machine.
#   make demo   builds latchkey and the demo guests, and runs them on the embedded store
#   make test   installs what the tests need (redis-server, iproute2 and nftables, the wasm target,
#               python3-venv and npm when missing, the Python and JavaScript guest tools),
#               builds every guest and runs every test
# and, besides them:
#   make bench  the benchmarks of BENCHMARKS.md
#   make lint   rustfmt and clippy on the host, the tests and the guests, and the book built
#   make packages  the SDK packages and WIT packages a guest project depends on
#   make soak   minutes of combined faults with the history checker at the end
#               (LATCHKEY_SOAK_SECONDS, 300 unless set; as root, for its network namespaces)

GUESTS := target/guests/wasm32-wasip2/release
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench soak lint wasm-target redis-server iproute2 python-venv npm wrk \
	polyglot-guests dapr-clients packages

# Python and JavaScript guests: componentize-py from guest/python/requirements.txt in a
# virtual environment, componentize-js by `npm ci` from guest/js/package-lock.json, each
# demo built for the world latchkey:guest/command of guest/wit.
PY_VENV := target/py-venv
PY_GUESTS := target/guests/python
PY_P3_GUESTS := target/guests/python-p3
JS_GUESTS := target/guests/js
GUEST_WIT := $(wildcard guest/wit/*.wit guest/wit/deps/*.wit wit/*.wit wit/deps/*/*.wit \
	wit/v0.3.0/*.wit)
PY_SDK := $(wildcard guest/python/latchkey/*.py guest/python/demos/*.py)
PY_DEMOS := try_lock counter lockctl bench leader limited
PY_P3_DEMOS := try_lock counter lockctl tasks http_jobs leader limited
JS_DEMOS := try-lock counter lockctl bench leader limited

# Debian's packages, each installed only when missing: `apt-get install` is slow even when
# there is nothing to do.
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq
APT_UPDATED := $(SUDO) apt-get update -qq

# Dapr's own SDKs, pinned, as Dapr applications run them: the clients of `latchkey dapr`'s
# tests (tests/clients).
CLIENTS_VENV := target/clients-venv
$(CLIENTS_VENV)/.installed: tests/clients/python/requirements.txt | python-venv
	python3 -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install -q -r tests/clients/python/requirements.txt
	@touch $@

tests/clients/js/node_modules/.package-lock.json: tests/clients/js/package-lock.json | npm
	npm ci --prefix tests/clients/js --no-audit --no-fund --loglevel=error

dapr-clients: $(CLIENTS_VENV)/.installed tests/clients/js/node_modules/.package-lock.json

$(PY_VENV)/bin/componentize-py: guest/python/requirements.txt | python-venv
	python3 -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install -q -r guest/python/requirements.txt
	@touch $@

guest/js/node_modules/.package-lock.json: guest/js/package-lock.json | npm
	npm ci --prefix guest/js --no-audit --no-fund --loglevel=error

$(PY_GUESTS)/%.wasm: guest/python/demos/%.py $(PY_SDK) $(GUEST_WIT) \
		$(PY_VENV)/bin/componentize-py
	@mkdir -p $(PY_GUESTS)
	$(PY_VENV)/bin/componentize-py -q -d guest/wit -w latchkey:guest/command componentize \
	  -p guest/python -p guest/python/demos $* -o $@

# The WASI 0.3 demos (guest/python/demos/*_p3.py): commands of the world
# latchkey:guest/command-p3, and the HTTP handler of latchkey:guest/service-p3; try_lock is
# built against latchkey:lock@0.3.0, to show such a guest links to the host's 0.3.1.
PY_P3_WORLD = command-p3
$(PY_P3_GUESTS)/http_jobs.wasm: PY_P3_WORLD = service-p3
$(PY_P3_GUESTS)/try_lock.wasm: PY_P3_WORLD = command-p3-v0-3-0
$(PY_P3_GUESTS)/%.wasm: guest/python/demos/%_p3.py $(PY_SDK) $(GUEST_WIT) \
		$(PY_VENV)/bin/componentize-py
	@mkdir -p $(PY_P3_GUESTS)
	$(PY_VENV)/bin/componentize-py -q -d guest/wit -w latchkey:guest/$(PY_P3_WORLD) componentize \
	  -p guest/python -p guest/python/demos $*_p3 -o $@

$(JS_GUESTS)/%.wasm: guest/js/demos/%.js guest/js/demos/wasi.js guest/js/latchkey.js \
		$(GUEST_WIT) guest/js/node_modules/.package-lock.json
	@mkdir -p $(JS_GUESTS)
	cd guest/js && npx componentize-js --wit ../wit --world-name latchkey:guest/command \
	  -d http -d fetch-event -o ../../$@ demos/$*.js > /dev/null

polyglot-guests: $(PY_DEMOS:%=$(PY_GUESTS)/%.wasm) $(PY_P3_DEMOS:%=$(PY_P3_GUESTS)/%.wasm) \
	$(JS_DEMOS:%=$(JS_GUESTS)/%.wasm)

# What a guest project outside this repository depends on, as a registry would hand it
# over, in target/packages: the Rust SDK's crate and the host's (`cargo package`), the
# Python wheel, the npm tarball, and latchkey:lock 0.2.1 and 0.3.1 as binary WIT packages
# (`wkg build`), published with wasi:io, their one dependency, into a file registry
# (target/packages/registry) that wkg can fetch from. The new-user tests
# (tests/packages.rs) build guests from these alone.
PACKAGES := target/packages
WKG := target/tools/bin/wkg
# wkg's settings and cache for these steps only: nothing under ~/.config or ~/.cache.
WKG_ENV := WKG_CONFIG_FILE=$(CURDIR)/$(PACKAGES)/wkg-config.toml WKG_CACHE_DIR=$(CURDIR)/$(PACKAGES)/wkg-cache
packages: $(PY_VENV)/bin/componentize-py guest/js/node_modules/.package-lock.json $(WKG)
	rm -rf $(PACKAGES) && mkdir -p $(PACKAGES)/python $(PACKAGES)/wit-build/wasi-io-0.2.12/wit \
	  $(PACKAGES)/wit-build/latchkey-lock-0.2.1/wit $(PACKAGES)/wit-build/latchkey-lock-0.3.1/wit
	cargo package --quiet --manifest-path guest/latchkey/Cargo.toml --no-verify --allow-dirty \
	  --target-dir target/guests
	cp target/guests/package/latchkey-guest-*.crate $(PACKAGES)/
	cargo package --quiet -p latchkey-host --no-verify --allow-dirty
	cp target/package/latchkey-host-*.crate $(PACKAGES)/
	cp -RL guest/python/pyproject.toml guest/python/README.md guest/python/latchkey $(PACKAGES)/python/
	$(PY_VENV)/bin/pip wheel --quiet --no-deps -w $(PACKAGES) $(PACKAGES)/python
	npm pack --silent --pack-destination $(PACKAGES) ./guest/js > /dev/null
	cp wit/deps/io/*.wit $(PACKAGES)/wit-build/wasi-io-0.2.12/wit/
	cp wit/latchkey-lock.wit $(PACKAGES)/wit-build/latchkey-lock-0.2.1/wit/
	cp wit/v0.3.1/latchkey-lock.wit $(PACKAGES)/wit-build/latchkey-lock-0.3.1/wit/
	printf '[overrides]\n"wasi:io" = { path = "../wasi-io-0.2.12/wit" }\n' \
	  > $(PACKAGES)/wit-build/latchkey-lock-0.2.1/wkg.toml
	printf '[namespace_registries]\nlatchkey = "latchkey.local"\nwasi = "latchkey.local"\n\n[registry."latchkey.local".local]\nroot = "%s"\n' \
	  "$(CURDIR)/$(PACKAGES)/registry" > $(PACKAGES)/wkg-config.toml
	for package in wasi-io-0.2.12 latchkey-lock-0.2.1 latchkey-lock-0.3.1; do \
	  (cd $(PACKAGES)/wit-build/$$package && $(WKG_ENV) $(CURDIR)/$(WKG) build --color never \
	    -o $(CURDIR)/$(PACKAGES)/$$package.wasm > /dev/null) || exit 1; \
	  $(WKG_ENV) $(WKG) publish --color never $(PACKAGES)/$$package.wasm > /dev/null || exit 1; \
	done
	rm $(PACKAGES)/wasi-io-0.2.12.wasm

# wkg, the WIT package tool of wasm-pkg-tools, from crates.io (about four minutes on two
# cores, once).
$(WKG):
	cargo install wkg --version 0.16.1 --locked --root target/tools

wasm-target:
	rustup target add wasm32-wasip2

redis-server:
	@command -v redis-server >/dev/null || { $(APT_UPDATED) && $(APT_INSTALL) redis-server; }

# `ip` and `nft`, for the partition tests' network namespaces and the cuts between them.
iproute2:
	@command -v ip >/dev/null || { $(APT_UPDATED) && $(APT_INSTALL) iproute2; }
	@command -v nft >/dev/null || { $(APT_UPDATED) && $(APT_INSTALL) nftables; }

python-venv:
	@python3 -m venv --help >/dev/null 2>&1 || { $(APT_UPDATED) && $(APT_INSTALL) python3-venv; }

npm:
	@command -v npm >/dev/null || { $(APT_UPDATED) && $(APT_INSTALL) npm; }

DEMO_ADDR := 127.0.0.1:18080

demo: wasm-target polyglot-guests
	cargo build --release -p latchkey-host
	cargo build --release --manifest-path guest/Cargo.toml --target wasm32-wasip2 --workspace \
	  --target-dir target/guests
	@echo
	@echo "== Two instances of Dapr's sample contend for my_file_name (embedded store) =="
	./target/release/latchkey run --instances 2 $(GUESTS)/try-lock.wasm
	@echo
	@echo "== The same sample in Python and in JavaScript =="
	./target/release/latchkey run --instances 2 $(PY_GUESTS)/try_lock.wasm
	./target/release/latchkey run --instances 2 $(JS_GUESTS)/try-lock.wasm
	@echo
	@echo "== Four counter instances, 100 locked increments each, on one shared file =="
	@mkdir -p target/demo && rm -f target/demo/counter
	./target/release/latchkey run --instances 4 --dir target/demo::/data $(GUESTS)/counter.wasm --iterations 100
	@echo "The file says $$(cat target/demo/counter): 4 x 100, no update lost."
	@echo
	@echo "== A semaphore of limit 3: 8 instances, never more than 3 inside (Rust, Python, JavaScript) =="
	@for guest in $(GUESTS)/limited.wasm $(PY_GUESTS)/limited.wasm $(JS_GUESTS)/limited.wasm; do \
	  rm -f target/demo/inside; \
	  ./target/release/latchkey run --instances 8 --dir target/demo::/data $$guest --rounds 1 --work-ms 100 \
	    | awk '$$2 == "inside" {print $$3}' | sort -n | tail -1 | sed "s|^|$$guest: most inside at once: |"; \
	done
	@echo
	@echo "== An election: 4 instances each lead for 100 ms and resign; the others follow =="
	./target/release/latchkey run --instances 4 $(GUESTS)/leader.wasm --lead-ms 100 --tick-ms 50 \
	  | grep -v tick
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
	@echo
	@echo "== WASI 0.3: three tasks of one instance; a task waiting for a lock suspends only itself (Rust, then Python) =="
	./target/release/latchkey run $(GUESTS)/tasks_demo_p3.wasm
	./target/release/latchkey run $(PY_P3_GUESTS)/tasks.wasm
	@echo
	@echo "== latchkey serve, WASI 0.3: one instance serves many requests, each owning its locks =="
	@rm -f target/demo/counter
	@./target/release/latchkey serve --addr $(DEMO_ADDR) --dir target/demo::/data \
	  $(GUESTS)/http_demo_p3.wasm & server=$$!; \
	  until curl -s -o /dev/null http://$(DEMO_ADDR)/; do sleep 0.1; done; \
	  set -x; \
	  curl -s -X POST 'http://$(DEMO_ADDR)/jobs/nightly?ms=1000' & first=$$!; sleep 0.3; \
	  curl -s -i -X POST http://$(DEMO_ADDR)/jobs/nightly; wait $$first; \
	  curl -s -X POST 'http://$(DEMO_ADDR)/jobs/forgetful?then=leak'; \
	  curl -s -D - -X POST 'http://$(DEMO_ADDR)/jobs/forgetful?ms=0' | grep -i '^x-instance\|^ran'; \
	  for i in 1 2 3; do curl -s -X POST http://$(DEMO_ADDR)/counter; done; \
	  kill -TERM $$server; wait $$server

test: wasm-target redis-server iproute2 polyglot-guests dapr-clients packages
	cargo test --workspace --release

# The benchmarks of BENCHMARKS.md: each figure beside its baseline from the same run.
# B6 also needs wrk and, as its baseline, wasmtime-cli 48: built once into target/tools
# (about ten minutes on two cores), then reused.
bench: wasm-target redis-server wrk target/tools/bin/wasmtime polyglot-guests
	cargo bench -p latchkey-tests

# Not in `make test`: it runs for minutes. The clock jumps need no libfaketime: the
# harness preloads its own shim (tests/harness/clock_shift.c), as Debian's libfaketime
# cannot load into its jemalloc redis-server.
soak: wasm-target redis-server iproute2
	cargo test --release -p latchkey-tests --test faults -- --ignored --nocapture soak

lint: wasm-target target/tools/bin/mdbook
	target/tools/bin/mdbook build docs
	cargo fmt --all --check
	cargo fmt --all --check --manifest-path guest/Cargo.toml
	cargo clippy --workspace --all-targets --release -- -D warnings
	cargo clippy --manifest-path guest/Cargo.toml --workspace --release --target wasm32-wasip2 \
	  --target-dir target/guests -- -D warnings

wrk:
	@command -v wrk >/dev/null || { $(APT_UPDATED) && $(APT_INSTALL) wrk; }

# The book's builder, mdBook 0.5 from crates.io: `make lint` builds the book (docs/) into
# target/book, and fails on what mdBook refuses.
target/tools/bin/mdbook:
	cargo install mdbook --version "~0.5" --locked --root target/tools

target/tools/bin/wasmtime:
	cargo install wasmtime-cli --version 48.0.8 --locked --root target/tools
