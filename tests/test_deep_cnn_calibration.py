"""The small CNN's input standardisation for the symmetric deep methods (DPSH, DSH, DHN), and
that it stays opt-in: ADSH and a bare SmallCNN see the images as they are (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hashbench.api import RunContext, trial_data
from hashbench.backbones import SmallCNN, build_backbone, channel_stats, to_batch
from hashbench.errors import ConfigError
from hashbench.registry import available


def _images(n: int = 40, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Colour images (channels last, uint8) whose class is which channel is brightest."""
    rng = np.random.default_rng(seed)
    classes = np.arange(n) % 2
    images = rng.integers(0, 120, size=(n, size, size, 3))
    images[np.arange(n), :, :, classes] += 100
    return images.astype(np.uint8), np.eye(2, dtype=np.uint8)[classes]


def test_channel_stats_match_numpy_over_all_pixels():
    images, _ = _images()
    mean, std = channel_stats(images, batch_size=7)  # several batches
    x = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-5)
    flat = np.zeros((4, 2, 5, 5), np.float32)  # a constant channel keeps std 1 (shift only)
    flat[:, 1] = np.arange(4)[:, None, None]
    mean, std = channel_stats(flat)
    assert std[0] == 1.0 and mean[0] == 0.0 and std[1] == pytest.approx(np.arange(4).std())
    with pytest.raises(Exception, match="images"):
        channel_stats(np.zeros((3, 5), np.float32))


def test_small_cnn_is_unchanged_unless_asked():
    torch.manual_seed(0)
    net = build_backbone("cnn", 6, (3, 8, 8))
    assert net.input_mean is None and "input_mean" not in net.state_dict()
    x = torch.rand(5, 3, 8, 8)
    before = net(x)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    net.standardise_inputs(mean, std)
    expected = net.head(net.features((x - torch.tensor(mean).view(1, 3, 1, 1))
                                     / torch.tensor(std).view(1, 3, 1, 1)))
    torch.testing.assert_close(net(x), expected)
    assert not torch.allclose(net(x), before)
    with pytest.raises(ConfigError):
        net.standardise_inputs([0.5], [0.2])
    with pytest.raises(ConfigError):
        SmallCNN((3, 8, 8), 6).standardise_inputs([0.0] * 3, [1.0, 0.0, 1.0])


@pytest.mark.parametrize("name", ["dpsh", "dsh", "dhn"])
def test_symmetric_methods_standardise_the_cnn_inputs(name):
    images, labels = _images()
    data = trial_data({"image": images}, labels, np.arange(30), np.arange(40))
    method = available()[name](bits=8, backbone="cnn", epochs=2, batch_size=16)
    method.fit(data.for_fit(), RunContext(seed=0))
    mean, std = channel_stats(images[:30])
    np.testing.assert_allclose(method.model_.input_mean.flatten().numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(method.model_.input_std.flatten().numpy(), std, rtol=1e-6)
    # the same images shifted by a constant per channel give the same network and codes: the
    # shift is removed in training and in encoding alike
    shift = np.array([0.1, -0.05, 0.2], np.float32).reshape(1, 3, 1, 1)
    as_float = to_batch(images, np.arange(40)).numpy()
    shifted = trial_data({"image": as_float + shift}, labels, np.arange(30), np.arange(40))
    other = available()[name](bits=8, backbone="cnn", epochs=2, batch_size=16)
    other.fit(shifted.for_fit(), RunContext(seed=0))
    codes, shifted_codes = method.encode(as_float), other.encode(as_float + shift)
    assert (codes == shifted_codes).mean() > 0.99  # float rounding may flip a near-zero output


def test_mlp_path_and_adsh_keep_their_inputs():
    images, labels = _images()
    features = images.reshape(len(images), -1).astype(np.float32) / 255.0
    data = trial_data({"features": features}, labels, np.arange(30), np.arange(40))
    dsh = available()["dsh"](bits=8, epochs=1, batch_size=16)
    dsh.fit(data.for_fit(), RunContext(seed=0))
    assert not hasattr(dsh.model_, "input_mean")  # the MLP has no such step
    adsh = available()["adsh"](bits=8, backbone="cnn", outer_iters=1, inner_epochs=1, num_samples=10)
    image_data = trial_data({"image": images}, labels, np.arange(30), np.arange(40))
    adsh.fit(image_data.for_fit(), RunContext(seed=0))
    assert adsh.model_.input_mean is None
