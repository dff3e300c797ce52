"""The package's shape: which layer may import which, no import circle, and the torch-free parts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

OANET = Path(__file__).resolve().parents[1] / "oanet"

# What each package may import from oanet (besides itself and the top-level modules: errors, config,
# dataclass_codec, fileio, progress, parallel, orders, presets, distributed, result, viz). Downward only.
ALLOWED = {
    "data": set(),
    "evaluation": {"data"},
    "model": {"data"},
    "inference": {"data", "evaluation", "model"},
    "runtime": {"data", "inference"},
    "export": {"data", "model", "runtime"},
    "train": {"data", "model", "evaluation"},
    "experiments": {"data", "model", "evaluation", "inference", "train", "report"},
    "convert": {"data"},
    "srm": {"data", "model", "evaluation", "train", "merge"},
    "merge": {"data", "model", "evaluation"},
    "integrations": {"data", "model", "inference", "runtime"},
    "report": {"data", "evaluation"},
    "commands": {"data", "model", "evaluation", "inference", "runtime", "export", "train", "experiments", "convert",
                 "srm", "merge", "report"},
}
TOP_LEVEL_MAY_NOT = ("oanet.model", "oanet.evaluation", "oanet.inference", "oanet.runtime", "oanet.export",
                     "oanet.train", "oanet.experiments", "oanet.commands", "oanet.convert", "oanet.srm", "oanet.merge",
                     "oanet.integrations", "oanet.report")


def module_name(path: Path) -> str:
    rel = path.relative_to(OANET.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The oanet modules ``path`` imports anywhere in it (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("oanet"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("oanet"))
    return names


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in OANET.rglob("*.py")}
    return {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}


def test_packages_import_only_downward():
    bad = []
    for name, targets in graph().items():
        parts = name.split(".")
        for target in targets:
            tparts = target.split(".")
            if len(parts) == 2 and not (OANET / parts[1]).is_dir():  # a top-level module
                if target.startswith(TOP_LEVEL_MAY_NOT) and name != "oanet":
                    bad.append(f"{name} -> {target}")
                continue
            if len(parts) < 2 or len(tparts) < 2 or tparts[1] == parts[1] or not (OANET / tparts[1]).is_dir():
                continue
            if parts[1] in ALLOWED and tparts[1] not in ALLOWED[parts[1]] and tparts[1] != "_ext":
                bad.append(f"{name} -> {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_circle():
    edges = graph()
    edges.pop("oanet", None)  # its lazy __getattr__ imports only on attribute access
    for name in edges:
        edges[name].discard("oanet")
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if seen.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for node in sorted(edges):
        if node not in seen:
            visit(node)
    # A package's __init__ that re-exports its own modules is not a circle: Python imports those first.
    real = [c for c in cycles if not any(edges_is_reexport(a, b) for a, b in zip(c, c[1:]))]
    assert not real, "import circles:\n" + "\n".join(" -> ".join(c) for c in real)


def edges_is_reexport(a: str, b: str) -> bool:
    """``a`` is a package __init__ importing its own submodule ``b``: Python handles that order."""
    return (OANET.parent / a.replace(".", "/") / "__init__.py").is_file() and b.startswith(a + ".")


def test_torch_free_packages_import_no_torch():
    code = (
        "import sys\n"
        "import oanet, oanet.data, oanet.evaluation, oanet.evaluation.pq, oanet.inference, oanet.runtime, oanet.orders\n"
        "import oanet.inference.evaluate, oanet.inference.predict, oanet.inference.video, oanet.inference.sinks\n"
        "import oanet.inference.loop, oanet.inference.base, oanet.runtime.onnx_predictor, oanet.presets\n"
        "import oanet.report\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_public_names_resolve():
    import oanet
    import oanet.data
    import oanet.evaluation
    import oanet.experiments
    import oanet.inference
    import oanet.model
    import oanet.runtime
    import oanet.train

    for package in (oanet, oanet.data, oanet.evaluation, oanet.inference, oanet.model, oanet.runtime, oanet.train,
                    oanet.experiments):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
    assert oanet.Predictor is oanet.inference.Predictor


def test_no_engine_package_left():
    assert not (OANET / "engine").exists()
