"""The package's layering (docs/DESIGN.md section 2): imports run downward only.

Every import of a ``unimodal_free`` module counts, at the top of a file or inside a function: an import
hidden in a function is still a dependency. Read from the source with ``ast``; nothing is imported.
"""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "unimodal_free"

# Dependencies the design rules out, whatever else changes (package -> packages it must not import).
FORBIDDEN = {
    "modalities": {"*"},  # the table sits at the bottom: it imports nothing of the package
    "bounded_read": {"*"},  # a leaf every layer reads outside files through
    "config": {"batch", "data", "model", "objective", "store", "train", "eval", "embedder"},
    "data": {"model", "objective", "store", "train", "eval", "embedder"},
    "model": {"objective", "data", "store", "train", "eval", "embedder"},  # tensors in, latents out
    "objective": {"data", "store", "train", "eval", "embedder"},
    "store": {"train", "eval", "embedder", "objective"},  # the read side lies below train/ and eval/
    "eval": {"train", "experiments", "bench", "search", "explore"},
    "embedder": {"train", "eval"},
    "search": {"train", "experiments", "bench", "explore"},  # a CLI over embedder/, data/ and eval/'s flag checks
    "explore": {"train", "experiments", "bench"},  # the browser page over search/ (ranking, cache, media)
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports (``from a.b import c`` names a.b.c when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("unimodal_free"):
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("unimodal_free")}
    return found


def module_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_graph(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    graph = defaultdict(set)
    for source, targets in modules.items():
        for target in targets:
            if package_of(source) != package_of(target) and package_of(target):
                graph[package_of(source)].add(package_of(target))
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a path (first node repeated at the end), or [] when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_module_imports_itself_through_others():
    assert cycle_in(module_graph()) == []


def test_packages_import_downward():
    graph = package_graph(module_graph())
    assert cycle_in(graph) == [], "packages importing each other"
    broken = sorted(f"{source} -> {target}" for source, banned in FORBIDDEN.items()
                    for target in graph.get(source, ()) if "*" in banned or target in banned)
    assert broken == []


def test_the_checks_see_a_cycle_and_a_hidden_import(tmp_path):
    """The reader counts imports inside functions and the cycle finder finds a cycle of three."""
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from unimodal_free.data.loading.loader import make_eval_loader\n")
    assert imports_of(source, {"unimodal_free.data.loading.loader"}) == {"unimodal_free.data.loading.loader"}
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": {"c"}, "d": {"a"}}) == []


# data/'s sub-packages, bottom first: each imports only those before it (corpora/ converts with all of them).
DATA_LAYERS = ["reading", "writing", "demo", "loading", "rewriting", "corpora"]


def test_data_sub_packages_import_downward():
    """Every data module lies in one of the sub-packages, and imports none listed after its own."""
    modules = module_graph()
    layer = {name: name.split(".")[2] for name in modules if name.startswith("unimodal_free.data.")}
    assert sorted({m for m, sub in layer.items() if sub not in DATA_LAYERS}) == []
    upward = sorted(f"{source} -> {target}" for source, targets in modules.items() if source in layer
                    for target in targets if target in layer
                    and DATA_LAYERS.index(layer[target]) > DATA_LAYERS.index(layer[source]))
    assert upward == []


def test_only_the_launcher_imports_the_command_line():
    """The trainer and checkpointing take RunSetup and the exit codes from train/run_setup.py, not train/cli.py."""
    importers = sorted(name for name, targets in module_graph().items() if "unimodal_free.train.cli" in targets)
    assert importers == ["unimodal_free.train"]
