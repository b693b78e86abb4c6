#!/usr/bin/env bash
# On a machine without Node or network: unpack .dawn/bundle.tar.xz (made by tools/dawn/bundle.sh)
# into .dawn/unpacked/ and link it where `mambaweb bench --dawn` looks (tools/dawn_engine.py):
#   .dawn/unpacked/bin/node                 found by tools/dawn_engine.py before PATH
#   tools/dawn/node_modules -> .dawn/unpacked/node_modules        (npm `webgpu`)
#   node_modules/pyodide    -> .dawn/unpacked/node_modules/pyodide (engine + server)
# Links are made only where nothing real is there already. Safe to run again.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUNDLE="$REPO/.dawn/bundle.tar.xz"
DEST="$REPO/.dawn/unpacked"
die() { echo "unpack.sh: $*" >&2; exit 1; }

[ -f "$BUNDLE" ] || die "no $BUNDLE: run bash tools/dawn/bundle.sh where Node is installed, then carry .dawn/bundle.tar.xz"
rm -rf "$DEST"
mkdir -p "$DEST"
if command -v xz >/dev/null; then
  xz -dc "$BUNDLE" | tar -C "$DEST" -xf -
else   # no xz-utils: Python's lzma reads it too
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$BUNDLE" "$DEST"
fi

link() {   # link TARGET NAME: NAME -> TARGET unless NAME is a real file or folder
  if [ -e "$2" ] && [ ! -L "$2" ]; then
    echo "unpack.sh: keeping the existing $2"
  else
    mkdir -p "$(dirname "$2")"
    ln -sfn "$1" "$2"
  fi
}
link "$DEST/node_modules" "$REPO/tools/dawn/node_modules"
link "$DEST/node_modules/pyodide" "$REPO/node_modules/pyodide"

"$DEST/bin/node" -e 'require(process.argv[1] + "/node_modules/webgpu/dist/linux-x64/dawn.node")' "$DEST" \
  || die "the bundled node cannot load dawn.node (see the error above)"
echo "unpack.sh: node $("$DEST/bin/node" --version) + Dawn ready in $DEST"
