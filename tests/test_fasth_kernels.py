"""Issue 14: FastH's compiled pair sums against the numpy reference path."""

from __future__ import annotations

import numpy as np
import pytest
from hashbench.methods._neyshabur import LabelGroups
from hashbench.methods.fasth import FastH, PairProblem, block_graph_cut, make_blocks

from hashbench.api import RunContext
from hashbench.testing import training_view


def _problem(n: int = 300, bit: int = 7, multilabel: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.eye(5, dtype=bool)[rng.integers(0, 5, n)]
    if multilabel:
        labels |= rng.random((n, 5)) < 0.15
    codes = np.where(rng.standard_normal((n, bit - 1)) > 0, 1, -1).astype(np.int8)
    groups = LabelGroups(labels, labels)
    return (PairProblem(codes, groups, bit, "numpy"), PairProblem(codes, groups, bit, "numba"),
            labels, rng)


@pytest.mark.parametrize("multilabel", [False, True])
def test_unaries_blocks_and_summaries_match(multilabel):
    reference, compiled, labels, rng = _problem(multilabel=multilabel)
    assert compiled.packed is not None
    z = np.where(rng.random(len(labels)) > 0.5, 1, -1).astype(np.int8)
    block = np.sort(rng.choice(len(labels), 40, replace=False))
    for got, want in zip(compiled.unary_and_block(block, z), reference.unary_and_block(block, z),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got, want = compiled.summary(z), reference.summary(z)
    for key in ("energy", "loss"):
        assert got[key] == pytest.approx(want[key], rel=1e-5)
    np.testing.assert_allclose(got["weights"], want["weights"], rtol=1e-5)


def test_graph_cut_codes_are_identical():
    reference, compiled, labels, _ = _problem(bit=9)
    blocks = make_blocks(labels, 2000, np.random.default_rng(0))
    z0 = np.ones(len(labels), dtype=np.int8)
    out = [block_graph_cut(p, blocks, z0, 2, np.random.default_rng(1)) for p in (reference, compiled)]
    np.testing.assert_array_equal(out[0], out[1])


def test_fits_agree_and_bad_kernels_are_refused():
    rng = np.random.default_rng(0)
    cls = rng.integers(0, 4, 200)
    x = (rng.standard_normal((200, 8)) + np.eye(4)[cls] @ rng.standard_normal((4, 8)) * 2).astype(np.float32)
    data = training_view(x, np.eye(4, dtype=np.uint8)[cls])
    codes = [FastH(bits=6, n_rounds=10, kernels=k).fit(data, RunContext(seed=0)).train_codes_
             for k in ("numpy", "numba")]
    assert np.mean(codes[0] == codes[1]) > 0.98
    with pytest.raises(Exception, match="kernels"):
        FastH(bits=4, kernels="gpu").fit(data, RunContext(seed=0))
