"""Code files, label files, packing, code statistics / the collapsed flag, and top-k search."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from hashbench.errors import DataError
from hashbench.evaluation import (
    Conventions,
    evaluate,
    hamming_topk,
    load_codes,
    load_labels,
    pack_codes,
    unpack_codes,
)
from hashbench.evaluation.stats import bit_balance, code_statistics, collapse_threshold, distinct_codes

CODES = np.array([[1, -1, -1, 1, 1, 1, -1, 1, -1, -1, 1, 1],
                  [-1, -1, 1, 1, -1, 1, 1, 1, 1, -1, -1, -1],
                  [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], dtype=np.int8)


def test_pack_unpack_round_trip_and_bit_order():
    packed = pack_codes(CODES)
    assert packed.dtype == np.uint8 and packed.shape == (3, 2)
    # first code: bits 1 0 0 1 1 1 0 1 | 0 0 1 1 (pad 0000) -> 0b10011101 = 157, 0b00110000 = 48
    assert packed[0].tolist() == [157, 48]
    assert np.array_equal(unpack_codes(packed, 12), CODES)
    assert unpack_codes(packed, 12).dtype == np.int8
    with pytest.raises(DataError, match="bytes per code"):
        unpack_codes(packed, 20)


@pytest.mark.parametrize("encoding", ["plus_minus", "zero_one", "float", "bool"])
def test_load_codes_npy_encodings(tmp_path, encoding):
    data = {"plus_minus": CODES, "zero_one": (CODES > 0).astype(np.uint8),
            "float": CODES.astype(np.float32), "bool": CODES > 0}[encoding]
    np.save(tmp_path / "c.npy", data)
    loaded = load_codes(tmp_path / "c.npy")
    assert loaded.dtype == np.int8 and np.array_equal(loaded, CODES)
    assert np.array_equal(load_codes(str(tmp_path / "c.npy"), bits=12), CODES)


def test_load_codes_npz_and_mat(tmp_path):
    np.savez(tmp_path / "named.npz", other=np.zeros(3), codes=CODES)
    np.savez(tmp_path / "first.npz", CODES, np.zeros(3))
    assert np.array_equal(load_codes(tmp_path / "named.npz"), CODES)
    assert np.array_equal(load_codes(tmp_path / "first.npz"), CODES)
    scipy.io.savemat(tmp_path / "b.mat", {"A": np.zeros((2, 2)), "B": CODES.astype(np.float64)})
    scipy.io.savemat(tmp_path / "first.mat", {"qB": (CODES > 0).astype(np.uint8)})
    assert np.array_equal(load_codes(tmp_path / "b.mat"), CODES)
    assert np.array_equal(load_codes(tmp_path / "first.mat"), CODES)


def test_load_codes_packed_needs_bits(tmp_path):
    np.save(tmp_path / "p.npy", pack_codes(CODES))
    assert np.array_equal(load_codes(tmp_path / "p.npy", bits=12), CODES)
    with pytest.raises(DataError, match=r"p\.npy.*packed.*--bits"):
        load_codes(tmp_path / "p.npy")
    np.savez(tmp_path / "p.npz", codes=pack_codes(CODES))
    assert np.array_equal(load_codes(tmp_path / "p.npz", bits=12), CODES)


def test_load_codes_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing\.npy does not exist"):
        load_codes(tmp_path / "missing.npy")
    (tmp_path / "junk.npy").write_bytes(b"this is not numpy")
    with pytest.raises(DataError, match=r"cannot read code file .*junk\.npy"):
        load_codes(tmp_path / "junk.npy")
    np.save(tmp_path / "bad.npy", np.array([[1, 2], [1, -1]]))
    with pytest.raises(DataError, match=r"bad\.npy has values outside .* \(found 2\)"):
        load_codes(tmp_path / "bad.npy")
    np.save(tmp_path / "mixed.npy", np.array([[1, 0], [-1, 1]]))
    with pytest.raises(DataError, match="outside"):
        load_codes(tmp_path / "mixed.npy")
    np.save(tmp_path / "wide.npy", CODES)
    with pytest.raises(DataError, match="12 bits per code, expected 16"):
        load_codes(tmp_path / "wide.npy", bits=16)
    np.save(tmp_path / "flat.npy", CODES[0])
    with pytest.raises(DataError, match="1-D"):
        load_codes(tmp_path / "flat.npy")
    (tmp_path / "c.txt").write_text("1 -1\n")
    with pytest.raises(DataError, match="unsupported extension"):
        load_codes(tmp_path / "c.txt")
    for message in (str(e) for e in [DataError("x")]):
        assert "\n" not in message


def test_load_labels_formats(tmp_path):
    classes = np.array([2, 0, 1, 2])
    onehot = np.eye(3, dtype=np.int8)[classes]
    np.save(tmp_path / "idx.npy", classes)
    np.save(tmp_path / "col.npy", classes[:, None])
    np.savetxt(tmp_path / "multi.txt", onehot, fmt="%d")
    np.savetxt(tmp_path / "idx.txt", classes, fmt="%d")
    scipy.io.savemat(tmp_path / "l.mat", {"L": onehot.astype(np.float64)})
    np.savez(tmp_path / "l.npz", labels=onehot)
    for name in ("idx.npy", "col.npy", "multi.txt", "idx.txt", "l.mat", "l.npz"):
        got = load_labels(tmp_path / name)
        assert got.dtype == np.int8 and np.array_equal(got, onehot), name
    np.save(tmp_path / "bad.npy", np.array([[0, 2], [1, 0]]))
    with pytest.raises(DataError, match=r"bad\.npy.*only 0 and 1"):
        load_labels(tmp_path / "bad.npy")
    with pytest.raises(DataError, match="does not exist"):
        load_labels(tmp_path / "nope.txt")


def test_code_statistics_values():
    codes = np.array([[1, 1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]])
    # bit 0: +1 for 3/4 -> 0.5; bit 1: 3/4 -> 0.5; bit 2: 0/4 -> 0 (constant)
    assert bit_balance(codes).tolist() == [0.5, 0.5, 0.0]
    assert distinct_codes(codes) == 3
    metrics, flags = code_statistics(codes, n_classes=2)
    assert metrics == {"distinct_db_codes": 3.0, "distinct_db_codes_fraction": 0.75,
                       "bit_balance_min": 0.0, "bit_balance_mean": pytest.approx(1 / 3)}
    assert flags["constant_bits"] == "1 of 3 bits are constant over the database"
    # more than 64 bits goes through the byte-row path
    wide = np.repeat(codes, 30, axis=1)
    assert distinct_codes(wide) == 3


def digits_like_codes(n_db: int, bits: int, n_classes: int, noise: float, seed: int):
    """A working supervised hasher: one centre code per class plus a few flipped bits."""
    rng = np.random.default_rng(seed)
    centres = rng.choice([-1, 1], size=(n_classes, bits))
    labels = rng.integers(0, n_classes, n_db)
    codes = centres[labels] * np.where(rng.random((n_db, bits)) < noise, -1, 1)
    return codes.astype(np.int8), labels


def test_collapsed_flag_rule():
    assert collapse_threshold(1697, 10) == 6
    assert collapse_threshold(5, 10) == 5
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1697)
    # a working 12-bit digits run never trips it, even with exactly one code per class
    for noise in (0.0, 0.02, 0.1):
        codes, lab = digits_like_codes(1697, 12, 10, noise, seed=3)
        _, flags = code_statistics(codes, n_classes=10)
        assert "collapsed" not in flags
    # all-equal codes and 3 codes always trip it
    same = np.ones((1697, 12), np.int8)
    three = np.array([[1] * 12, [-1] * 12, [1, -1] * 6], np.int8)[rng.integers(0, 3, 1697)]
    for codes in (same, three):
        for n_classes in (2, 10, 21, 80):
            _, flags = code_statistics(codes, n_classes=n_classes)
            assert "collapsed" in flags
    _, flags = code_statistics(three, n_classes=10)
    assert flags["collapsed"] == "database has 3 distinct codes for 1697 items (fewer than 6)"
    # and it reaches the evaluator's result
    res = evaluate(same[:10], same, labels[:10], labels)
    assert "collapsed" in res.flags and res.metrics["distinct_db_codes"] == 1.0
    assert res.metrics["tie_fraction"] == 1.0
    # ties broken by index: the MAP of a collapsed run is the index-order MAP, and the
    # tie-aware MAP equals the best and the worst only when there is nothing to reorder
    assert res.metrics["map_worst"] <= res.metrics["tie_aware_map"] <= res.metrics["map_best"]


@pytest.mark.parametrize("bits", [12, 40, 64, 130])
def test_packed_and_torch_distances_match_the_definition(bits):
    torch = pytest.importorskip("torch")
    from hashbench.evaluation.ranking import Codes, TorchDistances

    rng = np.random.default_rng(bits)
    q = rng.choice([-1, 1], size=(7, bits)).astype(np.int8)
    db = rng.choice([-1, 1], size=(1000, bits)).astype(np.int8)
    expected = (bits - q.astype(int) @ db.T.astype(int)) // 2
    codes = Codes(q, db)
    for i in range(7):
        assert np.array_equal(codes.distances(i), expected[i])
    b = np.empty((7, 1000), np.uint8)
    TorchDistances(torch.from_numpy(q), torch.from_numpy(db)).fill(0, 7, b)
    assert np.array_equal(b, expected)


@pytest.mark.parametrize(("n_labels", "map_k"), [(3, 500), (70, 40)])
def test_device_distance_path_gives_the_same_statistics_as_the_packed_path(n_labels, map_k):
    """The CUDA path (distance rows from torch, then the compiled pass) is exercised here
    with CPU tensors: its statistics equal the packed-code path's, chunk by chunk."""
    torch = pytest.importorskip("torch")
    from hashbench.evaluation.ranking import Codes, Labels, TorchDistances, rank_statistics

    rng = np.random.default_rng(n_labels)
    q = rng.choice([-1, 1], size=(23, 10)).astype(np.int8)
    db = rng.choice([-1, 1], size=(500, 10)).astype(np.int8)
    ql = (rng.random((23, n_labels)) < 2 / n_labels).astype(np.int8)
    dl = (rng.random((500, n_labels)) < 2 / n_labels).astype(np.int8)
    labels = Labels(ql, dl)
    args = dict(ks=[1, 7, 40, 300], map_k=map_k, want_hist=True)
    cpu = rank_statistics(Codes(q, db), labels, 23, 500, **args)
    dev = rank_statistics(TorchDistances(torch.from_numpy(q), torch.from_numpy(db)), labels, 23, 500,
                          chunk_size=4, n_jobs=2, **args)
    for name in ("n_relevant", "precision_sum", "found_at_map_k", "found", "hist_total", "hist_rel"):
        assert np.array_equal(getattr(cpu, name), getattr(dev, name)), name
    assert cpu.n_relevant.min() < cpu.n_relevant.max()


