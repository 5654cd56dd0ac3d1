from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from hashbench import registry
from hashbench.api import Hasher, MethodMeta
from hashbench.errors import MethodDefinitionError, UsageError


def test_builtins_are_discovered_without_an_import_list():
    methods = registry.available()
    assert {"itq", "lsh"} <= set(methods)
    assert methods["itq"].meta.title == "ITQ"
    assert registry.origin("itq") == "hashbench.methods.itq"


def test_unknown_method_suggests_close_names():
    with pytest.raises(UsageError, match="did you mean 'itq'"):
        registry.get("itqq")
    with pytest.raises(UsageError, match="unknown method 'zzz'"):
        registry.get("zzz")


def test_resolve_all_and_lists():
    assert [c.meta.name for c in registry.resolve("lsh, itq")] == ["lsh", "itq"]
    assert set(c.meta.name for c in registry.resolve("all")) >= {"itq", "lsh"}
    assert [c.meta.name for c in registry.resolve("ITQ,itq")] == ["itq"]
    with pytest.raises(UsageError):
        registry.resolve(" , ")


def test_register_rejects_duplicate_ids_and_missing_meta():
    with pytest.raises(MethodDefinitionError, match="meta"):
        registry.register(type("NoMeta", (Hasher,), {}))

    class Impostor(Hasher):
        meta = MethodMeta(name="itq", title="x", citation="x", family="shallow")

        def fit(self, data, ctx):
            return self

        def encode(self, inputs):
            return np.ones((len(inputs), self.bits), np.int8)

    with pytest.raises(ValueError, match="taken"):
        registry.register(Impostor)
    assert registry.get("itq").__module__ == "hashbench.methods.itq"


def _fake_distribution(root, dist: str, entry_points: str, modules: dict[str, str]) -> None:
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


GOOD_PLUGIN = """
    import numpy as np
    from hashbench.api import Hasher, MethodMeta, binarize

    class SignOfFirst(Hasher):
        meta = MethodMeta(name="signfirst", title="SignFirst", citation="test plugin",
                          family="data-independent")

        def __init__(self, bits=32):
            self.bits = bits

        def fit(self, data, ctx):
            self.mean_ = np.asarray(data.inputs).mean(axis=0)
            return self

        def encode(self, inputs):
            self._check_fitted("mean_")
            x = np.asarray(inputs) - self.mean_
            return binarize(np.resize(x, (len(x), self.bits)))
"""


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry that reloads built-ins and entry points, restored afterwards."""
    saved = dict(registry._REGISTRY), dict(registry._ORIGIN)
    monkeypatch.setattr(registry, "_loaded", False)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[0])
    registry._ORIGIN.clear()
    registry._ORIGIN.update(saved[1])


def test_entry_point_plugins_load_lazily_and_broken_ones_only_warn(
        tmp_path, monkeypatch, fresh_registry):
    _fake_distribution(tmp_path, "good_plugin",
                       "[hashbench.methods]\nsignfirst = good_plugin_mod:SignOfFirst\n",
                       {"good_plugin_mod": GOOD_PLUGIN})
    _fake_distribution(tmp_path, "broken_plugin",
                       "[hashbench.methods]\nbroken = broken_plugin_mod:Nope\n",
                       {"broken_plugin_mod": "raise ImportError('missing dependency xyz')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        methods = registry.available()
    assert "signfirst" in methods and "itq" in methods
    assert registry.origin("signfirst") == "plugin good_plugin"
    messages = [str(w.message) for w in caught if issubclass(w.category, registry.PluginWarning)]
    assert len(messages) == 1
    assert "'broken'" in messages[0] and "broken_plugin" in messages[0]
    assert "missing dependency xyz" in messages[0]
    assert "good_plugin_mod" in sys.modules


def test_looking_up_a_builtin_imports_only_its_module(tmp_path):
    """``run --methods lsh`` needs neither torch nor the other methods' modules."""
    probe = ("import sys\n"
             "from hashbench import registry\n"
             "assert registry.get('LSH').meta.name == 'lsh' and registry.origin('lsh') == 'hashbench.methods.lsh'\n"
             "loaded = sorted(m for m in sys.modules if m.startswith('hashbench.methods.'))\n"
             "print(loaded, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['hashbench.methods.lsh'] False"


def test_a_plugin_is_found_without_the_builtins_and_unknown_names_list_both(
        tmp_path, monkeypatch, fresh_registry):
    _fake_distribution(tmp_path, "good_plugin",
                       "[hashbench.methods]\nsignfirst = good_plugin_mod:SignOfFirst\n",
                       {"good_plugin_mod": GOOD_PLUGIN})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.get("signfirst").meta.name == "signfirst"
    assert registry.origin("signfirst") == "plugin good_plugin"
    assert not registry._loaded
    with pytest.raises(UsageError) as err:
        registry.get("signfrst")
    assert "did you mean 'signfirst'" in str(err.value) and "itq" in str(err.value)
