"""Cross-modal loaders on tiny files written in the exact on-disk formats: MATLAB v7.3 (HDF5
with MATLAB's 512-byte header and transposed storage, via h5py), classic .mat (scipy) and the
Wikipedia .list files; the real Wikipedia files when ../shared/data/wikipedia exists."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from hashbench.cli import main
from hashbench.datasets import load
from hashbench.datasets.check import check_dataset
from hashbench.datasets.crossmodal import DataFileError
from hashbench.errors import DataError

REAL_WIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikipedia"
N, H, W = 30, 12, 10          # H != W so that a swapped height/width would show
MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."


# ---------------------------------------------------------------- writers in the real formats


def write_v73(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A MATLAB -v7.3 file: HDF5 with a 512-byte user block holding MATLAB's header, each
    variable stored with its axes reversed (MATLAB is column-major), as h5py then reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in arrays.items():
            ds = f.create_dataset(name, data=np.ascontiguousarray(value.T))
            ds.attrs["MATLAB_class"] = np.bytes_("uint8" if value.dtype == np.uint8 else "double")
    header = MATLAB_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as handle:
        handle.write(header)
    return path


def write_classic(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), arrays)
    return path


def make_pairs(n=N, n_labels=24, text_dim=1386, seed=0):
    """Pixels (n, H, W, 3) uint8, 0/1 tags (n, d) with no empty row, multi-hot labels (n, L)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    text = (rng.random((n, text_dim)) < 0.01).astype(np.float64)
    text[np.arange(n), rng.integers(0, text_dim, n)] = 1
    labels = (rng.random((n, n_labels)) < 0.2).astype(np.float64)
    labels[np.arange(n), np.arange(n) % n_labels] = 1
    return pixels, text, labels


def matlab_images(pixels):
    """MATLAB's image stack: H x W x 3 x n."""
    return np.ascontiguousarray(pixels.transpose(1, 2, 3, 0))


@pytest.fixture
def pairs():
    return make_pairs()


# ---------------------------------------------------------------- MIRFLICKR-25K


def test_mirflickr_dcmh_v73_orients_and_reads_pixels_lazily(tmp_path, pairs):
    pixels, text, labels = pairs
    write_v73(tmp_path / "mirflickr" / "FLICKR-25K.mat",
              {"images": matlab_images(pixels), "YAll": text, "LAll": labels})
    with h5py.File(tmp_path / "mirflickr" / "FLICKR-25K.mat", "r") as f:  # what h5py sees
        assert f["images"].shape == (N, 3, W, H) and f["YAll"].shape == (1386, N)
    data = load("mirflickr", tmp_path)
    assert len(data) == N and data.labels.shape == (N, 24)
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_array_equal(data.modality("text"), text.astype(np.float32))
    assert data.modality_names == ("image", "text")
    images = data.images
    assert images.shape == (N, H, W, 3) and len(images) == N
    np.testing.assert_array_equal(images.pixels([0, 7, N - 1]), pixels[[0, 7, N - 1]])
    assert images[3].size == (W, H) and images[3].mode == "RGB"
    # the lazy collection pickles without its file handle (data-loader workers) and reads again
    clone = pickle.loads(pickle.dumps(images))
    np.testing.assert_array_equal(clone.pixel(5), pixels[5])
    orient = data.provenance["orientation"]
    assert f"images: MATLAB {H} x {W} x 3 x {N}" in orient and f"({N}, {H}, {W}, 3)" in orient
    assert "YAll: MATLAB 30 x 1386" in orient and "transposed, 30 x 1386" in orient
    assert data.provenance["format"] == "DCMH merged v7.3, pixels"
    assert "differs from the published 20,015 pairs, 24 labels, 1,386-d text: found 30 pairs" \
        in data.provenance["published_sizes"]
    assert images.identity() == load("mirflickr", tmp_path).images.identity()


def test_large_hdf5_matrices_are_read_in_blocks(tmp_path, pairs, monkeypatch):
    import hashbench.datasets.crossmodal as crossmodal

    pixels, text, labels = pairs
    write_v73(tmp_path / "mirflickr" / "FLICKR-25K.mat",
              {"images": matlab_images(pixels), "YAll": text, "LAll": labels})
    monkeypatch.setattr(crossmodal, "BLOCK_VALUES", 1386 * 7)   # 7 items per block
    np.testing.assert_array_equal(load("mirflickr", tmp_path).modality("text"), text.astype(np.float32))


