"""`hashbench new-method`: the generated method passes every conformance check as it is, and
the command refuses bad or taken ids and never overwrites a file."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from hashbench import registry
from hashbench.cli import main


def test_generated_method_and_test_pass(tmp_path, capsys, monkeypatch):
    assert main(["new-method", "my-hash", "--dir", str(tmp_path / "m"), "--tests-dir", str(tmp_path / "t")]) == 0
    assert "wrote" in capsys.readouterr().out
    source = (tmp_path / "m" / "my_hash.py").read_text()
    assert 'name="my-hash"' in source and "ctx.rng" in source and "_check_fitted" in source
    spec = importlib.util.spec_from_file_location("test_my_hash", tmp_path / "t" / "test_my_hash.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "test_my_hash", module)
    spec.loader.exec_module(module)
    try:
        module.test_my_hash_passes_every_conformance_check()  # every check, on the real class
        assert module._method_class().meta.name == "my-hash"
    finally:
        registry.unregister("my-hash")


@pytest.mark.parametrize("name, needle", [("My Hash", "lower case"), ("itq", "is taken")])
def test_bad_or_taken_ids_are_one_line_errors(tmp_path, capsys, name, needle):
    assert main(["new-method", name, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and not list(tmp_path.iterdir())


def test_existing_files_are_never_overwritten(tmp_path, capsys):
    (tmp_path / "test_mine.py").write_text("keep me")
    assert main(["new-method", "mine", "--dir", str(tmp_path)]) == 2
    assert (tmp_path / "test_mine.py").read_text() == "keep me" and not (tmp_path / "mine.py").exists()
