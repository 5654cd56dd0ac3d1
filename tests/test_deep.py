"""The symmetric deep template: batching, schedule, logging, seeding, codes, and a new method
in a few lines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from hashbench import conformance
from hashbench.api import MethodMeta, Part, RunContext, TrialData, binarize
from hashbench.datasets import load
from hashbench.deep import Batch, SymmetricDeepHasher, batch_bounds, learning_rates, similarity
from hashbench.errors import ConfigError, DataError, NotFittedError
from hashbench.testing import training_view


@dataclass(eq=False)
class CentreHash(SymmetricDeepHasher):
    """A fourth method in a few lines: pull similar outputs together, push others apart."""

    meta = MethodMeta(name="centrehash", title="CH", citation="test", family="deep",
                      supervised=True)
    epochs: int = 4
    learning_rate: float = 0.05
    spread: float = 1.0

    def activation(self, raw):
        return torch.tanh(raw)

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        sim = similarity(batch.labels, batch.labels)
        target = self.spread * (2 * sim - 1)
        return ((batch.outputs @ batch.outputs.T / self.bits - target) ** 2).mean()


@dataclass(eq=False)
class MemoryProbe(CentreHash):
    """Records what the template hands a memory-using loss."""

    meta = MethodMeta(name="memoryprobe", title="MP", citation="test", family="deep")
    uses_memory = True

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        self.seen_ = getattr(self, "seen_", [])
        self.seen_.append((batch.memory.clone(), batch.outputs.detach().clone(), batch.index.clone(),
                           batch.n_train, batch.epoch))
        return super().batch_loss(batch)


def _digits(n, seed=0):
    data = load("digits")
    idx = np.random.default_rng(seed).permutation(len(data))[:n]
    return data, idx


def _train_data(data, idx, kind="features"):
    return training_view(data.inputs(kind)[idx], data.labels[idx],
                         modality="image" if kind == "images" else kind)


def test_batch_bounds_cover_every_point_once_and_never_leave_a_single_point():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]  # the lone last point joins its neighbour
    assert batch_bounds(3, 128) == [(0, 3)]
    for n in range(2, 40):
        bounds = batch_bounds(n, 5)
        assert [b for b in bounds for b in range(*b)] == list(range(n))
        assert min(hi - lo for lo, hi in bounds) >= 2


def test_learning_rates_constant_or_log_spaced():
    np.testing.assert_allclose(learning_rates(0.1, None, 3), [0.1, 0.1, 0.1])
    np.testing.assert_allclose(learning_rates(0.1, 0.001, 3), [0.1, 0.01, 0.001])


def test_similarity_is_shared_label():
    a = torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.float32)
    b = torch.tensor([[0, 0, 1], [1, 1, 0], [0, 0, 0]], dtype=torch.float32)
    assert similarity(a, b).tolist() == [[0, 1, 0], [1, 1, 0]]


def test_a_new_method_is_a_dataclass_with_the_shared_hyper_parameters_first():
    names = CentreHash.param_names()
    assert names[0] == "bits" and names[-1] == "spread"
    assert {"epochs", "batch_size", "learning_rate", "weight_decay", "backbone"} <= set(names)
    method = CentreHash(bits=8, spread=0.5)
    assert method.get_params()["spread"] == 0.5 and method.get_params()["batch_size"] == 128
    assert method.get_params()["weight_decay"] == 5e-4 and method.epochs == 4
    assert method.meta.asymmetric is False
    conformance.check_meta(CentreHash)
    conformance.check_not_fitted(CentreHash)
    conformance.check_codes_contract(CentreHash)
    conformance.check_deterministic(CentreHash)


def test_fit_logs_every_epoch_and_encode_is_the_sign_of_the_network_output():
    data, idx = _digits(300)
    logged, progress = [], []

    def track(iterable, total=None, desc=""):
        progress.append((total, desc))
        return iter(iterable)

    ctx = RunContext(seed=0, log_metric=lambda n, v, s: logged.append((n, v, s)), progress=track)
    method = CentreHash(bits=16, epochs=5, eval_every=2).fit(_train_data(data, idx[:250]), ctx)
    assert progress == [(5, "centrehash")]
    for name in ("loss", "learning_rate", "elapsed_seconds"):
        assert [s for n, _, s in logged if n == name] == [0, 1, 2, 3, 4]
    assert [s for n, _, s in logged if n == "train_map"] == [1, 3, 4]  # every 2 and the last
    assert all(0 <= v <= 1 for n, v, _ in logged if n == "train_map")
    elapsed = [v for n, v, _ in logged if n == "elapsed_seconds"]
    assert elapsed == sorted(elapsed)
    losses = [v for n, v, _ in logged if n == "loss"]
    assert losses == method.losses_ and losses[-1] < losses[0]
    queries = data.features[idx[250:]]
    with torch.no_grad():
        raw = method.model_(torch.from_numpy(queries)).numpy()
    np.testing.assert_array_equal(method.encode(queries), binarize(raw))


class _FakeClock:
    """``time.perf_counter`` that advances 1 s per reading; ``spend`` adds more (an evaluation)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now

    def spend(self, seconds):
        self.now += seconds


