"""``hashbench run --features``: shallow methods on an image dataset without ImageNet weights."""

from __future__ import annotations

from test_imagefolder import write_tree  # rootdir-relative: tests/ is on sys.path

from hashbench.cli import main
from hashbench.tracking import Store


def test_offline_extractors_run_end_to_end_and_enter_the_run_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    root = write_tree(tmp_path / "data" / "imgs", splits=(("train", 12), ("test", 4)))
    base = ["run", "--methods", "itq,lsh", "--dataset", "imagefolder", "--data-root", str(tmp_path / "data"),
            "--data-option", "path=imgs", "--bits", "8", "--seeds", "0", "--quiet",
            "--protocol-set", "query.per_class=2", "--protocol-set", "train.per_class=6"]
    assert root.is_dir()
    assert main(base + ["--features", "hog"]) == 0
    assert main(base + ["--features", "pixels-pca"]) == 0
    capsys.readouterr()
    records = Store(f"sqlite:///{tmp_path}/results/mlflow.db").trial_records()
    assert len(records) == 4 and all(r.status == "FINISHED" for r in records)
    extractors = {r.data_tags["features.extractor"].split(" ")[0] for r in records}
    assert extractors == {"hog", "pixels-pca"}
    assert len({r.run_key for r in records}) == 4  # the extractor is part of the run key
    assert main(base + ["--features", "hog"]) == 0  # finished keys are skipped
    assert "0 finished, 2 skipped" in capsys.readouterr().err
    assert main(base + ["--features", "hogg"]) == 2
    assert "did you mean 'hog'" in capsys.readouterr().err