def test_mirflickr_copy_stored_without_transposes(tmp_path, pairs):
    # a copy whose arrays h5py reads as n x d (MATLAB d x n) and pixels MATLAB n x H x W x 3
    pixels, text, labels = pairs
    write_v73(tmp_path / "mirflickr" / "FLICKR-25K.mat",
              {"images": pixels, "YAll": np.ascontiguousarray(text.T), "LAll": np.ascontiguousarray(labels.T)})
    data = load("mirflickr", tmp_path)
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_array_equal(data.modality("text"), text.astype(np.float32))
    np.testing.assert_array_equal(data.images.pixels(range(N)), pixels)
    assert "YAll: MATLAB 1386 x 30" in data.provenance["orientation"]
    assert "as read, 30 x 1386" in data.provenance["orientation"]


def test_mirflickr_separate_files_hdf5_pixels_classic_tags_and_vgg(tmp_path, pairs):
    pixels, text, labels = pairs
    folder = tmp_path / "mirflickr"
    write_v73(folder / "mirflickr25k-iall.mat", {"IAll": matlab_images(pixels)})
    write_classic(folder / "mirflickr25k-yall.mat", {"YAll": text})
    write_classic(folder / "mirflickr25k-lall.mat", {"LAll": labels.T})   # wrong way round: resolved
    vgg = np.random.default_rng(3).normal(size=(N, 64))
    write_classic(folder / "mirflickr25k-iall-vgg.mat", {"XAll": vgg})
    data = load("mirflickr", tmp_path)
    assert data.modality_names == ("image", "features", "text")
    assert not data.is_loaded("features")                   # read on first use
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_allclose(data.modality("features"), vgg.astype(np.float32))
    np.testing.assert_array_equal(data.images.pixel(11), pixels[11])
    assert "LAll: 24 x 30 (classic .mat) -> transposed, 30 x 24" in data.provenance["orientation"]
    assert data.provenance["format"].startswith("separate files")
    assert data.tags["dataset.features"] == "XAll (mirflickr25k-iall-vgg.mat)"
    # only the feature variant (no pixels)
    (folder / "mirflickr25k-iall.mat").unlink()
    data = load("mirflickr", tmp_path)
    assert data.modality_names == ("features", "text")


def test_mirflickr_dadh_feature_file_and_files_option(tmp_path, pairs):
    _, text, labels = pairs
    feats = np.random.default_rng(1).normal(size=(N, 4096)).astype(np.float32)
    path = write_classic(tmp_path / "elsewhere" / "FLICKR-25K.mat",
                         {"images": feats, "YAll": text, "LAll": labels})
    with pytest.raises(DataFileError, match="no data in .*mirflickr: expected the merged file FLICKR-25K.mat"):
        load("mirflickr", tmp_path)
    data = load("mirflickr", tmp_path, files=str(path))
    assert data.modality_names == ("features", "text")
    assert data.modality("features").shape == (N, 4096)
    assert data.provenance["format"] == "DADH merged, image features"


# ---------------------------------------------------------------- NUS-WIDE


def test_nuswide_tc21_and_tc10_both_yall_formats(tmp_path):
    for name, n_labels, yall_v73 in (("tc21", 21, True), ("tc10", 10, False)):
        pixels, text, labels = make_pairs(n=N, n_labels=n_labels, text_dim=1000, seed=n_labels)
        folder = tmp_path / f"nuswide-{name}"
        write_v73(folder / f"nus-wide-{name}-iall.mat", {"IAll": matlab_images(pixels)})
        (write_v73 if yall_v73 else write_classic)(folder / f"nus-wide-{name}-yall.mat", {"YAll": text})
        write_classic(folder / f"nus-wide-{name}-lall.mat", {"LAll": labels})
        data = load(f"nuswide-{name}", tmp_path)
        assert data.name == f"nuswide-{name}" and data.labels.shape == (N, n_labels)
        np.testing.assert_array_equal(data.labels, labels)
        np.testing.assert_array_equal(data.modality("text"), text.astype(np.float32))
        np.testing.assert_array_equal(data.images.pixel(2), pixels[2])
        kind = "MATLAB v7.3" if yall_v73 else "classic .mat"
        assert f"nus-wide-{name}-yall.mat: {kind}" in data.provenance["format"]


