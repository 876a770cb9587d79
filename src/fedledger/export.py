"""Taking a trained model out of fedledger: what a node records about its model (the model
card, ``state_dir/model.json``), and the export to plain PyTorch.

The node writes its card when it starts and again once the task's preprocessing is known
(feature statistics computed with the other sites): the module's real parameter names in the
order blobs carry them, the input and output shapes, the architecture (the task's ``[model]``
or the site's own ``module:function``), and the preprocessing every site applies (feature
order, per-feature mean and standard deviation, class names).
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedledger.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from fedledger.api import ModelFactory
    from fedledger.config.node import NodeConfig

CARD_FILE = "model.json"
CARD_FORMAT = "fedledger-model-card/1"


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What it takes to rebuild a node's model and feed it (see the module docstring)."""

    param_names: tuple[str, ...]
    """The module's ``state_dict`` keys, in the order of a blob's arrays."""
    feature_shape: tuple[int, ...]
    num_classes: int
    image_shape: tuple[int, ...] | None = None
    model: dict[str, Any] | None = None
    """The task's registry model (``ModelSpec`` as a dict) when no factory is used."""
    factory: str | None = None
    """``"module:function"``: the site's own model factory (node.toml's ``model``)."""
    features: tuple[str, ...] | None = None
    """The input columns, in order (a CSV task); None: unnamed."""
    classes: tuple[str, ...] | None = None
    """Class ``i``'s name; None: the classes are the integers 0..num_classes-1."""
    mean: tuple[float, ...] | None = None
    """Per-feature mean subtracted before the model (None: no standardization)."""
    std: tuple[float, ...] | None = None
    """Per-feature standard deviation divided by after the mean."""

    def to_json(self) -> str:
        body = {"format": CARD_FORMAT, **asdict(self)}
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not a model card: {exc}") from exc
        if not isinstance(doc, dict) or doc.pop("format", None) != CARD_FORMAT:
            raise ConfigError(f"not a model card ({CARD_FORMAT})")

        def tup(key: str) -> tuple[Any, ...] | None:
            value = doc.get(key)
            return None if value is None else tuple(value)

        try:
            return cls(
                param_names=tuple(doc["param_names"]),
                feature_shape=tuple(doc["feature_shape"]),
                num_classes=int(doc["num_classes"]),
                image_shape=tup("image_shape"),
                model=doc.get("model"),
                factory=doc.get("factory"),
                features=tup("features"),
                classes=tup("classes"),
                mean=tup("mean"),
                std=tup("std"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a model card: {exc}") from exc


def write_card(state_dir: Path, card: ModelCard) -> Path:
    """Write ``card`` to ``state_dir/model.json`` atomically."""
    path = state_dir / CARD_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(card.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_card(state_dir: Path) -> ModelCard:
    path = state_dir / CARD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no model card at {path}: has this node run?") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return ModelCard.from_json(text)


def floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


# --------------------------------------------------------------------------------------------
# export to plain PyTorch

EXPORT_FORMAT = "fedledger-model/1"
"""``model.pt``'s ``"format"``."""
CHECKPOINT_FILE = "model.pt"
PROGRAM_FILE = "model.pt2"
INFO_FILE = "export.json"
_SUMMARY_FILE = "summary.json"  # fedledger.rundir.SUMMARY_FILE (not imported: it pulls config)
_BLOBS_DIR = "blobs"  # FileBlobStore(state_dir / "blobs"), as the nodes open it


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """What :func:`export_model` wrote."""

    out: Path
    checkpoint: Path
    """``model.pt``: the state dict and the preprocessing (``torch.load``, weights only)."""
    program: Path | None
    """``model.pt2``: the standardization and the model as a ``torch.export`` program; None
    if torch.export could not capture the model (see :attr:`warnings`)."""
    info: Path
    """``export.json``: the same metadata as ``model.pt``, for any language."""
    model_cid: str
    task: str
    config_digest: str
    card: ModelCard
    warnings: tuple[str, ...] = ()

    @property
    def snippet(self) -> str:
        """Python that loads the export in plain PyTorch (the program, else the state dict)."""
        if self.program is not None:
            return program_snippet(self.program)
        return checkpoint_snippet(self.checkpoint)


def program_snippet(path: str | Path = PROGRAM_FILE) -> str:
    """The three lines that run ``model.pt2`` with plain PyTorch (docs/export.md)."""
    return (
        "import torch\n"
        f"model = torch.export.load({json.dumps(str(path))}).module()"
        "   # plain PyTorch: raw features in, logits out\n"
        "logits = model(torch.tensor(x_raw, dtype=torch.float32))"
    )


def checkpoint_snippet(path: str | Path = CHECKPOINT_FILE) -> str:
    """Loading ``model.pt`` into a module of the same architecture (to fine-tune it)."""
    return (
        "import torch\n"
        f"ckpt = torch.load({json.dumps(str(path))}, weights_only=True)   # no code runs\n"
        "model = build()   # the same architecture: your factory, or the task's [model]\n"
        'model.load_state_dict(ckpt["state_dict"])\n'
        '# inputs: (x_raw - mean) / std with ckpt["mean"], ckpt["std"] (when not None)'
    )


def export_model(
    node_config: NodeConfig | str | Path,
    out: str | Path,
    *,
    cid: str | None = None,
    model: ModelFactory | None = None,
) -> ExportResult:
    """Write a node's final model to ``out`` for plain PyTorch (docs/export.md).

    ``node_config``: the node's configuration, its node.toml, or the folder holding it. The
    node's card (``state_dir/model.json``) names the parameters and the preprocessing; the
    model is ``state_dir/summary.json``'s ``final_model``, or ``cid``; its blob is read from
    ``state_dir/blobs`` and must hash to its CID. ``model``: the module factory, when the card
    does not name it (a node run with ``run_task(model=...)``); default: the card's factory
    (imported from the node.toml's folder first) or the task's registry model.

    Writes ``model.pt`` (always), ``model.pt2`` (unless torch.export cannot capture the model:
    then :attr:`ExportResult.warnings` says why) and ``export.json``. Every failure is a
    :class:`ConfigError` naming the file at fault.
    """
    import torch

    from fedledger.commit.cid import digest_from_cid, verify
    from fedledger.commit.codec import decode
    from fedledger.config.node import NodeConfig, load_node_config
    from fedledger.errors import CodecError

    if not isinstance(node_config, NodeConfig):
        path = Path(node_config)
        node_config = load_node_config(path / "node.toml" if path.is_dir() else path)
    state_dir = node_config.state_dir
    card = read_card(state_dir)
    card_path = state_dir / CARD_FILE
    model_cid = cid if cid is not None else _final_model(state_dir / _SUMMARY_FILE)
    try:
        digest = digest_from_cid(model_cid)
    except CodecError as exc:
        raise ConfigError(f"not a model CID: {model_cid!r}", field="cid") from exc
    blobs = state_dir / _BLOBS_DIR
    hexdigest = digest.hex()
    blob_path = blobs / hexdigest[0:2] / hexdigest[2:4] / model_cid
    if not blobs.is_dir():
        raise ConfigError(f"no blob store at {blobs}: this node kept its blobs in memory")
    try:
        data = blob_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{blob_path} is missing: the node holds no blob {model_cid}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {blob_path}: {exc.strerror or exc}") from exc
    try:
        verify(data, model_cid)
    except CodecError as exc:
        raise ConfigError(f"{blob_path} does not hash to its CID: the blob was altered") from exc
    try:
        arrays = decode(data)
    except CodecError as exc:
        raise ConfigError(f"{blob_path} is not a fedledger model blob: {exc}") from exc
    if len(arrays) != len(card.param_names):
        raise ConfigError(f"{blob_path} holds {len(arrays)} arrays, but {card_path} names "
                          f"{len(card.param_names)} parameters")  # fmt: skip
    mean, std = _standardization(card, card_path)

    module = _build_module(card, card_path, base=node_config.config_dir, model=model)
    expected = module.state_dict()
    if tuple(expected) != card.param_names:
        raise ConfigError(f"the model built for {card_path} has parameters "
                          f"{_names(tuple(expected))}, the card names "
                          f"{_names(card.param_names)}")  # fmt: skip
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, array in zip(card.param_names, arrays, strict=True):
        want = tuple(expected[name].shape)
        if tuple(array.shape) != want:
            raise ConfigError(f"{blob_path}: parameter {name} has shape {tuple(array.shape)}, "
                              f"the model built for {card_path} has {want}")  # fmt: skip
        state_dict[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{blob_path} does not load into the model: {exc}") from exc
    module.eval()

    where = Path(out)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {where}: {exc.strerror or exc}", field="out") from exc
    task = node_config.task
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "task": task.name,
        "config_digest": task.digest().hex(),
        "model_cid": model_cid,
        "feature_shape": list(card.feature_shape),
        "num_classes": card.num_classes,
        "image_shape": None if card.image_shape is None else list(card.image_shape),
        "features": None if card.features is None else list(card.features),
        "classes": None if card.classes is None else list(card.classes),
        "mean": None if card.mean is None else list(card.mean),
        "std": None if card.std is None else list(card.std),
        "model": card.model,
        "factory": card.factory,
    }
    checkpoint = where / CHECKPOINT_FILE
    _atomic(checkpoint, lambda p: torch.save({**meta, "state_dict": state_dict}, p))
    warnings: list[str] = []
    program: Path | None = where / PROGRAM_FILE
    assert program is not None
    try:
        _atomic(program, lambda p: _save_program(module, card, mean, std, p))
    except Exception as exc:  # the user's module: torch.export cannot capture everything
        program.unlink(missing_ok=True)  # not a stale program next to the new checkpoint
        program = None
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        warnings.append(f"{PROGRAM_FILE} skipped: torch.export failed "
                        f"({type(exc).__name__}: {reason}); {CHECKPOINT_FILE} has the "
                        "state dict")  # fmt: skip
    info = where / INFO_FILE
    files = [CHECKPOINT_FILE] + ([PROGRAM_FILE] if program is not None else [])
    body = json.dumps({**meta, "param_names": list(card.param_names), "files": files},
                      indent=2)  # fmt: skip
    _atomic(info, lambda p: p.write_text(body + "\n", encoding="utf-8"))
    return ExportResult(
        out=where, checkpoint=checkpoint, program=program, info=info, model_cid=model_cid,
        task=task.name, config_digest=meta["config_digest"], card=card,
        warnings=tuple(warnings),
    )  # fmt: skip


def _final_model(path: Path) -> str:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no {path}: the node has not finished (or give the model's CID)"
                          ) from None  # fmt: skip
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    final = doc.get("final_model") if isinstance(doc, dict) else None
    if not isinstance(final, str):
        why = doc.get("failure") or doc.get("refused") if isinstance(doc, dict) else None
        raise ConfigError(f"{path} names no final model" + (f" (the node: {why})" if why else ""))
    return final


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"[{shown}] ({len(names)})"


def _standardization(
    card: ModelCard, card_path: Path
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The card's mean and std as float64 arrays of the feature shape (both or neither):
    the nodes standardize in float64 (fedledger.data.site.standardized), so the program does."""
    if card.mean is None and card.std is None:
        return None, None
    if card.mean is None or card.std is None:
        raise ConfigError(f"{card_path} has a mean without a std, or a std without a mean")
    size = math.prod(card.feature_shape)
    mean = np.asarray(card.mean, dtype=np.float64)
    std = np.asarray(card.std, dtype=np.float64)
    if mean.shape != (size,) or std.shape != (size,):
        raise ConfigError(f"{card_path}: mean and std need {size} values (feature shape "
                          f"{card.feature_shape}), got {mean.size} and {std.size}")  # fmt: skip
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ConfigError(f"{card_path}: mean must be finite and std finite and > 0")
    return mean.reshape(card.feature_shape), std.reshape(card.feature_shape)


def _build_module(
    card: ModelCard, card_path: Path, *, base: Path | None, model: ModelFactory | None
) -> torch.nn.Module:
    """A fresh module of the node's architecture: ``model``, the card's factory, or the
    task's registry model."""
    import torch

    if model is None and card.factory is not None:
        from fedledger.api import load_model_factory

        model = load_model_factory(card.factory, base=base)
    if model is not None:
        try:
            built = model()
        except Exception as exc:  # the user's code: any error is a bad model
            raise ConfigError(f"the model factory failed: {exc}", field="model") from exc
        if not isinstance(built, torch.nn.Module):
            raise ConfigError(f"the model factory returned a {type(built).__name__}, not a "
                              "torch.nn.Module", field="model")  # fmt: skip
        return built
    if card.model is None:
        raise ConfigError(f"{card_path} names no model (neither 'model' nor 'factory')")
    from fedledger.learning.models import build_model
    from fedledger.learning.trainer import ModelSpec

    try:
        spec = ModelSpec(**card.model)
    except TypeError as exc:
        raise ConfigError(f"{card_path}: bad 'model' {card.model!r}: {exc}") from exc
    return build_model(spec, feature_shape=card.feature_shape, num_classes=card.num_classes,
                       image_shape=card.image_shape)  # fmt: skip


def _save_program(
    module: torch.nn.Module,
    card: ModelCard,
    mean: np.ndarray | None,
    std: np.ndarray | None,
    path: Path,
) -> None:
    """torch.export the standardization and ``module`` (any batch size) to ``path``; checks
    that the program gives the module's logits."""
    import torch

    wrapper = _standardized(module, mean, std).eval()
    example = torch.randn(2, *card.feature_shape, generator=torch.Generator().manual_seed(0))
    if mean is not None and std is not None:
        example = (example * torch.from_numpy(std) + torch.from_numpy(mean)).float()
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(wrapper, (example,), dynamic_shapes={"x": {0: batch}})
        want = wrapper(example)
        got = program.module()(example)
    if tuple(want.shape) != (2, card.num_classes):
        raise ValueError(f"the model gives outputs of shape {tuple(want.shape)}, "
                         f"not (batch, {card.num_classes}) logits")  # fmt: skip
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise ValueError("the exported program's logits differ from the model's")
    torch.export.save(program, path)


def _standardized(  # a class in a function: torch is imported only when exporting
    module: torch.nn.Module, mean: np.ndarray | None, std: np.ndarray | None
) -> torch.nn.Module:
    import torch

    class Standardized(torch.nn.Module):
        """``(x - mean) / std`` in float64 as the nodes do (when the card has them), then
        the model on float32."""

        def __init__(self) -> None:
            super().__init__()
            self.model = module
            self.standardize = mean is not None and std is not None
            if mean is not None and std is not None:
                self.register_buffer("mean", torch.from_numpy(mean.copy()))
                self.register_buffer("std", torch.from_numpy(std.copy()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.standardize:
                x64 = x.to(torch.float64)
                x = ((x64 - self.get_buffer("mean")) / self.get_buffer("std")).to(torch.float32)
            out: torch.Tensor = self.model(x)
            return out

    return Standardized()


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename over ``path``: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # torch.export wants a .pt2 name
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