def test_on_epoch_hook_sees_the_current_network_and_its_time_is_not_training_time(monkeypatch):
    data, idx = _digits(300)
    train, queries = _train_data(data, idx[:250]), data.features[idx[250:]]
    clock = _FakeClock()
    monkeypatch.setattr("hashbench.backbones.time", clock)  # the training clock (StepLog)
    logged, calls = [], []

    def hook(step, elapsed, method):
        calls.append((step, elapsed, method.encode(queries)))
        clock.spend(1000.0)  # a slow evaluation: must not count as training time

    ctx = RunContext(seed=0, log_metric=lambda n, v, s: logged.append((n, v, s)), on_epoch=hook)
    method = CentreHash(bits=16, epochs=4).fit(train, ctx)
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    elapsed = [v for n, v, _ in logged if n == "elapsed_seconds"]
    assert [c[1] for c in calls] == elapsed
    assert max(elapsed) < 1000.0 and elapsed == sorted(elapsed)
    assert not np.array_equal(calls[0][2], calls[-1][2])  # the network as it is at each epoch
    np.testing.assert_array_equal(calls[-1][2], method.encode(queries))
    # the hook observes only: the same seed without it trains the same network
    plain = CentreHash(bits=16, epochs=4).fit(train, RunContext(seed=0))
    np.testing.assert_array_equal(plain.encode(queries), method.encode(queries))
    assert plain.model_.training is False and method.model_.training is False


def test_memory_holds_the_latest_outputs_with_the_batch_rows_current():
    data, idx = _digits(140)
    method = MemoryProbe(bits=8, epochs=2, batch_size=64)
    method.fit(_train_data(data, idx), RunContext(seed=3))
    assert [s[4] for s in method.seen_] == [0, 0, 0, 1, 1, 1]  # batches of 64, 64, 12
    first_memory, first_out, first_index, n_train, _ = method.seen_[0]
    assert n_train == 140 and first_memory.shape == (140, 8)
    torch.testing.assert_close(first_memory[first_index], first_out)
    unseen = torch.ones(140, dtype=torch.bool)
    unseen[first_index] = False
    assert torch.all(first_memory[unseen] == 0)  # points not seen yet are zeros
    memory, out, index, _, _ = method.seen_[2]  # last batch of epoch 0: everything seen
    torch.testing.assert_close(memory[index], out)
    assert torch.all(memory.abs().sum(1) > 0)


def test_seed_fixes_the_codes_and_leaves_the_global_torch_state_alone():
    data, idx = _digits(200, seed=1)
    train = _train_data(data, idx)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = CentreHash(bits=8).fit(train, RunContext(seed=5)).encode(data.features)
    assert torch.equal(torch.rand(3), before)
    b = CentreHash(bits=8).fit(train, RunContext(seed=5)).encode(data.features)
    c = CentreHash(bits=8).fit(train, RunContext(seed=6)).encode(data.features)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_image_backbone_and_errors():
    data, idx = _digits(100, seed=2)
    method = CentreHash(bits=8, epochs=1, backbone="cnn")
    assert method.modalities == ("image",) and CentreHash().modalities == ("features",)
    method.fit(_train_data(data, idx, "images"), RunContext(seed=0))
    assert method.encode(data.images[:7]).shape == (7, 8)
    with pytest.raises(NotFittedError):
        CentreHash().encode(data.features[:2])
    for bad in ({"epochs": 0}, {"learning_rate": -1.0}, {"momentum": -0.1}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            CentreHash(bits=8, **bad).fit(_train_data(data, idx), RunContext())
    with pytest.raises(ConfigError, match="pretrained"):
        CentreHash(bits=8, pretrained=True).fit(_train_data(data, idx), RunContext())
    with pytest.raises(DataError):
        part = Part("train", np.arange(5), data.labels[:4], {"features": data.features})
        CentreHash(bits=8).fit(TrialData(train=part, database=part), RunContext())


def test_a_diverged_trial_is_failed_not_recorded_as_a_result(tmp_path, capsys):
    from hashbench.cli import main
    from hashbench.tracking import Store

    uri = f"sqlite:///{tmp_path}/s.db"
    code = main(["run", "--methods", "dsh", "--bits", "8", "--quiet", "--tracking-uri", uri,
                 "--param", "dsh.learning_rate=1e12", "--param", "dsh.momentum=0.99", "--param", "dsh.epochs=5"])
    assert code == 1
    (record,) = Store(uri).trial_records()
    assert record.status == "FAILED" and "dsh diverged at step" in record.error
    assert "map" not in record.metrics
    assert "dsh diverged at step" in capsys.readouterr().err
