"""The package's rooms and the one way its imports run (../shared/DESIGN.md): a module imports only from its own
room or the rooms below it, so a newcomer can read the code bottom up and a change low down cannot pull in the
evaluation or the video pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

import stainless

PACKAGE = Path(stainless.__file__).parent

# bottom to top; the same level may import from itself
LEVELS = {
    "utils": 0, "io": 0,
    "data": 1,
    "models": 2, "callbacks": 2,
    "metrics": 3,
    "inference": 4,
    "evaluation": 5, "video": 5, "export": 5,
    "train": 6, "evaluate": 6, "demo": 6,
}
# The Lightning modules are the one exception DESIGN.md names: they live with the networks in models/ but score
# their validation with the metrics and predict whole fields by tiles, as evaluate.py does.
EXEMPT = {"models/pix2pix_module.py", "models/segmentation_module.py"}


def room_of(module: str) -> str:
    """``stainless.metrics.objects`` -> ``metrics``."""
    return module.split(".")[1]


def stainless_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``stainless.*`` import in a file, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stainless."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("stainless.")]
    return found


def upward_imports() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "__init__.py" or relative in EXEMPT:
            continue
        here = relative.split("/")[0].removesuffix(".py")
        for line, module in stainless_imports(path):
            if LEVELS[room_of(module)] > LEVELS[here]:
                wrong.append(f"{relative}:{line} imports {module} ({room_of(module)} is above {here})")
    return wrong


def test_every_module_is_in_a_room_with_a_level():
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert loose | rooms <= set(LEVELS), f"not placed in the layout: {sorted((loose | rooms) - set(LEVELS))}"
    assert loose <= {"io", "train", "evaluate", "demo"}, f"loose top-level modules: {sorted(loose)}"
    assert {"inference", "evaluation", "video"} <= rooms


def test_imports_run_one_way():
    wrong = upward_imports()
    assert not wrong, "imports that run back up:\n" + "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The check above is only worth something if it catches one: a metrics module importing the evaluation."""
    fake = tmp_path / "stainless"
    (fake / "metrics").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "metrics" / "__init__.py").write_text("")
    (fake / "metrics" / "bad.py").write_text("def f():\n    from stainless.evaluation.report import write_report\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert upward_imports() == ["metrics/bad.py:2 imports stainless.evaluation.report (evaluation is above metrics)"]