def test_nuswide_dadh_file(tmp_path):
    _, text, labels = make_pairs(n=N, n_labels=21, text_dim=1000)
    feats = np.random.default_rng(2).normal(size=(N, 128))
    write_classic(tmp_path / "nuswide-tc21" / "NUS-WIDE-TC21.mat", {"image": feats, "text": text, "label": labels})
    data = load("nuswide-tc21", tmp_path)
    assert data.modality_names == ("features", "text")
    np.testing.assert_array_equal(data.labels, labels)
    assert "21 labels" in data.description


# ---------------------------------------------------------------- IAPR TC-12 (pre-split)


def iapr_arrays(n_db=40, n_q=12, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for part, n in (("Database", n_db), ("Test", n_q)):
        _, text, labels = make_pairs(n=n, n_labels=255, text_dim=2912, seed=seed + n)
        out[f"X{part}"] = rng.normal(size=(n, 48))
        out[f"V{part}"] = rng.normal(size=(n, 96))
        out[f"Y{part}"] = text
        out[f"{part[0].lower()}{part[1:].lower()}L"] = labels
    return out


@pytest.mark.parametrize("writer", [write_classic, write_v73])
def test_iapr_presplit_partitions_and_feature_choice(tmp_path, writer):
    arrays = iapr_arrays()
    writer(tmp_path / "iapr" / "iapr-tc12.mat", arrays)
    data = load("iapr", tmp_path)
    assert len(data) == 52 and data.labels.shape == (52, 255)
    np.testing.assert_array_equal(data.partitions["database"], np.arange(40))
    np.testing.assert_array_equal(data.partitions["query"], np.arange(40, 52))
    np.testing.assert_array_equal(data.labels, np.vstack([arrays["databaseL"], arrays["testL"]]))
    np.testing.assert_allclose(data.modality("text"), np.vstack([arrays["YDatabase"], arrays["YTest"]]))
    assert data.modality("features").shape == (52, 96)                      # VGG by default
    assert load("iapr", tmp_path, features="handcrafted").modality("features").shape == (52, 48)
    assert "2,912-d text" in data.provenance["published_sizes"]
    if writer is write_v73:
        assert "testL: MATLAB 12 x 255" in data.provenance["orientation"]
    # DLFH's pre-split MIRFLICKR file has the same variables
    writer(tmp_path / "mirflickr" / "flickr-25k.mat", {k: v for k, v in arrays.items() if k[0] != "V"})
    flickr = load("mirflickr", tmp_path)
    assert len(flickr.partitions["query"]) == 12 and flickr.modality("features").shape == (52, 48)


def test_iapr_missing_variables(tmp_path):
    arrays = iapr_arrays()
    del arrays["testL"]
    path = write_classic(tmp_path / "iapr" / "iapr-tc12.mat", arrays)
    with pytest.raises(DataFileError, match=f"{path}: missing variable.*testL"):
        load("iapr", tmp_path)
    del arrays["VTest"]
    write_classic(tmp_path / "iapr" / "iapr-tc12.mat", {**arrays, "testL": arrays["databaseL"][:12]})
    with pytest.raises(DataFileError, match="features=vgg needs VDatabase and VTest"):
        load("iapr", tmp_path, features="vgg")
    assert load("iapr", tmp_path).modality("features").shape == (52, 48)   # auto: hand-crafted


# ---------------------------------------------------------------- Wikipedia


def write_wikipedia(root: Path, n_train=25, n_test=9, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "wikipedia"
    folder.mkdir(parents=True)
    cats = {}
    for part, n, short in (("trainset", n_train, "tr"), ("testset", n_test, "te")):
        cats[short] = (np.arange(n) % 10) + 1
        lines = [f"{rng.bytes(8).hex()}-{i}\t{rng.bytes(8).hex()}\t{c}" for i, c in enumerate(cats[short])]
        (folder / f"{part}_txt_img_cat.list").write_text("\n".join(lines) + "\n")
    arrays = {}
    for short, n in (("tr", n_train), ("te", n_test)):
        arrays[f"I_{short}"] = rng.random((n, 128))
        arrays[f"T_{short}"] = rng.dirichlet(np.ones(10), n)
        arrays[f"T_tfidf_{short}"] = rng.random((n, 1000)) * (rng.random((n, 1000)) < 0.05)
        arrays[f"T_tfidf_{short}"][:, 0] += 0.1
    savemat(str(folder / "raw_features.mat"), arrays)
    return arrays, cats


def test_wikipedia_tiny_lists_and_text_choice(tmp_path):
    arrays, cats = write_wikipedia(tmp_path)
    data = load("wikipedia", tmp_path)
    assert len(data) == 34 and data.labels.shape == (34, 10) and not data.multilabel
    np.testing.assert_array_equal(data.labels.argmax(1), np.concatenate([cats["tr"], cats["te"]]) - 1)
    assert len(data.partitions["train"]) == 25 and len(data.partitions["test"]) == 9
    np.testing.assert_allclose(data.modality("features"), np.vstack([arrays["I_tr"], arrays["I_te"]]),
                               rtol=1e-6)
    assert data.modality("text").shape == (34, 10)
    assert load("wikipedia", tmp_path, text="tfidf").modality("text").shape == (34, 1000)
    assert data.class_names[0] == "art" and data.class_names[-1] == "warfare"
    with pytest.raises(DataError, match="text must be one of lda, tfidf"):
        load("wikipedia", tmp_path, text="bow")


def test_wikipedia_bad_list_and_count(tmp_path):
    write_wikipedia(tmp_path)
    lst = tmp_path / "wikipedia" / "testset_txt_img_cat.list"
    good = lst.read_text()
    lst.write_text(good + "abc\tdef\t11\n")
    with pytest.raises(DataFileError, match=r"testset_txt_img_cat.list, line 10: category '11'"):
        load("wikipedia", tmp_path)
    lst.write_text(good + "abc\tdef\t3\n")
    with pytest.raises(DataFileError, match="I_te is 9 x 128 but testset_txt_img_cat.list lists 10 test"):
        load("wikipedia", tmp_path)


def test_wikipedia_real_files():
    if not REAL_WIKI.is_dir():
        pytest.skip(f"real Wikipedia files not present at {REAL_WIKI} (a fresh clone has no ../shared/data)")
    data = load("wikipedia", REAL_WIKI.parent)
    assert len(data) == 2866 and data.labels.shape == (2866, 10)
    assert len(data.partitions["train"]) == 2173 and len(data.partitions["test"]) == 693
    assert (data.labels.sum(1) == 1).all() and (data.labels.sum(0) > 0).all()
    assert data.modality("features").shape == (2866, 128)
    assert data.modality("text").shape == (2866, 10)
    assert load("wikipedia", REAL_WIKI.parent, text="tfidf").modality("text").shape == (2866, 1000)
    report = check_dataset(data)
    assert report.problems == [] and report.empty_text_rows == 0
    assert report.label_counts["warfare"] == 451 and report.label_counts["art"] == 172


# ---------------------------------------------------------------- split digits


def test_digits_2view_halves():
    from sklearn.datasets import load_digits

    data = load("digits-2view")
    pixels = load_digits().images / 16.0
    assert len(data) == 1797 and data.labels.shape == (1797, 10)
    np.testing.assert_allclose(data.modality("features"), pixels[:, :, :4].reshape(-1, 32), rtol=1e-6)
    np.testing.assert_allclose(data.modality("text"), pixels[:, :, 4:].reshape(-1, 32), rtol=1e-6)
    assert "NOT image-text" in data.description and "not text" in data.provenance["views"]
    assert check_dataset(data).problems == []


# ---------------------------------------------------------------- bad input


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_data_names_the_layout_and_root(tmp_path):
    for name, expect in (("mirflickr", "FLICKR-25K.mat (or flickr-25k.mat), or the separate files "
                                       "mirflickr25k-iall.mat + mirflickr25k-yall.mat"),
                         ("nuswide-tc21", "NUS-WIDE-TC21.mat, or the separate files nus-wide-tc21-iall.mat"),
                         ("nuswide-tc10", "nus-wide-tc10-yall.mat"), ("iapr", "iapr-tc12.mat"),
                         ("wikipedia", "raw_features.mat")):
        with pytest.raises(DataFileError) as info:
            load(name, tmp_path)
        message = one_line(info)
        assert expect in message and "--data-root" in message and "HASHBENCH_DATA" in message


def test_wrong_variables(tmp_path, pairs):
    _, text, _ = pairs
    path = write_classic(tmp_path / "mirflickr" / "FLICKR-25K.mat", {"YAll": text, "foo": text[:, :3]})
    with pytest.raises(DataFileError, match="no labels variable .*variables: YAll, foo") as info:
        load("mirflickr", tmp_path)
    assert str(path) in one_line(info)
    (tmp_path / "mirflickr" / "FLICKR-25K.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataFileError, match="is not a readable .mat file"):
        load("mirflickr", tmp_path)


def test_v73_without_h5py(tmp_path, pairs, monkeypatch):
    pixels, text, labels = pairs
    path = write_v73(tmp_path / "mirflickr" / "FLICKR-25K.mat",
                     {"images": matlab_images(pixels), "YAll": text, "LAll": labels})
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(DataFileError) as info:
        load("mirflickr", tmp_path)
    assert one_line(info) == f"{path} is a MATLAB v7.3 (HDF5) file and h5py is not installed: pip install h5py"


def test_counts_that_disagree(tmp_path, pairs):
    pixels, text, labels = pairs
    path = tmp_path / "mirflickr" / "FLICKR-25K.mat"
    write_v73(path, {"images": matlab_images(pixels), "YAll": text, "LAll": np.vstack([labels, labels[:1]])})
    with pytest.raises(DataFileError) as info:
        load("mirflickr", tmp_path)
    assert one_line(info) == (f"{path}: the label matrix LAll is 24 x 31 but images/YAll have 30 items: "
                              "cannot orient it (expected 30 x L or L x 30)")
    write_v73(path, {"images": matlab_images(pixels), "YAll": text[:-1], "LAll": labels})
    with pytest.raises(DataFileError, match="YAll is 1386 x 29, which does not match the 30 items of images/LAll"):
        load("mirflickr", tmp_path)


def test_orientation_that_cannot_be_resolved(tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.random((6, 5)) < 0.5).astype(float)
    write_classic(tmp_path / "mirflickr" / "FLICKR-25K.mat",
                  {"images": rng.normal(size=(6, 5)), "YAll": rng.random((5, 6)), "LAll": labels})
    with pytest.raises(DataFileError, match="cannot resolve the orientation: images 6 x 5 .* all fit 5 or 6 items"):
        load("mirflickr", tmp_path)


def test_labels_must_be_binary(tmp_path, pairs):
    _, text, labels = pairs
    labels = labels.copy()
    labels[0, 0] = 3
    write_classic(tmp_path / "mirflickr" / "FLICKR-25K.mat",
                  {"images": np.ones((N, 8)), "YAll": text, "LAll": labels})
    with pytest.raises(DataFileError, match="LAll must hold 0/1, found \\[3.0\\]"):
        load("mirflickr", tmp_path)


def test_all_zero_text_rows_error_keep_drop(tmp_path, pairs):
    pixels, text, labels = pairs
    text = text.copy()
    text[[4, 9]] = 0
    labels = labels.copy()
    labels[2] = 0                                    # a row without labels: reported, not an error
    path = write_v73(tmp_path / "mirflickr" / "FLICKR-25K.mat",
                     {"images": matlab_images(pixels), "YAll": text, "LAll": labels})
    with pytest.raises(DataFileError) as info:
        load("mirflickr", tmp_path)
    assert one_line(info) == (f"YAll in {path}: 2 text rows are all zero (first rows: [4, 9]); pass "
                              "--data-option empty_text=keep or empty_text=drop to load them anyway")
    kept = load("mirflickr", tmp_path, empty_text="keep")
    report = check_dataset(kept)
    assert report.empty_text_rows == 2 and report.modalities["image"] == f"{N} x {H} x {W} x 3"
    assert "2 rows have all-zero text (first rows: [4, 9])" in report.problems
    assert "1 items have no label (first rows: [2])" in report.problems
    assert "transposed" in report.orientation and "orientation found: " in report.render()
    dropped = load("mirflickr", tmp_path, empty_text="drop")
    assert len(dropped) == N - 2 and dropped.provenance["empty_text_dropped"] == "2"
    np.testing.assert_array_equal(dropped.images.pixel(4), pixels[5])
    assert dropped.modality("text").any(axis=1).all()


def test_data_check_cli(tmp_path, pairs, capsys):
    pixels, text, labels = pairs
    write_v73(tmp_path / "mirflickr" / "FLICKR-25K.mat",
              {"images": matlab_images(pixels), "YAll": text, "LAll": labels})
    assert main(["data", "check", "mirflickr", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"dataset mirflickr: {N} items, labels {N} x 24 (multi-label)" in out
    assert f"modalities: image {N} x {H} x {W} x 3, text {N} x 1386" in out
    assert "rows with all-zero text: 0" in out and "orientation found: images: MATLAB" in out
    assert "label frequency: label0 " in out
    write_v73(tmp_path / "mirflickr" / "FLICKR-25K.mat", {"images": matlab_images(pixels), "YAll": text})
    assert main(["data", "check", "mirflickr", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "FLICKR-25K.mat: no labels variable" in err and "\n" not in err
    assert main(["data", "check", "digits-2view"]) == 0
