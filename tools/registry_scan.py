"""The method registry read from source, without importing it (importing it imports torch, which
alone takes one to several seconds): every `@register("name")` class under reproductions/image,
video, audio and omni, with its `paper` class attribute (inherited from a base class in the same
module when not set). A test checks that this agrees with `reproductions.registry.methods()`."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from .catalog import ROOT

FAMILIES = ("image", "video", "audio", "omni")


@dataclass(frozen=True)
class Registered:
    """One registered method as its source states it."""

    name: str
    cls: str
    paper: str | None
    file: str  # relative to the repository
    line: int


def _paper_of(node: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> str | None:
    """The class's `paper = "..."` (or `paper: ClassVar[...] = "..."`), else its local base's."""
    for statement in node.body:
        target, value = None, None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign):
            target, value = statement.target, statement.value
        if isinstance(target, ast.Name) and target.id == "paper" and value is not None:
            return value.value if isinstance(value, ast.Constant) else None
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes and classes[base.id] is not node:
            return _paper_of(classes[base.id], classes)
    return None


def scan(root: Path = ROOT) -> dict[str, Registered]:
    """Every registered method by name, sorted by name."""
    found: dict[str, Registered] = {}
    for family in FAMILIES:
        for path in sorted((root / "reproductions" / family).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
            for node in classes.values():
                for decorator in node.decorator_list:
                    if (
                        isinstance(decorator, ast.Call)
                        and getattr(decorator.func, "id", getattr(decorator.func, "attr", None)) == "register"
                        and decorator.args
                        and isinstance(decorator.args[0], ast.Constant)
                    ):
                        name = decorator.args[0].value
                        found[name] = Registered(
                            name, node.name, _paper_of(node, classes),
                            str(path.relative_to(root)), decorator.lineno,
                        )
    return dict(sorted(found.items()))


def imported() -> dict[str, Registered]:
    """The same, from the real registry (imports torch and every method module)."""
    import inspect

    from reproductions.registry import methods

    result = {}
    for name, cls in methods().items():
        path = Path(inspect.getsourcefile(cls) or "?").resolve()
        try:
            shown = str(path.relative_to(ROOT))
        except ValueError:
            shown = str(path)
        result[name] = Registered(name, cls.__name__, cls.paper, shown, inspect.getsourcelines(cls)[1])
    return result
