"""The layout is part of the design (docs/architecture.md): these tests read the package's imports and keep it so.

* layers: a module imports only from its own layer or the ones below it (imports inside functions count too);
* no import cycle between modules;
* no experiment imports another experiment (shared pieces live in the library or in an ``experiments/_kit``);
* no module over ~600 lines without the reason written at its top;
* every public module names its public API in ``__all__``.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "flowvar"

LAYERS: list[tuple[str, list[str]]] = [
    ("foundation: errors, result and verdict types, durable writes, statistics", [
        "flowvar._version", "flowvar.errors", "flowvar.results", "flowvar.files", "flowvar.rules", "flowvar.stats",
        "flowvar.seeding", "flowvar.logs"]),
    ("maths: distributions, couplings and exact OT, interpolants, losses, models, solvers, the Gaussian theory", [
        "flowvar.distributions", "flowvar.sampling", "flowvar.models", "flowvar.models.*", "flowvar.gaussian",
        "flowvar.ot", "flowvar.ot.*", "flowvar.couplings", "flowvar.interpolants", "flowvar.loss",
        "flowvar.distributed"]),
    ("tools: gradient variance, metrics, data, training, the σ rule", [
        "flowvar.variance", "flowvar.variance.*", "flowvar.metrics", "flowvar.metrics.*", "flowvar.data",
        "flowvar.train", "flowvar.advisor"]),
    ("experiment machinery: registry, configs, contexts, cache, report", [
        "flowvar.experiments", "flowvar.experiments.base", "flowvar.experiments.registry",
        "flowvar.experiments.config", "flowvar.experiments._*", "flowvar.cache_key", "flowvar.cache",
        "flowvar.report", "flowvar.report.*"]),
    ("applications: the experiments, the runner, reproduce, sweep, advise, audit", [
        "flowvar.experiments.*", "flowvar.runner", "flowvar.reproduce", "flowvar.cache_admin", "flowvar.sweep",
        "flowvar.sweep.*",
        "flowvar.advise", "flowvar.audit", "flowvar.audit.*", "flowvar.integrations", "flowvar.integrations.*"]),
    ("front: the command line and the package root", ["flowvar.cli", "flowvar.__main__", "flowvar"]),
]
MAX_LINES = 650  # "about 600"
LONG_REASON = "Why this module is long:"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The first layer whose patterns match (order matters: ``experiments.base`` before ``experiments.*``)."""
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: place it (and in "
                         f"docs/architecture.md)")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str) -> set[str]:
    """Every flowvar module ``module`` imports (``from flowvar import x`` names the submodule x when it is one)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # `if TYPE_CHECKING:` imports are annotations, never executed
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "flowvar")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "flowvar":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    found.discard(module)
    return {m for m in found if m in MODULES}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_is_placed_in_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_from_a_higher_layer() -> None:
    upward = [f"{m} ({LAYERS[layer_of(m)][0].split(':')[0]}) imports {d} ({LAYERS[layer_of(d)][0].split(':')[0]})"
              for m, deps in GRAPH.items() for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_no_experiment_imports_another() -> None:
    experiments = {m for m in MODULES if m.startswith("flowvar.experiments.")
                   and not m.rpartition(".")[2].startswith("_")
                   and m.rpartition(".")[2] not in ("base", "registry", "config")}
    crossing = [f"{m} imports {d}" for m in sorted(experiments) for d in sorted(GRAPH[m] & experiments)]
    assert not crossing, crossing


def test_no_experiment_seeds_torch_itself() -> None:
    """One seed story (flowvar.seeding): experiments derive their generators from the run's seed by name
    (ctx.generator, ctx.derive_seed, ctx.global_rng, ctx.replicate), never with a manual_seed of their own."""
    calls = [f"{m}:{node.lineno}" for m, path in MODULES.items() if m.startswith("flowvar.experiments")
             for node in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(node, ast.Call)
             and (getattr(node.func, "attr", None) == "manual_seed" or getattr(node.func, "id", None) == "manual_seed")]
    assert not calls, f"manual_seed called in experiments (use the RunContext's named streams): {calls}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_short_or_say_why(module: str) -> None:
    text = MODULES[module].read_text()
    lines = text.count("\n")
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert lines <= MAX_LINES or LONG_REASON in doc, (
        f"{MODULES[module].relative_to(SRC.parent)} has {lines} lines: split it by concept, or write "
        f"'{LONG_REASON} ...' in its docstring")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.rpartition(".")[2].startswith("_")))
def test_public_modules_name_their_api(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    names = {t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    assert "__all__" in names, f"{module} has no __all__: name its public API"


def test_the_root_names_the_public_api_and_imports_it_lazily() -> None:
    import subprocess
    import sys

    import flowvar

    missing = [n for n in flowvar.__all__ if getattr(flowvar, n, None) is None]
    assert not missing, missing
    probe = "import sys, flowvar; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "`import flowvar` must not import torch (the CLI's start-up time)"
