"""Contribution values on the digits task, with models really trained by fedledger's trainer
and the exact integer utility: GTG-Shapley ranks members as exact Shapley does, a member with
half its labels flipped is worth less than every honest one, and two members with the same
data share their value."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmarks.scores import round_utility
from scipy.stats import spearmanr

from fedledger.aggregation import fixedpoint as fx
from fedledger.config import TaskConfig, load_config
from fedledger.incentives.shapley import exact_shapley, permutation_shapley
from fedledger.incentives.utility import DenseNetwork, RoundUtility
from fedledger.learning.torch_trainer import TorchTrainer
from fedledger.seeds import derive_seed
from fedledger.task import prepare_task

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits.toml"
SEED = b"\x07" * 32


@pytest.fixture(scope="module")
def digits() -> TaskConfig:
    """Six members with data of the same distribution (IID): each honest one is worth about
    the same, so a bad one stands out; the test set is the validation set."""
    task = load_config(DIGITS)
    return replace(task, nodes=6, rounds=1, data=replace(task.data, partition="iid"))


def test_the_integer_network_predicts_as_torch_does(digits: TaskConfig) -> None:
    prepared = prepare_task(digits)
    trainer = TorchTrainer.for_dataset(digits.model, prepared.data.nodes[0].train)
    base = trainer.init_params(derive_seed(digits.seed, "init"))
    fit = trainer.fit(base, prepared.data.nodes[0].train, digits.train, seed=1)
    test = prepared.data.test
    torch_acc = trainer.evaluate(fit.params, test)["accuracy"]
    utility = RoundUtility(base=fx.quantize_params(base), models=[fx.quantize_params(fit.params)],
                           weights=[1],
                           shapes=[p.shape for p in base], x=test.x, y=test.y)  # fmt: skip
    exact_acc = utility(frozenset({0})) / len(test)
    assert exact_acc == pytest.approx(torch_acc, abs=0.01)  # fixed point: a few near-ties


def test_gtg_shapley_ranks_like_exact_shapley_and_flipped_labels_rank_last(
    digits: TaskConfig,
) -> None:
    nodes = [n.train for n in prepare_task(digits).data.nodes]
    # Member 5 flips half its labels (to the next class).
    bad = nodes[5]
    flip = np.arange(len(bad)) % 2 == 0
    y = bad.y.copy()
    y[flip] = (y[flip] + 1) % 10
    nodes[5] = replace(bad, y=y)
    utility = round_utility(digits, nodes)
    exact = exact_shapley(6, utility)
    estimate, evaluations = permutation_shapley(6, utility, seed=SEED, max_evaluations=30 * 6)
    assert evaluations <= 180
    rho = spearmanr([float(x) for x in exact], [float(x) for x in estimate]).statistic
    assert rho >= 0.9, (exact, estimate)
    for values in (exact, estimate):
        assert all(values[5] < values[i] for i in range(5)), values


def test_two_members_with_the_same_data_share_its_value(digits: TaskConfig) -> None:
    nodes = [n.train for n in prepare_task(digits).data.nodes]
    nodes[4] = nodes[3]  # member 4 holds a copy of member 3's data
    utility = round_utility(digits, nodes)
    values = exact_shapley(6, utility)
    pair = values[3] + values[4]
    assert pair > 0
    assert abs(values[3] - values[4]) <= pair / 4  # about half each


def test_a_network_that_is_not_dense_is_refused() -> None:
    from fedledger.errors import AggregationError

    with pytest.raises(AggregationError, match="linear layer"):
        DenseNetwork(np.zeros(13, np.int64), [(2, 5), (3,)])


def test_the_round_function_scores_kept_updates_and_a_free_rider_gets_zero(
    digits: TaskConfig,
) -> None:
    from fedledger.aggregation import SCORE_TOTAL
    from fedledger.aggregation.round import aggregate_round
    from fedledger.commit import encode
    from fedledger.incentives.scores import Scoring

    prepared = prepare_task(digits)
    trainer = TorchTrainer.for_dataset(digits.model, prepared.data.nodes[0].train)
    base = trainer.init_params(derive_seed(digits.seed, "init"))
    blobs = [encode(trainer.fit(base, n.train, digits.train, seed=i).params)
             for i, n in enumerate(prepared.data.nodes[:3])]  # fmt: skip
    blobs.append(encode(base))  # a free-rider sends the base back: the screen rejects it
    test = prepared.data.test
    scoring = Scoring(method="shapley", x=test.x, y=test.y, seed=SEED)
    result = aggregate_round(digits.aggregation, base=encode(base), updates=blobs,
                             num_examples=[100] * 4, scoring=scoring)  # fmt: skip
    assert result.scores[3] == 0
    assert 3 in result.rejected
    assert sum(result.scores) == SCORE_TOTAL
    assert all(s > 0 for s in result.scores[:3])
    again = aggregate_round(digits.aggregation, base=encode(base), updates=blobs,
                            num_examples=[100] * 4, scoring=scoring)  # fmt: skip
    assert again.scores == result.scores  # deterministic
    plain = aggregate_round(digits.aggregation, base=encode(base), updates=blobs,
                            num_examples=[100] * 4)  # fmt: skip
    assert plain.model == result.model  # scores change the rewards, never the model


def test_scores_are_refused_where_they_cannot_be_computed() -> None:
    from fedledger.config import parse_config
    from fedledger.errors import ConfigError

    ok = parse_config({"incentives": {"scores": "loo"}})
    assert ok.incentives.scores == "loo"
    assert "incentives" not in parse_config({}).to_dict()  # documents without it unchanged
    bad: list[tuple[dict[str, Any], str]] = [
        ({"incentives": {"scores": "votes"}}, "incentives.scores"),
        ({"incentives": {"scores": "shapley", "max_evaluations": 1}},
         "incentives.max_evaluations"),
        ({"incentives": {"scores": "shapley"}, "model": {"name": "cnn"}}, "incentives.scores"),
        ({"incentives": {"scores": "shapley"}, "privacy": {"secure_aggregation": True},
          "task": {"nodes": 4}}, "incentives.scores"),
    ]  # fmt: skip
    for doc, field in bad:
        with pytest.raises(ConfigError) as info:
            parse_config(doc)
        assert info.value.field == field, doc
