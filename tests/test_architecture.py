"""The package's layout holds: imports only go down the layers of DESIGN.md, no module imports
another that imports it back, and modules and functions stay small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bitfit"

# DESIGN.md's layers, top first: a module may import from its own layer (without a cycle) and
# from the layers below it, never from one above. A package (bitfit/data/) is one module here.
LAYERS: list[set[str]] = [
    {"__init__", "__main__", "cli"},  # the command line
    {"commands", "orchestrate", "flags"},  # the commands, the Prefect flows' bodies, the flags
    {"pipeline", "reproduce", "entry"},  # the workflows, and what every command does around them
    {"compare", "study", "studies", "tracking", "registry", "_pyfunc", "pool", "space",
     "space_schema", "export"},
    {"train", "tracker", "results", "artifacts", "lora", "evaluation", "optim", "resume"},
    {"models", "data", "metrics", "services", "trainconfig", "hardware"},
    {"methods", "biases", "tasks", "settings", "checks", "dropout", "interrupts", "report", "lazy",
     "verdicts", "ttest", "champion", "hf_modeling"},
]
RANK = {name: depth for depth, layer in enumerate(LAYERS) for name in layer}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, list[Path]]:
    """Each top-level module or package of bitfit and its files."""
    found: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        found.setdefault(rel.parts[0].removesuffix(".py"), []).append(path)
    return found


def _imports(path: Path) -> set[str]:
    """The bitfit modules a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "bitfit":
                names.update(a.name for a in node.names)
            elif node.module.startswith("bitfit."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("bitfit."))
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for p in paths for m in _imports(p) if m in modules and m != name}
            for name, paths in modules.items()}


def test_every_module_has_a_layer_and_imports_only_go_down():
    graph = _graph()
    unplaced = sorted(set(graph) - set(RANK))
    assert not unplaced, f"put {unplaced} in a layer of LAYERS (and DESIGN.md)"
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                    if RANK[b] < RANK[a])
    assert not upward, f"imports that climb a layer: {upward}"


def test_no_two_modules_import_each_other_even_through_others():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, name, nxt])}"
            if nxt not in state:
                walk(nxt, [*path, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [])


def test_the_models_and_artifacts_do_not_import_training_code():
    graph = _graph()
    training = {"train", "lora", "optim", "results", "evaluation", "study", "compare"}
    assert not graph["models"] & training
    assert not graph["artifacts"] & (training - {"lora"})  # applying a LoRA artifact adds adapters


def test_modules_and_functions_stay_short():
    long_modules, long_functions = [], []
    for paths in _modules().values():
        for path in paths:
            text = path.read_text()
            rel = path.relative_to(ROOT)
            if text.count("\n") > MAX_MODULE_LINES:
                long_modules.append(f"{rel} ({text.count(chr(10))} lines)")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                    if length > MAX_FUNCTION_LINES:
                        long_functions.append(f"{rel}:{node.name} ({length} lines)")
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"
