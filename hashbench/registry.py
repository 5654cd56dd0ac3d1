"""The method registry.

Three sources, all lazy (nothing is imported until a method is first looked up; looking up
a built-in by name imports only its own module, found from the metadata :mod:`hashbench.catalog`
reads statically, so ``run --methods lsh`` never imports torch):

1. every module of the built-in package ``hashbench.methods`` (the repo's ``methods/``
   folder), found with ``pkgutil``: adding a method is adding one file;
2. third-party packages that declare an entry point in the group ``hashbench.methods``
   (the value may be a :class:`~hashbench.api.Hasher` subclass or a module whose import
   registers its classes with :func:`register`);
3. classes registered by hand with :func:`register` (tests, notebooks).

A plugin that fails to import produces a warning naming it and is skipped: one broken
plugin never breaks ``hashbench list`` or the other methods.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
import warnings
from importlib.metadata import entry_points
from types import ModuleType

from hashbench.api import Hasher, validate_meta
from hashbench.errors import UsageError

ENTRY_POINT_GROUP = "hashbench.methods"

_REGISTRY: dict[str, type[Hasher]] = {}
_ORIGIN: dict[str, str] = {}
_loaded = False


class PluginWarning(UserWarning):
    """A plugin could not be loaded; the rest of the registry still works."""


def register(cls: type[Hasher]) -> type[Hasher]:
    """Class decorator: add ``cls`` to the registry under ``cls.meta.name``.

    The class is validated first (:func:`hashbench.api.validate_meta`: id format, non-empty
    title and citation, known family, modalities and requirements, ``bits`` in ``__init__``,
    ``asymmetric`` consistent with the class); a breach raises
    :class:`~hashbench.errors.MethodDefinitionError` naming it."""
    meta = validate_meta(cls)
    existing = _REGISTRY.get(meta.name)
    if existing is not None and existing is not cls and _qualified(existing) != _qualified(cls):
        raise ValueError(
            f"method id {meta.name!r} is taken by {_qualified(existing)}; "
            f"{_qualified(cls)} must use another id"
        )
    _REGISTRY[meta.name] = cls
    _ORIGIN.setdefault(meta.name, cls.__module__)
    return cls


def unregister(name: str) -> None:
    """Remove a method (used by tests that register throw-away plugins)."""
    _REGISTRY.pop(name, None)
    _ORIGIN.pop(name, None)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_builtins() -> None:
    package = importlib.import_module("hashbench.methods")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{package.__name__}.{info.name}")


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", None) or "unknown package"
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any plugin failure must stay contained
            warnings.warn(
                f"hashbench plugin {ep.name!r} ({ep.value}, from {dist}) failed to load "
                f"and was skipped: {type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=2,
            )
            continue
        if isinstance(obj, type) and issubclass(obj, Hasher):
            try:
                register(obj)
            except (TypeError, ValueError) as exc:
                warnings.warn(
                    f"hashbench plugin {ep.name!r} (from {dist}) was skipped: {exc}",
                    PluginWarning,
                    stacklevel=2,
                )
                continue
            _ORIGIN[obj.meta.name] = f"plugin {dist}"
        elif not isinstance(obj, ModuleType):
            warnings.warn(
                f"hashbench plugin {ep.name!r} (from {dist}) points at {obj!r}, "
                "which is neither a Hasher subclass nor a module; skipped",
                PluginWarning,
                stacklevel=2,
            )


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    _load_builtins()
    _load_entry_points()


def available() -> dict[str, type[Hasher]]:
    """All registered methods by id, sorted by id."""
    _ensure_loaded()
    return dict(sorted(_REGISTRY.items()))


def registered() -> dict[str, type[Hasher]]:
    """The methods registered so far, loading nothing (see :func:`available`)."""
    return dict(_REGISTRY)


def plugins() -> dict[str, tuple[type[Hasher], str]]:
    """Plugin methods only (entry points), by id, with their origin, without importing the
    built-in modules (``hashbench list`` reads their metadata statically). The registry itself
    is left as it was: built-ins still take precedence when it loads."""
    if _loaded:
        return {name: (cls, _ORIGIN[name]) for name, cls in sorted(_REGISTRY.items())
                if _ORIGIN.get(name, "").startswith("plugin")}
    saved = dict(_REGISTRY), dict(_ORIGIN)
    try:
        _load_entry_points()
        return {name: (cls, _ORIGIN[name]) for name, cls in sorted(_REGISTRY.items())
                if _ORIGIN.get(name, "").startswith("plugin")}
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved[0])
        _ORIGIN.clear()
        _ORIGIN.update(saved[1])


def origin(name: str) -> str:
    """Where a method came from: its module, or ``plugin <distribution>``."""
    if name not in _ORIGIN:
        _ensure_loaded()
    return _ORIGIN.get(name, "unknown")


def suggest(name: str, choices: list[str]) -> str:
    """A " (did you mean ...?)" suffix for an unknown name, or "" when nothing is close."""
    close = difflib.get_close_matches(name.lower(), choices, n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


@functools.cache
def _builtin_modules() -> dict[str, str]:
    """Built-in method id -> its module, read without importing the modules."""
    from hashbench import catalog

    return {name: entry.origin for name, entry in catalog.builtin_entries().items()}


def _lookup(key: str) -> type[Hasher] | None:
    """The class of ``key`` if it is registered or a built-in, importing only its module."""
    if key not in _REGISTRY and not _loaded and key in _builtin_modules():
        importlib.import_module(_builtin_modules()[key])
    return _REGISTRY.get(key)


def is_known(name: str) -> bool:
    """Whether ``name`` is a method id (registered, built-in or a plugin's), loading the
    plugins only for a name that is neither registered nor built in."""
    key = name.strip().lower()
    return key in _REGISTRY or key in _builtin_modules() or key in available()


def get(name: str) -> type[Hasher]:
    """The class registered as ``name`` (case-insensitive); unknown names raise UsageError."""
    key = name.strip().lower()
    found = _lookup(key)
    if found is not None:
        return found
    if _loaded:
        methods = available()
        if key in methods:
            return methods[key]
    found_plugins = plugins()
    if key in found_plugins:  # not a built-in's id (a built-in would have been found above)
        cls, where = found_plugins[key]
        register(cls)
        _ORIGIN[key] = where
        return cls
    known = sorted(set(_REGISTRY) | set(_builtin_modules()) | set(found_plugins))
    raise UsageError(f"unknown method {name!r}{suggest(key, known)} (known: {', '.join(known)})")


def resolve(names: str | list[str]) -> list[type[Hasher]]:
    """Parse ``"itq,lsh"`` or ``"all"`` into method classes, in the order given."""
    if isinstance(names, str):
        names = [n for n in (p.strip() for p in names.split(",")) if n]
    if not names:
        raise UsageError("no method given; use --methods NAME[,NAME...] or --methods all")
    if [n.lower() for n in names] == ["all"]:
        return list(available().values())
    seen: dict[str, type[Hasher]] = {}
    for n in names:
        cls = get(n)
        seen.setdefault(cls.meta.name, cls)
    return list(seen.values())
