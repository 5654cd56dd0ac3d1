from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hashbench.datasets import load
from hashbench.errors import ConfigError, UsageError
from hashbench.protocol import (
    builtin_protocols,
    get_protocol,
    load_protocol_file,
    materialise,
    protocol_for_dataset,
)


def test_digits_protocol_declares_the_documented_setting():
    p = get_protocol("digits")
    assert (p.dataset, p.query_per_class, p.train_mode, p.train_per_class) == (
        "digits", 10, "sampled", 50)
    assert p.map_topk is None and p.precision_ks == (100,)
    assert p.default_bits == (12, 24, 32, 48)
    assert protocol_for_dataset("digits") == p
    assert "digits" in builtin_protocols()


def test_digits_split_sizes_disjoint_and_per_class():
    data = load("digits")
    split = materialise(get_protocol("digits"), data.labels)
    assert len(split.query) == 100 and len(split.database) == 1697 and len(split.train) == 500
    assert not set(split.query) & set(split.database)
    assert len(set(split.query) | set(split.database)) == 1797
    assert set(split.train) <= set(split.database)
    np.testing.assert_array_equal(data.labels[split.query].sum(axis=0), [10] * 10)
    np.testing.assert_array_equal(data.labels[split.train].sum(axis=0), [50] * 10)
    assert len(split.sha256) == 64


def test_split_is_reproducible_and_hash_tracks_content():
    data = load("digits")
    proto = get_protocol("digits")
    a, b = materialise(proto, data.labels), materialise(proto, data.labels)
    assert a.sha256 == b.sha256
    np.testing.assert_array_equal(a.train, b.train)
    full = materialise(proto.with_train_mode("full"), data.labels)
    np.testing.assert_array_equal(full.query, a.query)   # same queries and database
    np.testing.assert_array_equal(full.train, full.database)
    assert full.sha256 != a.sha256
    other = materialise(dataclasses.replace(proto, seed=1), data.labels)
    assert other.sha256 != a.sha256


def test_multilabel_sampling_draws_distinct_items():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 5)) < 0.4).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    text = """
name = "ml"
dataset = "x"
[query]
per_class = 10
[train]
mode = "sampled"
per_class = 20
"""
    import tomllib

    from hashbench.protocol import parse_protocol
    split = materialise(parse_protocol(tomllib.loads(text), "ml"), labels)
    assert len(set(split.query)) == 50 and len(set(split.train)) == 100
    assert not set(split.query) & set(split.database)


@pytest.mark.parametrize("body, field", [
    ('name = "x"\n[query]\nper_class = 10\n[train]\nmode = "sampled"\nper_class = 5\n', "dataset"),
    ('name = "x"\ndataset = "digits"\n[query]\nper_class = -1\n[train]\nmode = "full"\n',
     "query.per_class"),
    ('name = "x"\ndataset = "digits"\n[query]\nper_class = 1\n[train]\nmode = "half"\n',
     "train.mode"),
    ('name = "x"\ndataset = "digits"\n[query]\nper_class = 1\n[train]\nmode = "sampled"\n',
     "train.per_class"),
    ('name = "x"\ndataset = "digits"\n[query]\nper_class = 1\n[train]\nmode = "full"\n'
     '[evaluation]\nmap_topk = "some"\n', "evaluation.map_topk"),
    ('name = "x"\ndataset = "digits"\n[query]\nper_class = 1\nper_klass = 2\n'
     '[train]\nmode = "full"\n', "per_klass"),
    ('name = "x"\ndataset = "digits"\n[query]\nper_class = "ten"\n[train]\nmode = "full"\n',
     "per_class"),
])
def test_bad_protocol_files_name_the_field(tmp_path, body, field):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=field) as info:
        load_protocol_file(path)
    assert "bad.toml" in str(info.value) and "\n" not in str(info.value)


def test_not_toml_and_unknown_names(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_protocol_file(path)
    with pytest.raises(UsageError, match="did you mean 'digits'"):
        get_protocol("digts")
    with pytest.raises(UsageError, match="no protocol for dataset"):
        protocol_for_dataset("imagenet")


def test_protocol_is_frozen():
    p = get_protocol("digits")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 3  # type: ignore[misc]
