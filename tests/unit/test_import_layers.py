"""py_engine's packages depend one way (DESIGN.md), and no module-level import cycle exists:

    gpu -> ops -> autograd -> nn -> models -> io -> train -> app -> (rpc, benchmarks)

with `tokenizer` a leaf anyone may use. A module may import its own layer or any layer to the
left; an import to the right (even one inside a function) fails this test, naming the file and
line, because it is how a layer kind's knowledge leaks into shared code.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "py_engine"
ORDER = ["gpu", "ops", "autograd", "nn", "models", "io", "train", "app", "rpc", "benchmarks"]
RANK = {name: i for i, name in enumerate(ORDER)}
RANK["rpc"] = RANK["benchmarks"] = len(ORDER)   # the top: nothing imports them


def _package(module):
    parts = module.split(".")
    if parts[0] != "py_engine" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path):
    """[(line, imported module, at module level?)] of one file."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            # "from py_engine.nn import mamba1" imports the submodule mamba1
            mods = [m for m in mods if (ROOT.parent / (m.replace(".", "/") + ".py")).exists()
                    or (ROOT.parent / m.replace(".", "/")).is_dir()] or [node.module]
            out += [(node.lineno, m, id(node) in top) for m in mods]
    return out


def _module_name(path):
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def test_packages_import_one_way():
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        pkg = _package(_module_name(path)) if path.name != "__init__.py" or path.parent != ROOT \
            else None
        if pkg is None:
            continue
        for line, mod, _ in _imports(path):
            dep = _package(mod)
            if dep is None or dep == pkg:
                continue
            if pkg == "tokenizer":
                problems.append(f"{path.relative_to(ROOT.parent)}:{line}: tokenizer is a leaf "
                                f"but imports {mod}")
            elif dep == "tokenizer":
                continue
            elif dep not in RANK or pkg not in RANK:
                problems.append(f"{path.relative_to(ROOT.parent)}:{line}: package {pkg!r} or "
                                f"{dep!r} has no place in the layer order; add it to ORDER")
            elif RANK[dep] > RANK[pkg]:
                problems.append(f"{path.relative_to(ROOT.parent)}:{line}: {pkg} imports {mod} "
                                f"({dep} is above {pkg})")
    assert not problems, "upward imports:\n  " + "\n  ".join(problems)


def test_no_module_level_import_cycle():
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        graph[name] = {m for _, m, top in _imports(path) if top and m.startswith("py_engine")
                       and m != name}
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m not in graph:
                continue
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("module-level import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    # The rule itself: a file in ops importing models must be reported.
    bad = ROOT / "ops" / "_upward_probe_for_test.py"
    bad.write_text("from py_engine.models.mamba import MambaModel\n")
    try:
        try:
            test_packages_import_one_way()
        except AssertionError as e:
            assert "_upward_probe_for_test.py:1: ops imports py_engine.models.mamba" in str(e)
        else:
            raise AssertionError("an upward import went unnoticed")
    finally:
        bad.unlink()
