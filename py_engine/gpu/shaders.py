"""Find and read WGSL files from `shaders/` (beside py_engine in the repo and in the engine zip).

A line `//#include "lib/activations.wgsl"` (at the start of the line; path relative to
`shaders/`) is replaced by that file's text, recursively, so shared helpers exist once. Each
file enters a shader at most once (a second include of it becomes a comment); an include cycle,
a missing file or a path outside `shaders/` is refused with the including file and line.
The engine zip packs `shaders/` recursively (server/engine_pack.py) and Pyodide unpacks it to
/engine/shaders, so lib/ resolves the same way there; the resolved text is a pure function of
the files, so pipelines may stay cached by shader name.

`params_struct_size` reads `struct Params { ... }` (or another named struct) from a resolved
shader and returns its size under WGSL's uniform layout rules (u32/i32/f32, vecN, arrays of
those); tests compare it with the bytes the ops pack with py_engine.ops._common.params.
"""
import re
from pathlib import Path

from py_engine.gpu.errors import ShaderError

SHADER_DIR = Path(__file__).resolve().parent.parent.parent / "shaders"
INCLUDE = re.compile(r'//#include\s+"([^"]*)"')
_cache = {}      # name -> resolved source
_line_map = {}   # name -> [(file, line)] per line of the resolved source


class ShaderIncludeError(ShaderError):
    """An `//#include` names a missing file, a path outside shaders/, or forms a cycle."""


def shader_source(name: str) -> str:
    """Source text of `shaders/<name>.wgsl` (name without the suffix), includes resolved."""
    if name not in _cache:
        path = SHADER_DIR / f"{name}.wgsl"
        if not path.is_file():
            raise FileNotFoundError(f"no shader file {path}")
        lines, where = [], []
        _resolve(f"{name}.wgsl", lines, where, [], set())
        _cache[name] = "".join(lines)
        _line_map[name] = where
    return _cache[name]


def shader_location(name: str, line: int) -> str:
    """`file:line` in shaders/ of 1-based `line` of the resolved `name` (for compile errors,
    whose line numbers count the included text)."""
    shader_source(name)
    where = _line_map.get(name)
    if not where or not 1 <= line <= len(where):
        return f"{name}.wgsl:{line}"
    f, n = where[line - 1]
    return f"{f}:{n}"


def _resolve(rel, lines, where, stack, seen):
    stack.append(rel)
    seen.add(rel)
    text = (SHADER_DIR / rel).read_text()
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        m = INCLUDE.match(line)
        if m is None:
            lines.append(line)
            where.append((rel, n))
            continue
        if line[m.end():].strip():
            raise ShaderIncludeError(f"shaders/{rel}:{n}: text after the //#include path")
        target = _target(m.group(1), rel, n)
        if target in stack:
            chain = " -> ".join(stack[stack.index(target):] + [target])
            raise ShaderIncludeError(f"shaders/{rel}:{n}: include cycle {chain}")
        if target in seen:
            lines.append(f"// (already included: {target})\n")
            where.append((rel, n))
            continue
        _resolve(target, lines, where, stack, seen)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
    stack.pop()


def _target(path, rel, n):
    """The include path normalised relative to shaders/, or a ShaderIncludeError."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not path or path.startswith("/") or ".." in parts or "\\" in path:
        raise ShaderIncludeError(f"shaders/{rel}:{n}: include path {path!r} must be relative to "
                                 "shaders/ and stay inside it")
    target = "/".join(parts)
    if not (SHADER_DIR / target).is_file():
        raise ShaderIncludeError(f"shaders/{rel}:{n}: included file shaders/{target} not found")
    return target


# -- the uniform Params struct ----------------------------------------------------------------

_SCALAR = {"u32": 4, "i32": 4, "f32": 4}


def _layout(ty):
    """(align, size) of a WGSL type in the uniform address space (scalars, vecN, arrays)."""
    ty = ty.strip()
    if ty in _SCALAR:
        return 4, 4
    m = re.fullmatch(r"vec([234])\s*<\s*(\w+)\s*>|vec([234])([fiu])", ty)
    if m:
        n = int(m.group(1) or m.group(3))
        if (m.group(2) or {"f": "f32", "i": "i32", "u": "u32"}[m.group(4)]) not in _SCALAR:
            raise ValueError(f"unsupported vector type {ty}")
        return (8, 8) if n == 2 else (16, 4 * n)   # vec3: align 16, size 12
    m = re.fullmatch(r"array\s*<\s*(.+?)\s*,\s*(\d+)u?\s*>", ty)
    if m:
        align, size = _layout(m.group(1))
        stride = -(-size // align) * align
        if stride % 16:   # WGSL refuses such arrays in the uniform address space
            raise ValueError(f"{ty}: a uniform array's element stride must be a multiple of 16 "
                             "(use vec4 elements)")
        return max(align, 16), stride * int(m.group(2))
    raise ValueError(f"unsupported type {ty!r} in a uniform struct")


def params_struct_size(source: str, struct: str = "Params"):
    """Byte size of `struct <struct> { ... }` in WGSL text under uniform layout rules, or None
    when there is none. Fields are `name: type` separated by commas; comments are ignored."""
    text = re.sub(r"//[^\n]*", "", source)
    m = re.search(r"\bstruct\s+" + re.escape(struct) + r"\s*\{(.*?)\}", text, re.S)
    if m is None:
        return None
    offset, max_align = 0, 4
    for field in _fields(m.group(1)):
        if ":" not in field:
            raise ValueError(f"cannot parse field {field!r} of struct {struct}")
        if "@" in field:
            raise ValueError(f"field attributes ({field!r}) are not supported")
        align, size = _layout(field.split(":", 1)[1])
        offset = -(-offset // align) * align + size
        max_align = max(max_align, align)
    return -(-offset // max_align) * max_align   # SizeOf(S) = roundUp(AlignOf(S), end of last)


def _fields(body):
    """Split a struct body at the commas outside <...>."""
    out, depth, cur = [], 0, ""
    for ch in body:
        depth += (ch == "<") - (ch == ">")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [f.strip() for f in out if f.strip()]