@pytest.mark.parametrize(("bits", "k"), [(12, 5), (48, 40), (70, 7), (12, 500), (260, 9)])
def test_hamming_topk_is_the_first_k_of_the_stable_ranking(bits, k):
    rng = np.random.default_rng(bits + k)
    q = rng.choice([-1, 1], size=(9, bits)).astype(np.int8)
    db = rng.choice([-1, 1], size=(300, bits)).astype(np.int8)
    idx, dist = hamming_topk(pack_codes(q), pack_codes(db), k, bits=bits, chunk_size=4, n_jobs=2)
    kk = min(k, 300)
    assert idx.shape == (9, kk) and dist.shape == (9, kk)
    for i in range(9):
        full = (bits - db.astype(int) @ q[i].astype(int)) // 2
        order = np.argsort(full, kind="stable")[:kk]
        assert idx[i].tolist() == order.tolist()
        assert dist[i].tolist() == full[order].tolist()


def test_evaluate_ignores_chunking_and_threads_on_a_larger_problem():
    rng = np.random.default_rng(9)
    q = rng.choice([-1, 1], size=(40, 16)).astype(np.int8)
    db = rng.choice([-1, 1], size=(3000, 16)).astype(np.int8)
    ql, dl = rng.integers(0, 5, 40), rng.integers(0, 5, 3000)
    conv = Conventions(map_topk=200, curve_max_k=300)
    base = evaluate(q, db, ql, dl, conv)
    for chunk_size, n_jobs in [(1, 2), (7, 2), (40, 1), (None, 3)]:
        other = evaluate(q, db, ql, dl, conv, chunk_size=chunk_size, n_jobs=n_jobs)
        assert other.metrics == base.metrics
        for name in base.curves:
            assert other.curves[name].equals(base.curves[name])


def test_duplicate_queries_are_ranked_once_and_expanded_in_order():
    rng = np.random.default_rng(12)
    q = rng.choice([-1, 1], size=(30, 5)).astype(np.int8)  # 5 bits: many equal codes
    ql = rng.integers(0, 3, 30)
    db = rng.choice([-1, 1], size=(400, 5)).astype(np.int8)
    dl = rng.integers(0, 3, 400)
    both = evaluate(np.vstack([q, q[::-1]]), db, np.concatenate([ql, ql[::-1]]), dl)
    single = evaluate(q, db, ql, dl)
    ap = single.per_query["ap"]
    assert np.array_equal(both.per_query["ap"], np.concatenate([ap, ap[::-1]]))
    for i in range(30):  # each query alone gives its own AP
        alone = evaluate(q[i:i + 1], db, ql[i:i + 1], dl, Conventions(map_topk=400))
        assert alone.per_query["ap"][0] == pytest.approx(ap[i], abs=1e-15)
    assert both.metrics["map"] == pytest.approx(single.metrics["map"], abs=1e-15)
