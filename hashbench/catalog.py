"""What ``hashbench list`` shows, without importing the methods.

Importing the built-in method modules imports torch (the deep methods), which takes seconds;
listing them should not. Every built-in method declares its :class:`~hashbench.api.MethodMeta`
as literal keyword arguments in its class body (``meta = MethodMeta(name="itq", ...)``), so
the metadata is read from the source with :mod:`ast`. A module whose metadata is not literal
is imported as usual, and so are third-party plugins (entry points): they are loaded the way
the registry loads them, one broken plugin never hiding the rest.
``tests/test_catalog.py`` checks that this reading equals the registry's for every built-in.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from hashbench.api import MethodMeta


@dataclass(frozen=True)
class Entry:
    """One listed method: its metadata and where it came from (module or ``plugin <dist>``)."""

    meta: MethodMeta
    origin: str


def _literal_meta(tree: ast.Module) -> list[MethodMeta] | None:
    """The literal ``meta = MethodMeta(...)`` of every registered class of a module, or None
    when one of them is not literal (the module is then imported)."""
    metas = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        registered = any((isinstance(d, ast.Name) and d.id == "register")
                         or (isinstance(d, ast.Attribute) and d.attr == "register")
                         for d in node.decorator_list)
        if not registered:
            continue
        call = next((stmt.value for stmt in node.body
                     if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)
                     and any(isinstance(t, ast.Name) and t.id == "meta" for t in stmt.targets)), None)
        if call is None or getattr(call.func, "id", getattr(call.func, "attr", "")) != "MethodMeta":
            return None
        try:
            fields = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
        except ValueError:
            return None
        if call.args or len(fields) != len(call.keywords):
            return None
        metas.append(MethodMeta(**fields))
    return metas


def builtin_entries() -> dict[str, Entry]:
    """Built-in methods by id, read from ``hashbench/methods/*.py`` without importing them
    (except modules whose metadata is not literal)."""
    spec = importlib.util.find_spec("hashbench.methods")
    out: dict[str, Entry] = {}
    for folder in spec.submodule_search_locations or []:
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            module = f"hashbench.methods.{path.stem}"
            metas = _literal_meta(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            if metas is None:
                metas = _imported_metas(module)
            for meta in metas:
                out[meta.name] = Entry(meta, module)
    return out


def _imported_metas(module: str) -> list[MethodMeta]:
    from hashbench import registry

    importlib.import_module(module)
    return [cls.meta for cls in registry.registered().values() if cls.__module__ == module]


def entries() -> dict[str, Entry]:
    """Every method ``hashbench list`` shows, sorted by id: the built-ins (read statically) and
    the plugins (imported through their entry points)."""
    from hashbench import registry

    found = builtin_entries()
    for name, (cls, origin) in registry.plugins().items():
        found[name] = Entry(cls.meta, origin)
    return dict(sorted(found.items()))
