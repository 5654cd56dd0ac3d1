"""Hyper-parameters are checked once, before any trial starts (types from the defaults,
ranges declared by each method): exit 2, one line, nothing recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from hashbench import registry
from hashbench.cli import main
from hashbench.errors import ConfigError
from hashbench.params import check_params, rules_of

BAD = [
    ("itq.n_iter=-5", "itq.n_iter must be >= 0, got -5"),
    ("itq.n_iter=abc", "itq.n_iter: expected an integer, got 'abc'"),
    ("itq.bits=8", "itq.bits is set with --bits, not --param"),
    ("lfh.extension=tree", "lfh.extension: 'tree' is not one of 'trees', 'linear'; did you mean 'trees'?"),
    ("linv.beta=1.5", "linv.beta must be in (0, 1), got 1.5"),
    ("adsh.backbone=vgg", "adsh.backbone: 'vgg' is not one of 'mlp', 'cnn', 'alexnet'"),
    ("adsh.learning_rate=0", "adsh.learning_rate must be positive, got 0"),
    ("dpsh.epochs=2.5", "dpsh.epochs: expected an integer, got 2.5"),
    ("sdh.sigma=-1", "sdh.sigma must be positive, got -1"),
]


@pytest.mark.parametrize("param,message", BAD, ids=[b[0] for b in BAD])
def test_bad_values_exit_2_before_anything_is_recorded(param, message, capsys):
    code = main(["run", "--methods", param.split(".")[0], "--bits", "8", "--param", param, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"error: {message}"
    assert not Path("results").exists()  # no store was even created


def test_bits_limit_and_good_values_pass():
    with pytest.raises(ConfigError, match="between 1 and 32767"):
        check_params(registry.get("lsh"), {}, 100_000)
    check_params(registry.get("itq"), {"n_iter": 0}, 12)
    check_params(registry.get("dpsh"), {"output_scale": None, "learning_rate": 1}, 12)  # None: the method's choice
    assert rules_of(registry.get("adsh"))["outer_iters"] == ">0"  # derived from positive_fields


def test_command_line_values_take_true_and_false_as_flags():
    from hashbench.cli import parse_params

    parsed = parse_params(["ddash.balance=false", "ddash.shared_codes=TRUE", "itq.n_iter=30",
                           "dpsh.learning_rate=0.5", "lfh.extension=trees", "adsh.pretrained=None"])
    assert parsed == {"ddash": {"balance": False, "shared_codes": True}, "itq": {"n_iter": 30},
                      "dpsh": {"learning_rate": 0.5}, "lfh": {"extension": "trees"},
                      "adsh": {"pretrained": None}}
    assert parsed["ddash"]["balance"] is False  # a flag, not the text 'false' (which is truthy)
