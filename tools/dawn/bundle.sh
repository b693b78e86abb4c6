#!/usr/bin/env bash
# Pack what a GPU machine without Node or network needs for `mambaweb bench --dawn` into ONE
# file, .dawn/bundle.tar.xz (under 45 MiB; carry that path), for tools/dawn/unpack.sh there:
#   bin/node                          this machine's Node 20 (must link only glibc + libstdc++)
#   node_modules/webgpu/              npm `webgpu`: index.js, package.json, dist/linux-x64/dawn.node
#   node_modules/pyodide/             the files Pyodide loads under Node (no source maps, no docs)
#   node_modules/ws/                  imported by pyodide.mjs under Node
# Run from anywhere: bash tools/dawn/bundle.sh   (MAMBAWEB_NODE picks another node binary)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NODE=${MAMBAWEB_NODE:-$(command -v node || true)}
LIMIT_MIB=45
die() { echo "bundle.sh: $*" >&2; exit 1; }

[ -n "$NODE" ] && [ -x "$NODE" ] || die "no node binary: install Node 20 (apt-get install nodejs) or set MAMBAWEB_NODE"
NODE=$(readlink -f "$NODE")
major=$("$NODE" -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || die "$NODE is Node $major; Dawn's bindings need Node 20+"
# A distribution's node often links libnode/libuv/libicu, which the device lacks: refuse those.
extra=$(ldd "$NODE" | awk '{print $1}' | grep -vE '^(linux-vdso|/lib64/ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|libstdc\+\+\.so|libgcc_s\.so|librt\.so)' || true)
[ -z "$extra" ] || die "$NODE links libraries a plain Debian 12 lacks ($(echo $extra)): use a self-contained Node 20 build (nodejs.org's or NodeSource's)"

# npm `webgpu` (make dawn) and pyodide (npm ci in the repo root)
[ -f "$REPO/tools/dawn/node_modules/webgpu/index.js" ] || (cd "$REPO/tools/dawn" && npm ci --no-audit --no-fund --ignore-scripts)
WEBGPU="$REPO/tools/dawn/node_modules/webgpu"
PYODIDE="$REPO/node_modules/pyodide"
WS="$REPO/node_modules/ws"
[ -f "$PYODIDE/pyodide.mjs" ] || die "no $PYODIDE: run npm ci in the repo root (make deps)"
[ -f "$WS/package.json" ] || die "no $WS (pyodide's dependency): run npm ci in the repo root"
[ -f "$WEBGPU/dist/linux-x64/dawn.node" ] || die "no $WEBGPU/dist/linux-x64/dawn.node"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/node_modules/webgpu/dist/linux-x64" "$STAGE/node_modules/pyodide"
cp "$NODE" "$STAGE/bin/node"
cp "$WEBGPU"/{index.js,package.json,LICENSE.md} "$STAGE/node_modules/webgpu/"
cp "$WEBGPU/dist/linux-x64/dawn.node" "$STAGE/node_modules/webgpu/dist/linux-x64/"
cp "$PYODIDE"/{pyodide.mjs,pyodide.asm.mjs,pyodide.asm.wasm,python_stdlib.zip,pyodide-lock.json,package.json} \
   "$STAGE/node_modules/pyodide/"
cp -r "$WS" "$STAGE/node_modules/ws"

mkdir -p "$REPO/.dawn"
OUT="$REPO/.dawn/bundle.tar.xz"
tar -C "$STAGE" -cf - bin node_modules | xz -T0 -6 > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
bytes=$(stat -c %s "$OUT")
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
[ "$bytes" -le $((LIMIT_MIB * 1048576)) ] || die "$OUT is $mib MiB, over the $LIMIT_MIB MiB budget"
echo "$OUT: $mib MiB (node $("$NODE" --version), webgpu $("$NODE" -p "require('$WEBGPU/package.json').version"), pyodide $("$NODE" -p "require('$PYODIDE/package.json').version"))"
echo "on the device: bash tools/dawn/unpack.sh"
