"""The package's shape, read from its source with ``ast`` (nothing is imported; < 1 s).

* the package-internal import graph (imports at module level and inside functions) has no
  cycle;
* no module imports one of a higher layer (:data:`LAYERS`, lowest first; a module belongs to
  the layer of the longest prefix that names it);
* a module imports the package's own modules at its top, except where :data:`LOCAL_IMPORTS`
  lists the import with its reason;
* no function body (docstring excluded) is longer than :data:`MAX_FUNCTION_LINES` lines;
* no module uses another module's private name (``from x import _y``, ``x._y``).

``docs/architecture.md`` explains the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "speechmi_jax"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_FUNCTION_LINES = 80

# Lowest first. A module may import modules of its own layer or of a lower one.
LAYERS = (
    ("base", ("units", "frames", "interrupt", "locks", "rundir", "distributed", "configs.arg", "configs.ranges",
              "analysis.results")),
    ("data", ("data", "zoo")),
    ("encoders", ("encoders",)),
    ("features", ("features",)),
    ("training", ("training",)),
    ("estimators", ("estimators",)),
    ("ssl", ("ssl", "configs.pretrain", "configs.zoo")),
    ("measures", ("measures",)),
    ("configs", ("configs",)),
    ("analysis", ("analysis",)),
    ("drivers", ("pipeline", "ssl.trainer", "zoo.metric", "zoo.ship")),
    ("cli", ("cli", "launch")),
)

# (importing module, imported module) -> why the import stays inside a function.
LOCAL_IMPORTS: dict[tuple[str, str], str] = {
    ("speechmi_jax.launch", "speechmi_jax.cli"): "glibc's malloc settings take hold only before "
                                                 "numpy and jax are imported (launch.py)",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _where(module: str, node: ast.AST) -> str:
    return f"{MODULES[module].relative_to(ROOT.parent)}:{node.lineno}"


def _from_base(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base.pop()
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.AST) -> list[tuple[str, str | None]]:
    """The package modules an import statement loads, each with the name taken from it."""
    out = []
    if isinstance(node, ast.Import):
        out = [(a.name, None) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _from_base(module, node)
        for a in node.names:
            full = f"{base}.{a.name}"
            out.append((full, None) if full in MODULES else (base, a.name))
    return [(t, name) for t, name in out if t == PACKAGE or t.startswith(PACKAGE + ".")]


def _imports():
    """(module, imported module, name or None, node, inside a function) of every import."""
    out = []
    for module, tree in TREES.items():
        local = {id(n) for f in ast.walk(tree)
                 if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            for target, name in _targets(module, node):
                out.append((module, target, name, node, id(node) in local))
    return out


IMPORTS = _imports()


def layer_of(module: str) -> int:
    best, layer = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            full = f"{PACKAGE}.{p}"
            if (module == full or module.startswith(full + ".")) and len(full) > best:
                best, layer = len(full), i
    if layer is None and module == PACKAGE:  # the lazy public facade sits on top
        return len(LAYERS) - 1
    assert layer is not None, f"{module} is in no layer of LAYERS (tests/test_architecture.py)"
    return layer


def _fail(title: str, offenders: list[str]):
    if offenders:
        pytest.fail(f"{title} ({len(offenders)}):\n  " + "\n  ".join(sorted(offenders)),
                    pytrace=False)


def test_every_module_has_a_layer():
    _fail("modules in no layer", [m for m in MODULES if m != PACKAGE
                                  and not any(m == f"{PACKAGE}.{p}" or m.startswith(f"{PACKAGE}.{p}.")
                                              for _, ps in LAYERS for p in ps)])


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, target, _, _, _ in IMPORTS:
        if target != module:
            graph[module].add(target)
    cycles, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    _fail("import cycles", cycles)


def test_imports_point_down():
    names = [name for name, _ in LAYERS]
    _fail("imports from a lower layer to a higher one", [
        f"{_where(m, node)}: {m} ({names[layer_of(m)]}) imports {t} ({names[layer_of(t)]})"
        for m, t, _, node, _ in IMPORTS if layer_of(t) > layer_of(m)])


def test_own_modules_imported_at_the_top():
    _fail("imports of the package's modules inside functions (move them to the module's top, "
          "or list them in LOCAL_IMPORTS with the reason)", [
        f"{_where(m, node)}: {m} imports {t}" + (f" ({name})" if name else "")
        for m, t, name, node, local in IMPORTS if local and (m, t) not in LOCAL_IMPORTS])


def test_local_imports_listed_still_exist():
    found = {(m, t) for m, t, _, _, local in IMPORTS if local}
    _fail("LOCAL_IMPORTS entries no longer found", [f"{k}" for k in LOCAL_IMPORTS if k not in found])


def _body_lines(fn) -> int:
    body = fn.body
    if (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_functions_are_short():
    _fail(f"function bodies over {MAX_FUNCTION_LINES} lines", [
        f"{_where(m, fn)}: {fn.name} has {_body_lines(fn)} lines"
        for m, tree in TREES.items() for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        and _body_lines(fn) > MAX_FUNCTION_LINES])


def test_no_private_names_across_modules():
    offenders = []
    for m, t, name, node, _ in IMPORTS:
        if name and name.startswith("_") and t != m:
            offenders.append(f"{_where(m, node)}: {m} imports {t}.{name}")
    for m, tree in TREES.items():
        bound = {}  # local name -> package module it names
        for mod, t, name, node, _ in IMPORTS:
            if mod != m:
                continue
            for a in node.names:
                if name is None and isinstance(node, ast.ImportFrom) and t.endswith("." + a.name):
                    bound[a.asname or a.name] = t
                elif isinstance(node, ast.Import) and a.asname:
                    bound[a.asname] = t
                elif name is not None and f"{t}.{name}" in MODULES:
                    bound[a.asname or a.name] = f"{t}.{name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and bound[node.value.id] != m
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offenders.append(f"{_where(m, node)}: {m} uses "
                                 f"{bound[node.value.id]}.{node.attr}")
    _fail("private names used across modules", offenders)
