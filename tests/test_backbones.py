"""The shared backbones: shapes, AlexNet weights handling, input batching, thread policy."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from hashbench import backbones
from hashbench.backbones import (
    alexnet_weights_path,
    build_backbone,
    cpu_threads,
    input_shape,
    iterate_batches,
    threads_for,
    to_batch,
)
from hashbench.errors import ConfigError, DataError


@pytest.mark.parametrize("name, shape", [("mlp", (64,)), ("cnn", (1, 8, 8)), ("cnn", (3, 5, 7))])
def test_small_backbones_map_inputs_to_bits(name, shape):
    torch.manual_seed(0)
    net = build_backbone(name, 12, shape)
    out = net(torch.randn(5, *shape))
    assert out.shape == (5, 12)
    assert torch.isfinite(out).all()


def test_alexnet_replaces_the_last_layer_and_takes_small_or_grey_images():
    torch.manual_seed(0)
    net = build_backbone("alexnet", 16, (3, 32, 32), pretrained=False, image_size=64)
    last = net.model.classifier[6]
    assert isinstance(last, torch.nn.Linear) and (last.in_features, last.out_features) == (4096, 16)
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 16)
        assert net(torch.rand(2, 1, 8, 8)).shape == (2, 16)  # grey -> RGB, resized inside


def test_pretrained_alexnet_offline_without_cached_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(DataError) as err:
        build_backbone("alexnet", 16, (3, 224, 224), pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / "alexnet-") in message
    assert "pretrained=False" in message and "no network" in message


def test_cached_alexnet_weights_are_used_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = alexnet_weights_path()
    assert path.parent == tmp_path / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # only its presence is checked before torchvision loads it

    def no_download(*args, **kwargs):
        raise AssertionError("must not download when the weights are cached")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    assert backbones.alexnet_weights().url.endswith(path.name)


def test_bad_backbone_requests_are_config_errors():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet'.*mlp"):
        build_backbone("resnet", 8, (64,))
    with pytest.raises(ConfigError, match="pretrained=False"):
        build_backbone("mlp", 8, (64,), pretrained=True)
    with pytest.raises(ConfigError, match="backbone='mlp'"):
        build_backbone("cnn", 8, (64,))
    with pytest.raises(ConfigError, match="alexnet"):
        build_backbone("alexnet", 8, (64,), pretrained=False)


def test_to_batch_converts_arrays_images_and_collections():
    feats = np.arange(12, dtype=np.float64).reshape(4, 3)
    batch = to_batch(feats, [2, 0])
    assert batch.dtype == torch.float32 and batch.tolist() == [[6, 7, 8], [0, 1, 2]]

    hwc = np.full((3, 5, 6, 3), 255, np.uint8)
    hwc[1, 0, 0, 2] = 0
    images = to_batch(hwc, [1])
    assert images.shape == (1, 3, 5, 6)
    assert images[0, 2, 0, 0] == 0 and images[0, 0, 0, 0] == 1.0

    grey_items = [np.zeros((8, 8), np.uint8), torch.ones(1, 8, 8)]
    assert to_batch(grey_items, [0, 1]).shape == (2, 1, 8, 8)
    assert input_shape(grey_items) == (1, 8, 8)
    assert input_shape(feats) == (3,)

    chunks = list(iterate_batches(feats, 3))
    assert [len(c) for c in chunks] == [3, 1]


def test_thread_policy_and_restore(monkeypatch):
    monkeypatch.delenv(backbones.THREADS_ENV, raising=False)
    assert threads_for("mlp", "cpu") == 1 and threads_for("cnn", "cpu") == 1
    assert threads_for("alexnet", "cpu") is None and threads_for("mlp", "cuda") is None
    monkeypatch.setenv(backbones.THREADS_ENV, "3")
    assert threads_for("mlp", "cpu") == 3
    monkeypatch.setenv(backbones.THREADS_ENV, "many")
    with pytest.raises(ConfigError, match=backbones.THREADS_ENV):
        threads_for("mlp", "cpu")

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with cpu_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before
