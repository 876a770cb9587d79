"""Tests of fedledger.learning: the config types, the model registry and TorchTrainer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedledger.data import Dataset, load_digits
from fedledger.errors import ConfigError, TrainingError
from fedledger.learning import (
    MODELS,
    FitResult,
    ModelSpec,
    Params,
    TorchTrainer,
    TrainConfig,
    Trainer,
    build_model,
)

# Fast settings for the mechanical tests; the learning tests choose their own.
QUICK = TrainConfig(lr=0.05, batch_size=16, epochs=1)

EXPECTED_SHAPES: dict[str, list[tuple[int, ...]]] = {
    "logreg": [(10, 64), (10,)],
    "mlp": [(64, 64), (64,), (64, 64), (64,), (10, 64), (10,)],
    "cnn": [
        (16, 1, 3, 3),
        (16,),
        (32, 16, 3, 3),
        (32,),
        (64, 32 * 4 * 4),
        (64,),
        (10, 64),
        (10,),
    ],
}


# -- fixtures -------------------------------------------------------------------------------------


def subset(data: Dataset, idx: np.ndarray, name: str) -> Dataset:
    return Dataset(
        name=name,
        x=np.ascontiguousarray(data.x[idx]),
        y=np.ascontiguousarray(data.y[idx]),
        num_classes=data.num_classes,
        feature_shape=data.feature_shape,
        image_shape=data.image_shape,
    )


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="module")
def split(digits: Dataset) -> tuple[Dataset, Dataset]:
    """A seeded 80/20 train/test split of digits."""
    perm = np.random.default_rng(0).permutation(len(digits))
    cut = int(0.8 * len(digits))
    return subset(digits, perm[:cut], "digits-train"), subset(digits, perm[cut:], "digits-test")


@pytest.fixture(scope="module")
def small(digits: Dataset) -> Dataset:
    """200 digits: enough for the mechanical tests, fast to train on."""
    return subset(digits, np.arange(200), "digits-200")


def make_trainer(name: str, data: Dataset) -> TorchTrainer:
    return TorchTrainer.for_dataset(ModelSpec(name=name), data)


def as_bytes(params: Params) -> list[bytes]:
    return [p.tobytes() for p in params]


def copies(params: Params) -> Params:
    return [p.copy() for p in params]


# -- the Trainer protocol -------------------------------------------------------------------------


def test_torch_trainer_satisfies_the_protocol(small: Dataset) -> None:
    trainer: Trainer = make_trainer("logreg", small)  # checked by mypy
    assert isinstance(trainer.init_params(0), list)


def test_models_registry_names() -> None:
    assert MODELS == ("logreg", "mlp", "cnn")


# -- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_init_params_shapes_and_dtypes(name: str, small: Dataset) -> None:
    trainer = make_trainer(name, small)
    params = trainer.init_params(0)
    assert [p.shape for p in params] == EXPECTED_SHAPES[name]
    assert list(trainer.param_shapes) == EXPECTED_SHAPES[name]
    assert len(trainer.param_names) == len(params)
    assert trainer.num_parameters == sum(p.size for p in params)
    for p in params:
        assert p.dtype == np.float32
        assert p.flags.c_contiguous
        assert p.flags.owndata
        assert p.flags.writeable
        assert np.isfinite(p).all()


@pytest.mark.parametrize("name", MODELS)
def test_init_params_deterministic_per_seed(name: str, small: Dataset) -> None:
    trainer = make_trainer(name, small)
    a, b = trainer.init_params(7), trainer.init_params(7)
    assert as_bytes(a) == as_bytes(b)
    # A second trainer instance gives the same arrays for the same seed.
    assert as_bytes(make_trainer(name, small).init_params(7)) == as_bytes(a)
    c = trainer.init_params(8)
    assert as_bytes(c) != as_bytes(a)


def test_init_params_leaves_global_rng_alone(small: Dataset) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(5)
    torch.manual_seed(1234)
    trainer = make_trainer("mlp", small)
    trainer.init_params(3)
    trainer.fit(trainer.init_params(4), small, QUICK, seed=5)
    assert torch.equal(torch.rand(5), expected)


@pytest.mark.parametrize("name", MODELS)
def test_param_round_trip(name: str, small: Dataset) -> None:
    trainer = make_trainer(name, small)
    params = trainer.init_params(1)
    trainer.set_params(params)
    got = trainer.get_params()
    assert as_bytes(got) == as_bytes(params)
    # No memory is shared in either direction.
    for g, p in zip(got, params, strict=True):
        assert not np.shares_memory(g, p)
    before = as_bytes(params)
    got[0][...] = 99.0
    assert as_bytes(trainer.get_params()) == before
    params[0][...] = -99.0
    assert as_bytes(trainer.get_params()) == before


@settings(max_examples=25, deadline=None)
@given(
    w=hnp.arrays(np.float32, (10, 64), elements=st.floats(-1e6, 1e6, width=32)),
    b=hnp.arrays(np.float32, (10,), elements=st.floats(-1e6, 1e6, width=32)),
)
def test_param_round_trip_property(w: np.ndarray, b: np.ndarray) -> None:
    trainer = TorchTrainer(model=ModelSpec(name="logreg"), feature_shape=(64,), num_classes=10)
    trainer.set_params([w, b])
    got = trainer.get_params()
    assert got[0].tobytes() == w.tobytes()
    assert got[1].tobytes() == b.tobytes()


def test_set_params_accepts_readonly_noncontiguous_and_float64(small: Dataset) -> None:
    trainer = make_trainer("logreg", small)
    w, b = trainer.init_params(0)
    w_f = np.asfortranarray(w)
    w_f.setflags(write=False)
    b64 = b.astype(np.float64)
    trainer.set_params([w_f, b64])
    got = trainer.get_params()
    assert np.array_equal(got[0], w)
    assert np.array_equal(got[1], b)


@pytest.mark.parametrize("name", MODELS)
def test_fit_does_not_mutate_inputs(name: str, small: Dataset) -> None:
    trainer = make_trainer(name, small)
    params = trainer.init_params(0)
    before = as_bytes(params)
    x_before, y_before = small.x.tobytes(), small.y.tobytes()
    result = trainer.fit(params, small, QUICK, seed=0)
    assert as_bytes(params) == before
    assert small.x.tobytes() == x_before
    assert small.y.tobytes() == y_before
    assert as_bytes(result.params) != before  # training did change the model
    for p, q in zip(result.params, params, strict=True):
        assert not np.shares_memory(p, q)
        assert p.dtype == np.float32
        assert p.flags.c_contiguous
    # The same for read-only inputs.
    for p in params:
        p.setflags(write=False)
    again = trainer.fit(params, small, QUICK, seed=0)
    assert as_bytes(again.params) == as_bytes(result.params)


def test_fit_result_fields(small: Dataset) -> None:
    trainer = make_trainer("mlp", small)
    result = trainer.fit(trainer.init_params(0), small, QUICK, seed=0)
    assert isinstance(result, FitResult)
    assert result.num_examples == len(small)
    assert isinstance(result.num_examples, int)
    assert math.isfinite(result.metrics["loss"])
    assert result.metrics["loss"] > 0
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


# -- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_is_deterministic_per_seed(name: str, optimizer: str, small: Dataset) -> None:
    config = TrainConfig(
        lr=0.01 if optimizer == "adam" else 0.05, batch_size=16, epochs=2, optimizer=optimizer
    )
    trainer = make_trainer(name, small)
    params = trainer.init_params(0)
    a = trainer.fit(params, small, config, seed=11)
    b = trainer.fit(params, small, config, seed=11)
    assert as_bytes(a.params) == as_bytes(b.params)
    assert a.metrics == b.metrics
    # A fresh trainer (with its own model instance and data cache) agrees bit for bit.
    c = make_trainer(name, small).fit(params, small, config, seed=11)
    assert as_bytes(c.params) == as_bytes(a.params)
    # Another shuffling seed gives other parameters.
    d = trainer.fit(params, small, config, seed=12)
    assert as_bytes(d.params) != as_bytes(a.params)


def test_fit_on_equal_copy_of_data_matches(small: Dataset) -> None:
    """The tensor cache is keyed by object identity; an equal copy must train the same."""
    twin = subset(small, np.arange(len(small)), "twin")
    trainer = make_trainer("mlp", small)
    params = trainer.init_params(0)
    a = trainer.fit(params, small, QUICK, seed=3)
    b = trainer.fit(params, twin, QUICK, seed=3)
    assert as_bytes(a.params) == as_bytes(b.params)


def test_many_datasets_through_the_cache(small: Dataset) -> None:
    trainer = make_trainer("logreg", small)
    params = trainer.init_params(0)
    parts = [subset(small, np.arange(i, len(small), 20), f"part-{i}") for i in range(20)]
    first = [trainer.fit(params, p, QUICK, seed=1).params for p in parts]
    second = [trainer.fit(params, p, QUICK, seed=1).params for p in reversed(parts)]
    assert [as_bytes(p) for p in first] == [as_bytes(p) for p in reversed(second)]


# -- learning happens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "config", "min_accuracy"),
    [
        # Digits come in native pixel units (0..16): learning rates are set for that scale.
        ("logreg", TrainConfig(lr=0.01, batch_size=32, epochs=10), 0.90),
        ("mlp", TrainConfig(lr=0.05, batch_size=32, epochs=10), 0.93),
        ("mlp", TrainConfig(lr=0.005, batch_size=32, epochs=10, optimizer="adam"), 0.93),
        ("cnn", TrainConfig(lr=0.02, batch_size=32, epochs=5, momentum=0.5), 0.93),
    ],
)
def test_central_training_learns_digits(
    name: str, config: TrainConfig, min_accuracy: float, split: tuple[Dataset, Dataset]
) -> None:
    train, test = split
    trainer = make_trainer(name, train)
    params = trainer.init_params(0)
    before = trainer.evaluate(params, test)
    assert before["accuracy"] < 0.5
    result = trainer.fit(params, train, config, seed=0)
    after = trainer.evaluate(result.params, test)
    assert after["accuracy"] >= min_accuracy, after
    assert after["loss"] < before["loss"]
    assert after["num_examples"] == float(len(test))
    assert result.metrics["accuracy"] >= min_accuracy - 0.05


def test_default_config_mlp_loss_decreases(split: tuple[Dataset, Dataset]) -> None:
    train, _ = split
    trainer = make_trainer("mlp", train)
    params = trainer.init_params(0)
    start = trainer.evaluate(params, train)["loss"]
    result = trainer.fit(params, train, TrainConfig(epochs=3), seed=0)
    assert trainer.evaluate(result.params, train)["loss"] < start


# -- evaluate -------------------------------------------------------------------------------------


def test_evaluate_matches_numpy_logreg(small: Dataset) -> None:
    trainer = make_trainer("logreg", small)
    w, b = trainer.init_params(5)
    logits = small.x.astype(np.float64) @ w.T.astype(np.float64) + b
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected_loss = -log_probs[np.arange(len(small)), small.y].mean()
    expected_acc = float((logits.argmax(axis=1) == small.y).mean())
    got = trainer.evaluate([w, b], small)
    assert set(got) == {"accuracy", "loss", "num_examples"}
    assert got["num_examples"] == float(len(small))
    assert got["accuracy"] == pytest.approx(expected_acc)
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_evaluate_batches_larger_than_one_chunk(digits: Dataset) -> None:
    """More than 4096 rows: the chunked evaluation must equal the per-chunk average."""
    big = subset(digits, np.tile(np.arange(len(digits)), 3), "digits-x3")
    assert len(big) > 4096
    trainer = make_trainer("mlp", digits)
    params = trainer.init_params(0)
    one = trainer.evaluate(params, digits)
    three = trainer.evaluate(params, big)
    assert three["num_examples"] == 3 * one["num_examples"]
    assert three["accuracy"] == pytest.approx(one["accuracy"])
    assert three["loss"] == pytest.approx(one["loss"], rel=1e-5)


def test_empty_data(small: Dataset) -> None:
    empty = subset(small, np.arange(0), "empty")
    assert len(empty) == 0
    trainer = make_trainer("mlp", small)
    params = trainer.init_params(0)
    assert trainer.evaluate(params, empty) == {"accuracy": 0.0, "loss": 0.0, "num_examples": 0.0}
    result = trainer.fit(params, empty, QUICK, seed=0)
    assert result.num_examples == 0
    assert as_bytes(result.params) == as_bytes(params)
    assert result.metrics == {"loss": 0.0, "accuracy": 0.0}


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_wrong_param_shape_is_a_training_error(name: str, small: Dataset) -> None:
    trainer = make_trainer(name, small)
    params = trainer.init_params(0)
    bad = copies(params)
    bad[1] = np.zeros((bad[1].shape[0] + 1,), dtype=np.float32)
    expected = f"parameter 1 .*shape \\({bad[1].shape[0]},\\).*expected \\({params[1].shape[0]},\\)"
    with pytest.raises(TrainingError, match=expected):
        trainer.fit(bad, small, QUICK)
    with pytest.raises(TrainingError, match="parameter 1"):
        trainer.evaluate(bad, small)
    with pytest.raises(TrainingError, match="parameter 1"):
        trainer.set_params(bad)


def test_wrong_param_count_is_a_training_error(small: Dataset) -> None:
    trainer = make_trainer("mlp", small)
    params = trainer.init_params(0)
    with pytest.raises(TrainingError, match=r"expected 6 parameter arrays.*got 5"):
        trainer.fit(params[:-1], small, QUICK)
    with pytest.raises(TrainingError, match="expected 6"):
        trainer.evaluate([*params, params[-1]], small)


def test_params_of_another_model_are_rejected(small: Dataset) -> None:
    logreg = make_trainer("logreg", small).init_params(0)
    mlp = make_trainer("mlp", small)
    with pytest.raises(TrainingError):
        mlp.evaluate(logreg, small)


def test_unconvertible_param_keeps_the_cause(small: Dataset) -> None:
    trainer = make_trainer("logreg", small)
    w, b = trainer.init_params(0)
    bad_b = np.array(["x"] * b.shape[0], dtype=object)
    with pytest.raises(TrainingError, match="parameter 1") as info:
        trainer.set_params([w, bad_b])
    assert info.value.__cause__ is not None


def test_params_unchanged_after_rejected_set(small: Dataset) -> None:
    trainer = make_trainer("logreg", small)
    good = trainer.init_params(0)
    trainer.set_params(good)
    w, b = trainer.init_params(1)
    with pytest.raises(TrainingError):
        trainer.set_params([w, b[:-1]])
    assert as_bytes(trainer.get_params()) == as_bytes(good)


def test_huge_learning_rate_diverges(small: Dataset) -> None:
    trainer = make_trainer("mlp", small)
    config = TrainConfig(lr=1e12, batch_size=16, epochs=2)
    with pytest.raises(TrainingError, match="loss diverged"):
        trainer.fit(trainer.init_params(0), small, config, seed=0)


def test_non_finite_input_params_diverge(small: Dataset) -> None:
    trainer = make_trainer("logreg", small)
    w, b = trainer.init_params(0)
    w[0, 0] = np.nan
    with pytest.raises(TrainingError, match="loss diverged"):
        trainer.fit([w, b], small, QUICK)


def test_data_with_wrong_feature_shape(small: Dataset) -> None:
    trainer = TorchTrainer(model=ModelSpec(name="mlp"), feature_shape=(32,), num_classes=10)
    with pytest.raises(TrainingError, match="feature shape"):
        trainer.fit(trainer.init_params(0), small, QUICK)
    with pytest.raises(TrainingError, match="feature shape"):
        trainer.evaluate(trainer.init_params(0), small)


def test_labels_out_of_range(small: Dataset) -> None:
    trainer = TorchTrainer(model=ModelSpec(name="logreg"), feature_shape=(64,), num_classes=5)
    with pytest.raises(TrainingError, match="labels"):
        trainer.fit(trainer.init_params(0), small, QUICK)


def test_cnn_needs_an_image_shape() -> None:
    with pytest.raises(ConfigError) as info:
        TorchTrainer(model=ModelSpec(name="cnn"), feature_shape=(64,), num_classes=10)
    assert info.value.field == "model.name"
    with pytest.raises(ConfigError) as info:
        TorchTrainer(
            model=ModelSpec(name="cnn"), feature_shape=(64,), num_classes=10, image_shape=(1, 4, 4)
        )
    assert info.value.field == "image_shape"


def test_cnn_accepts_image_shaped_features() -> None:
    trainer = TorchTrainer(
        model=ModelSpec(name="cnn"), feature_shape=(1, 8, 8), num_classes=3, image_shape=(1, 8, 8)
    )
    rng = np.random.default_rng(0)
    data = Dataset(
        name="tiny-images",
        x=rng.random((12, 1, 8, 8), dtype=np.float32),
        y=rng.integers(0, 3, 12).astype(np.int64),
        num_classes=3,
        feature_shape=(1, 8, 8),
        image_shape=(1, 8, 8),
    )
    result = trainer.fit(trainer.init_params(0), data, QUICK)
    assert result.num_examples == 12
    assert trainer.evaluate(result.params, data)["num_examples"] == 12.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"feature_shape": ()}, "feature_shape"),
        ({"feature_shape": (0,)}, "feature_shape"),
        ({"num_classes": 1}, "num_classes"),
        ({"threads": 0}, "threads"),
    ],
)
def test_bad_trainer_arguments(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {
        "model": ModelSpec(name="mlp"),
        "feature_shape": (64,),
        "num_classes": 10,
    }
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        TorchTrainer(**args)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lr": 0.0}, "train.lr"),
        ({"lr": -1.0}, "train.lr"),
        ({"lr": float("nan")}, "train.lr"),
        ({"lr": float("inf")}, "train.lr"),
        ({"lr": "0.1"}, "train.lr"),
        ({"batch_size": 0}, "train.batch_size"),
        ({"batch_size": 2.5}, "train.batch_size"),
        ({"batch_size": True}, "train.batch_size"),
        ({"epochs": 0}, "train.epochs"),
        ({"optimizer": "rmsprop"}, "train.optimizer"),
        ({"momentum": 1.0}, "train.momentum"),
        ({"momentum": -0.1}, "train.momentum"),
        ({"optimizer": "adam", "momentum": 0.9}, "train.momentum"),
        ({"weight_decay": -0.1}, "train.weight_decay"),
        ({"weight_decay": float("inf")}, "train.weight_decay"),
    ],
)
def test_bad_train_config(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_good_train_config() -> None:
    config = TrainConfig()
    assert (config.lr, config.batch_size, config.epochs, config.optimizer) == (0.05, 32, 1, "sgd")
    TrainConfig(lr=1, optimizer="adam", weight_decay=1e-4)
    TrainConfig(momentum=0.9, weight_decay=0.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "resnet"}, "model.name"),
        ({"hidden": (64, 0)}, "model.hidden"),
        ({"hidden": (64, 2.0)}, "model.hidden"),
        ({"hidden": 64}, "model.hidden"),
        ({"name": "mlp", "hidden": ()}, "model.hidden"),
    ],
)
def test_bad_model_spec(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec(**kwargs)
    assert info.value.field == field


def test_model_spec_normalises_a_list() -> None:
    spec = ModelSpec(name="mlp", hidden=[32, 16])  # type: ignore[arg-type]
    assert spec.hidden == (32, 16)
    assert ModelSpec(name="logreg", hidden=()).hidden == ()


@pytest.mark.parametrize("name", MODELS)
def test_build_model_has_only_float32_parameters(name: str) -> None:
    model = build_model(
        ModelSpec(name=name), feature_shape=(64,), num_classes=10, image_shape=(1, 8, 8)
    )
    state = model.state_dict()
    assert len(state) == len(list(model.parameters()))
    assert all(t.dtype == torch.float32 for t in state.values())
    out = model(torch.zeros(3, 64))
    assert tuple(out.shape) == (3, 10)


def test_mlp_hidden_widths() -> None:
    trainer = TorchTrainer(
        model=ModelSpec(name="mlp", hidden=(32,)), feature_shape=(64,), num_classes=4
    )
    assert list(trainer.param_shapes) == [(32, 64), (32,), (4, 32), (4,)]
