# The two commands a newcomer needs: `make run` and `make test`.
# Everything else here is how they install what they need from nothing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
CHROMIUM ?= /usr/bin/chromium
# Two pytest workers, each test file on one of them (its module fixtures -- a browser page, a
# native engine -- stay whole): on a 2-core machine 16.5-21 minutes of pytest instead of 31.6, the
# browsers' waits overlapping the other worker's work (three workers: no faster). Files go out
# in collection order (tests/browser, tests/e2e, then tests/unit), not xdist's default of most
# tests first: that sent the few-test, minute-long page and CLI files last, one worker running
# them alone at the end. PYTEST_ARGS= runs serially.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: run test deps test-deps chromium vulkan bench bench-native bench-dawn dawn dawn-bundle clean

run: deps
	$(VENV)/bin/mambaweb serve --host $(HOST) --port $(PORT)

# MAMBAWEB_STRICT_TESTS=1: no native adapter stops the run (test-deps installed one: lavapipe),
# and on a CPU adapter a skipped test fails it (tests/conftest.py)
test: test-deps
	MAMBAWEB_STRICT_TESTS=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench: test-deps
	$(VENV)/bin/mambaweb bench --json

# the same sections on the native backend (wgpu-py over Vulkan/Metal/D3D12), no browser
bench-native: test-deps
	$(VENV)/bin/mambaweb bench --native --json

# the tab's code path (Pyodide + browser.py) under Node on Chrome's WebGPU (Dawn), no browser
bench-dawn: test-deps dawn
	$(VENV)/bin/mambaweb bench --dawn --json

# .dawn/bundle.tar.xz: Node + Dawn + Pyodide for a GPU machine without them (tools/dawn/unpack.sh)
dawn-bundle: deps dawn
	bash tools/dawn/bundle.sh

# --- installation -----------------------------------------------------------
$(VENV)/.base-installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

node_modules/pyodide/pyodide.mjs: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

deps: $(VENV)/.base-installed node_modules/pyodide/pyodide.mjs

# npm `webgpu` (Chrome's Dawn for Node, ~51 MB download) for `mambaweb bench --dawn`
tools/dawn/node_modules/webgpu/index.js: tools/dawn/package.json tools/dawn/package-lock.json
	cd tools/dawn && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

dawn: tools/dawn/node_modules/webgpu/index.js

$(VENV)/.test-installed: $(VENV)/.base-installed pyproject.toml
	$(PIP) install -q -e '.[test,reference]'
	touch $@

chromium:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian chromium (needed for the browser tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# A Vulkan driver for the native backend's tests (tests/unit/test_native_backend.py): with
# no GPU, Mesa's CPU driver lavapipe (a few MB from Debian, installs in seconds).
vulkan:
	@ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json 2>/dev/null | grep -q . || { \
	  echo "installing mesa-vulkan-drivers (a Vulkan driver for the native backend's tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null; }

test-deps: deps $(VENV)/.test-installed chromium vulkan
	@$(MAKE) -s dawn || echo "npm webgpu could not be installed: tests/unit/test_dawn_bench.py will skip"

clean:
	rm -rf $(VENV) node_modules tools/dawn/node_modules
