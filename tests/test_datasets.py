"""Real loaders on tiny files generated in the exact on-disk formats (no downloads)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from hashbench.cli import main
from hashbench.datasets import load
from hashbench.errors import DataError, UsageError
from hashbench.protocol import get_protocol, materialise
from hashbench.report import collect
from hashbench.tracking import Store

# ---------------------------------------------------------------- fixtures in real formats


def write_cifar10(root, per_class_train=10, per_class_test=2, seed=0):
    """torchvision's CIFAR-10 python layout: pickled dicts with 'data' (n, 3072) and 'labels'."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)

    def batch(n_per_class):
        labels = np.repeat(np.arange(10), n_per_class)
        rng.shuffle(labels)
        # class-dependent colour so that features carry the label
        data = rng.integers(0, 60, (len(labels), 3, 32, 32)).astype(np.uint8)
        data[:, 0] += (labels * 19).astype(np.uint8)[:, None, None]
        return {"data": data.reshape(len(labels), 3072), "labels": labels.tolist(),
                "batch_label": "fixture"}

    per_batch = max(1, per_class_train // 5)
    for i in range(1, 6):
        with open(base / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch), f)
    with open(base / "test_batch", "wb") as f:
        pickle.dump(batch(per_class_test), f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return 10 * (per_batch * 5 + per_class_test)


def multilabel_matrix(n, n_labels, rng, min_per_label, zero_rows=0):
    labels = (rng.random((n, n_labels)) < 1.5 / n_labels).astype(np.uint8)
    for c in range(n_labels):  # guarantee enough items per label
        rows = rng.choice(n, size=min_per_label, replace=False)
        labels[rows, c] = 1
    labels[labels.sum(1) == 0, rng.integers(0, n_labels)] = 1
    if zero_rows:
        labels[rng.choice(n, size=zero_rows, replace=False)] = 0
    return labels


def write_png(path, label_row, rng):
    pixels = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
    pixels[..., 0] = (np.flatnonzero(label_row)[:1].sum() * 11) % 255 if label_row.any() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_list(path, rel_paths, labels, prefix=""):
    lines = [" ".join([prefix + p] + [str(int(v)) for v in row]) for p, row in zip(rel_paths, labels)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def nuswide_root(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    folder = root / "nuswide"
    n = 140
    labels = multilabel_matrix(n, 21, rng, min_per_label=12, zero_rows=4)
    paths = [f"images/img{i:04d}.png" for i in range(n)]
    for p, row in zip(paths, labels):
        write_png(folder / p, row, rng)
    # the authors' absolute paths, rewritten with prefix_from/prefix_to; database + test lists
    write_list(folder / "database.txt", paths[:120], labels[:120], prefix="/home/author/NUS-WIDE/")
    write_list(folder / "test.txt", paths[120:] + paths[:2], np.vstack([labels[120:], labels[:2]]),
               prefix="/home/author/NUS-WIDE/")
    return root, labels


@pytest.fixture
def coco_root(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "data"
    folder = root / "coco"
    out = {}
    for part, n, zero in (("train", 90, 3), ("val", 50, 2)):
        labels = multilabel_matrix(n, 80, rng, min_per_label=1)
        labels[:, :5] |= (rng.random((n, 5)) < 0.3).astype(np.uint8)  # 5 frequent categories
        labels[rng.choice(n, size=zero, replace=False)] = 0  # images with no category
        paths = [f"{part}2014/{part}_{i:04d}.png" for i in range(n)]
        for p, row in zip(paths, labels):
            write_png(folder / p, row, rng)
        write_list(folder / f"{part}.txt", paths, labels)
        out[part] = labels
    return root, out


# ---------------------------------------------------------------- loaders


def test_cifar10_reads_the_python_pickle_layout(tmp_path):
    n = write_cifar10(tmp_path)
    with pytest.warns(UserWarning, match="MD5"):
        data = load("cifar10", tmp_path, download="no")
    assert len(data) == n == 120 and data.labels.shape == (120, 10)
    assert data.provenance["verified"] == "false"
    assert len(data.partitions["train"]) == 100 and len(data.partitions["test"]) == 20
    assert data.images[0].size == (32, 32)
    assert data.class_names[3] == "class3"


def test_cifar10_missing_names_the_layout(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py") as info:
        load("cifar10", tmp_path / "nowhere", download="no")
    assert "\n" not in str(info.value)


def test_cifar10_corrupt_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="corrupt|not found"):
        load("cifar10", tmp_path, download="no")


def test_nuswide_one_file_lists_prefix_rewrite_and_duplicates(nuswide_root):
    root, labels = nuswide_root
    data = load("nuswide", root, prefix_from="/home/author/NUS-WIDE/", prefix_to="")
    assert len(data) == 140 and data.labels.shape == (140, 21)
    assert data.provenance["duplicates_removed"] == "2"
    np.testing.assert_array_equal(data.labels, labels)
    assert data.images.paths[0] == str(root.resolve() / "nuswide" / "images" / "img0000.png")
    assert data.images[5].size == (8, 8)


def test_nuswide_two_file_layout(nuswide_root):
    root, labels = nuswide_root
    folder = root / "nuswide"
    (folder / "db_img.txt").write_text("\n".join(f"images/img{i:04d}.png" for i in range(30)) + "\n")
    (folder / "db_label.txt").write_text(
        "\n".join(" ".join(map(str, row)) for row in labels[:30]) + "\n")
    data = load("nuswide", root, images="db_img.txt", labels="db_label.txt")
    assert len(data) == 30
    np.testing.assert_array_equal(data.labels, labels[:30])


def test_nuswide_bad_lists(nuswide_root, tmp_path):
    root, _ = nuswide_root
    bad = root / "nuswide" / "bad.txt"
    bad.write_text("images/a.png 0 1 0\n")
    with pytest.raises(DataError, match="line 1: 3 label columns, expected 21"):
        load("nuswide", root, lists="bad.txt")
    with pytest.raises(DataError, match="database.txt or test.txt"):
        load("nuswide", tmp_path / "empty")
    with pytest.raises(UsageError, match="did you mean 'lists'"):
        load("nuswide", root, listss="x")


def test_nuswide_protocol_drops_unlabelled_and_samples_distinct(nuswide_root):
    root, labels = nuswide_root
    data = load("nuswide", root, prefix_from="/home/author/NUS-WIDE/")
    proto = get_protocol("adsh2018-nuswide").with_overrides(
        {"query.per_class": 2, "train.per_class": 3})
    split = materialise(proto, data.labels, data.partitions)
    assert split.n_dropped_unlabelled == 4
    assert len(split.query) == 42 and len(set(split.query)) == 42
    assert len(split.train) == 63 and len(set(split.train)) == 63
    assert len(split.database) == 140 - 4 - 42
    assert not set(split.query) & set(split.database)
    assert set(split.train) <= set(split.database)
    assert data.labels[split.query].any(axis=1).all()
    # the same seed gives the same split (by hash); other counts give another hash
    assert materialise(proto, data.labels).sha256 == split.sha256
    other = get_protocol("adsh2018-nuswide").with_overrides({"query.per_class": 1, "train.per_class": 3})
    assert materialise(other, data.labels).sha256 != split.sha256
    with pytest.raises(DataError, match="has only"):
        materialise(get_protocol("adsh2018-nuswide").with_overrides({"query.per_class": 50}),
                    data.labels)


def test_coco_partitions_pruning_and_top_classes(coco_root):
    root, labels = coco_root
    data = load("coco", root)
    assert len(data) == 140 and data.labels.shape == (140, 80)
    proto = get_protocol("adsh2018-coco").with_overrides({
        "query.per_class": 2, "query.top_classes": 5, "train.per_class": 3, "train.top_classes": 5})
    split = materialise(proto, data.labels, data.partitions)
    assert split.n_dropped_unlabelled == 5
    assert len(split.query) == 10 and len(split.train) == 15
    assert set(split.query) <= set(range(90, 140))          # queries from validation images
    assert set(split.database) <= set(range(90))            # database = pruned training images
    assert len(split.database) == 90 - 3
    assert not set(split.query) & set(split.database)
    # top classes are the 5 most frequent: every query carries one of them
    counts = data.labels[data.labels.any(1)].sum(0)
    top = np.sort(np.argsort(-counts, kind="stable")[:5])
    assert data.labels[split.query][:, top].any(axis=1).all()


def test_features_npz_and_mat(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(60, 16)).astype(np.float32)
    classes = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "f.npz", features=feats, labels=classes)
    data = load("features", None, path=str(tmp_path / "f.npz"))
    assert data.labels.shape == (60, 3) and data.features.shape == (60, 16)
    multi = (rng.random((60, 4)) < 0.5).astype(np.uint8)
    savemat(tmp_path / "f.mat", {"features": feats.astype(np.float64), "labels": multi})
    data = load("features", None, path=str(tmp_path / "f.mat"))
    np.testing.assert_array_equal(data.labels, multi)
    # NaN rows are refused with the row count when the features are used
    feats[[3, 7]] = np.nan
    np.savez(tmp_path / "nan.npz", features=feats, labels=classes)
    with pytest.raises(DataError, match="2 feature rows contain NaN"):
        load("features", None, path=str(tmp_path / "nan.npz")).inputs("features")
    np.savez(tmp_path / "nolabels.npz", features=feats)
    with pytest.raises(DataError, match="missing array"):
        load("features", None, path=str(tmp_path / "nolabels.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read"):
        load("features", None, path=str(tmp_path / "junk.npz"))
    with pytest.raises(DataError, match="not found"):
        load("features", None, path=str(tmp_path / "none.npz"))


def test_pretrained_weights_offline_says_how_to_fix(tmp_path, monkeypatch):
    from hashbench.features import alexnet_fc7

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DataError, match="--no-pretrained") as info:
        alexnet_fc7(pretrained=True)
    assert "alexnet-owt-7be5be79.pth" in str(info.value)


# ---------------------------------------------------------------- end to end


def _finished(tmp_path):
    frame = collect(Store(None, create=False))
    return frame[frame["status"] == "FINISHED"]


def test_run_cifar10_with_cached_features(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    write_cifar10(tmp_path / "data")
    args = ["run", "--methods", "itq", "--dataset", "cifar10", "--bits", "8", "--no-pretrained", "--feature-image-size", "64",
            "--protocol-set", "query.per_class=2", "--protocol-set", "train.per_class=3",
            "--data-option", "download=no"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "cached features in" in err
    (cached,) = (tmp_path / "cache" / "features").glob("cifar10-alexnet-fc7-*.npy")
    assert np.load(cached).shape == (120, 4096)
    mtime = cached.stat().st_mtime_ns
    assert main(args + ["--force", "--seeds", "1"]) == 0
    assert "using cached features" in capsys.readouterr().err
    assert cached.stat().st_mtime_ns == mtime
    runs = _finished(tmp_path)
    assert len(runs) == 2 and set(runs["protocol"]) == {"adsh2018-cifar10"}
    store = Store(None, create=False)
    tags = store.client.get_run(runs["run_id"].iloc[0]).data.tags
    assert "random-init" in tags["features.extractor"]
    assert tags["dataset.verified"] == "false"
    assert '"query.per_class": "2"' in tags["hashbench.protocol_overrides"]


def test_run_nuswide_and_coco_end_to_end(nuswide_root, coco_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--methods", "itq", "--dataset", "nuswide", "--bits", "8", "--no-pretrained", "--feature-image-size", "64",
                 "--protocol-set", "query.per_class=2", "--protocol-set", "train.per_class=3",
                 "--protocol-set", "evaluation.map_topk=20",
                 "--data-option", "prefix_from=/home/author/NUS-WIDE/", "--quiet"]) == 0
    assert main(["run", "--methods", "itq", "--dataset", "coco", "--bits", "8", "--no-pretrained", "--feature-image-size", "64",
                 "--protocol-set", "query.per_class=2", "--protocol-set", "query.top_classes=5",
                 "--protocol-set", "train.per_class=3", "--protocol-set", "train.top_classes=5",
                 "--quiet"]) == 0
    runs = _finished(tmp_path).set_index("dataset")
    assert set(runs.index) == {"nuswide", "coco"}
    assert "map_topk=20" in runs.loc["nuswide", "conventions"]
    assert 0 <= runs.loc["coco", "metric.map"] <= 1


def test_run_features_file(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32)) * 3
    classes = np.repeat(np.arange(4), 40)
    feats = centres[classes] + rng.normal(size=(160, 32))
    np.savez(tmp_path / "mine.npz", features=feats, labels=classes)
    assert main(["run", "--methods", "itq,lsh", "--dataset", "features", "--bits", "8,16",
                 "--data-option", f"path={tmp_path / 'mine.npz'}", "--protocol-set",
                 "query.per_class=5", "--protocol-set", "train.per_class=10", "--quiet"]) == 0
    runs = _finished(tmp_path)
    assert len(runs) == 4
    assert runs[runs["method"] == "itq"]["metric.map"].min() > 0.8


def test_data_check_reports_problems(nuswide_root, capsys):
    root, _ = nuswide_root
    broken = root / "nuswide" / "images" / "img0010.png"
    broken.write_bytes(b"not a png")
    (root / "nuswide" / "images" / "img0011.png").unlink()
    code = main(["data", "check", "nuswide", "--data-root", str(root),
                 "--data-option", "prefix_from=/home/author/NUS-WIDE/"])
    out = capsys.readouterr().out
    assert code == 1
    assert "140 items, labels 140 x 21 (multi-label)" in out
    assert "4 items have no label" in out
    assert "unreadable image" in out and "img0010.png" in out
    assert "missing image" in out and "img0011.png" in out
    assert main(["data", "check", "digits"]) == 0


def test_unknown_protocol_field_and_dataset(capsys):
    assert main(["run", "--methods", "itq", "--protocol-set", "query.per_klass=3"]) == 2
    assert "did you mean 'query.per_class'" in capsys.readouterr().err
    assert main(["data", "check", "cifar"]) == 2
    assert "did you mean 'cifar10'" in capsys.readouterr().err


def test_single_label_methods_on_multilabel_data(nuswide_root, tmp_path, monkeypatch, capsys):
    from hashbench import registry
    from hashbench.progress import Reporter
    from hashbench.runner import GridRunner, RunConfig

    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    base = ["run", "--dataset", "nuswide", "--bits", "8", "--no-pretrained", "--feature-image-size", "64",
            "--protocol-set", "query.per_class=2", "--protocol-set", "train.per_class=3",
            "--data-option", "prefix_from=/home/author/NUS-WIDE/", "--quiet"]
    assert main(base + ["--methods", "kadgh,itq"]) == 2
    assert "kadgh support single-label data only" in capsys.readouterr().err
    # under --methods all they are left out with a message, the rest runs
    protocol = get_protocol("adsh2018-nuswide").with_overrides({"query.per_class": 2, "train.per_class": 3})
    config = RunConfig(methods=[registry.get("kadgh"), registry.get("itq")], protocol=protocol, bits=[8],
                       seeds=[0], data_root=tmp_path / "data", pretrained=False, feature_image_size=64,
                       data_options={"prefix_from": "/home/author/NUS-WIDE/"}, skip_incompatible=True)
    summary = GridRunner(config, Reporter()).run()
    assert [o.trial.method for o in summary.outcomes] == ["itq"]
    assert "left out (single-label methods, multi-label data): kadgh" in capsys.readouterr().err


def test_digits_read_without_scikit_learn_equal_its_loader():
    from sklearn.datasets import load_digits as sk_load_digits

    from hashbench.datasets.digits import _digits_arrays, _digits_file

    assert _digits_file() is not None
    data, target = _digits_arrays()
    bunch = sk_load_digits()
    np.testing.assert_array_equal(data, bunch.data)
    np.testing.assert_array_equal(target, bunch.target)
    assert data.dtype == bunch.data.dtype and len(target) == 1797
