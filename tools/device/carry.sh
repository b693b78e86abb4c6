#!/usr/bin/env bash
# Make, on this machine (which reaches PyPI, Debian and npm), everything a lent GPU machine
# without network needs for tools/device/gpu_session.sh -- all of it git-ignored, so a fresh
# checkout has none of it:
#   .gl/*.deb          Vulkan/GL loaders from Debian (libvulkan1, libglvnd0, libegl1, libgl1,
#                      libglx0, libopengl0, libgles2): dpkg -x into / there, then ldconfig
#   .whl/*.whl         wgpu-py and what it imports (cffi, pycparser), for --native
#   .whl_dawn/*.whl    the server's wheels the device image lacks (fastapi, starlette, uvicorn,
#                      pydantic and its parts, opentelemetry-api: fastapi imports it), for every mode
#   .dawn/bundle.tar.xz  Node 20 + Dawn + Pyodide (tools/dawn/bundle.sh), for --dawn
# Wheels are for the device's Python (3.12, x86-64), at the versions this checkout's .venv holds
# (make test-deps first), one version of each. Run from anywhere: bash tools/device/carry.sh
# Then carry [".gl", ".whl", ".whl_dawn", ".dawn"] (with models/default/model.safetensors moved
# out of the tree for a Dawn call: the working tree plus carry must stay under 64 MiB).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
die() { echo "carry.sh: $*" >&2; exit 1; }
[ -x .venv/bin/python ] || die "no .venv: run make test-deps first (the wheels follow its versions)"

if [ -z "$(ls .gl/*.deb 2>/dev/null)" ]; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update -qq
  (cd .gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
download() {   # download DIR NAME...: each NAME at this .venv's version, for CPython 3.12 x86-64
  local dir=$1; shift
  mkdir -p "$dir"
  for name in "$@"; do
    ls "$dir" | grep -qi "^${name//-/_}-" && continue
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
      -d "$dir" "$name==$(version "$name")"
  done
}
download .whl wgpu cffi pycparser
download .whl_dawn fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection opentelemetry-api

[ -f .dawn/bundle.tar.xz ] || { make -s dawn && bash tools/dawn/bundle.sh; }
du -sh .gl .whl .whl_dawn .dawn/bundle.tar.xz
