"""`hashbench list` reads the built-in methods' metadata without importing them (no torch),
and what it reads is what the registry registers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hashbench import catalog, registry
from hashbench.cli import main
from tests.test_registry import fresh_registry  # noqa: F401 - fixture


def test_static_metadata_equals_the_registry():
    static = catalog.builtin_entries()
    imported = {name: cls for name, cls in registry.available().items()
                if registry.origin(name).startswith("hashbench.methods.")}
    assert set(static) == set(imported) and len(static) > 10
    for name, cls in imported.items():
        assert static[name].meta == cls.meta, name
        assert static[name].origin == cls.__module__


def test_list_imports_no_torch_and_names_every_method():
    code = ("import sys, io, contextlib\nfrom hashbench.cli import main\n"
            "out = io.StringIO()\nwith contextlib.redirect_stdout(out): rc = main(['list', '--json'])\n"
            "print(rc, 'torch' in sys.modules, 'mlflow' in sys.modules)\nprint(out.getvalue())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    first, listing = result.stdout.split("\n", 1)
    assert first == "0 False False"
    names = [m["name"] for m in json.loads(listing)["methods"]]
    assert {"adsh", "itq", "lsh", "ddash"} <= set(names) and names == sorted(names)


def test_only_literal_metadata_is_read_statically():
    import ast

    tree = ast.parse("@register\nclass X:\n    meta = MethodMeta(name=NAME, title='X', citation='c', family='shallow')\n")
    assert catalog._literal_meta(tree) is None
    tree = ast.parse("@register\nclass X:\n    meta = MethodMeta(name='x', title='X', citation='c', family='shallow')\n")
    (meta,) = catalog._literal_meta(tree)
    assert (meta.name, meta.family) == ("x", "shallow")


def test_bare_hashbench_prints_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "list" in out and "run" in out and "report" in out and "error" not in out


@pytest.mark.usefixtures("fresh_registry")
def test_list_shows_plugins_and_survives_a_broken_one(tmp_path, monkeypatch, capsys):
    from tests.test_registry import GOOD_PLUGIN, _fake_distribution

    _fake_distribution(tmp_path, "good_plugin", "[hashbench.methods]\nsignfirst = good_plugin_mod:SignOfFirst\n",
                       {"good_plugin_mod": GOOD_PLUGIN})
    _fake_distribution(tmp_path, "broken_plugin", "[hashbench.methods]\nbroken = broken_plugin_mod:Nope\n",
                       {"broken_plugin_mod": "raise ImportError('missing dependency xyz')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert "[plugin good_plugin]" in captured.out and "itq" in captured.out
    assert "missing dependency xyz" in captured.err
    assert "signfirst" not in registry.registered()  # listing leaves the registry as it was
