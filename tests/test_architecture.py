"""The rooms of the package and the one direction of their imports (docs/ARCHITECTURE.md): read from the source, so a
new import that goes upwards, or a runtime module that reaches into the planner, fails here rather than in review."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sentiric_cli"

# each room, and the rooms below it that it may import (itself always)
BELOW = {
    "errors": set(),
    "machine": {"errors"},
    "settings": {"errors"},
    "bundled": {"errors"},
    "gguf": {"errors", "machine"},
    "engine": {"errors", "machine", "settings", "gguf"},
    "longdoc": {"errors", "machine", "settings", "gguf", "engine"},
    # llama.cpp only through the engine's parameter builders and its log (the dry run in a child, plan/measure.py)
    "plan": {"errors", "machine", "settings", "bundled", "gguf", "engine.params", "engine.llamalog"},
    "serve": {"errors", "machine", "settings", "bundled", "gguf", "engine", "longdoc"},
}
COMMANDS = {"cli", "run", "plan.command", "serve.command", "__main__", "__init__"}  # the top: may import any room


def _room(module: str) -> str:
    return module.split(".")[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("sentiric_cli"):
            base = node.module.removeprefix("sentiric_cli").lstrip(".")
            names = [f"{base}.{a.name}".lstrip(".") for a in node.names] if not base else [base]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            out.append((node.lineno, "<relative>"))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.removeprefix("sentiric_cli.")) for a in node.names if a.name.startswith("sentiric_cli.")]
    return out


def _allowed(source: str, target: str) -> bool:
    room = _room(source)
    if source in COMMANDS or _room(target) == room or target == "__version__":
        return True
    return any(target == b or target.startswith(b + ".") for b in BELOW[room])


def test_every_import_goes_downwards():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        assert _room(source) in BELOW or source in COMMANDS, f"{source}: a module outside the rooms of ARCHITECTURE.md"
        for line, target in _imports(path):
            if target == "<relative>" or not _allowed(source, target):
                wrong.append(f"{source}:{line} imports {target}")
    assert not wrong, "imports that go upwards or sideways (docs/ARCHITECTURE.md):\n" + "\n".join(wrong)


def test_the_rule_catches_an_upward_import():
    assert not _allowed("engine.core", "plan.memory")  # the runtime never imports the planner
    assert not _allowed("engine.sequence", "serve.scheduler")
    assert not _allowed("plan.measure", "engine.core")  # the planner reaches llama.cpp only through the parameters
    assert not _allowed("plan.measure", "engine.bindings")
    assert not _allowed("gguf.header", "engine.params")
    assert _allowed("plan.measure", "engine.params") and _allowed("serve.command", "plan.planner")
