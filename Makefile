# The two commands a newcomer needs: `make run` and `make test`.
# Everything else here is how they install what they need from nothing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test deps test-deps chromium vulkan bench bench-native clean

run: deps
	$(VENV)/bin/mambaweb serve --host $(HOST) --port $(PORT)

test: test-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: test-deps
	$(VENV)/bin/mambaweb bench --json

# the same sections on the native backend (wgpu-py over Vulkan/Metal/D3D12), no browser
bench-native: test-deps
	$(VENV)/bin/mambaweb bench --native --json

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

clean:
	rm -rf $(VENV) node_modules
