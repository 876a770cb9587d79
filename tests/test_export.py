"""``fedledger model export`` (fedledger.export.export_model): a node's final model, trained for
real, taken out to plain PyTorch (model.pt and model.pt2), and every way it is refused."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

import fedledger
from fedledger.api import make_node, site_data
from fedledger.cli import main
from fedledger.commit.codec import decode, encode
from fedledger.config import TaskConfig, load_config
from fedledger.config.node import NodeConfig, write_node_config
from fedledger.data import Dataset
from fedledger.errors import ConfigError
from fedledger.export import (
    CARD_FILE,
    EXPORT_FORMAT,
    ModelCard,
    export_model,
    program_snippet,
    read_card,
    write_card,
)
from fedledger.gossip.blobs import FileBlobStore
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.topology import TopologySpec
from fedledger.learning import TorchTrainer
from fedledger.learning.models import build_model
from fedledger.learning.trainer import ModelSpec
from fedledger.node.state import read_rounds
from fedledger.run.local import run_nodes
from fedledger.run.plan import plan

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_model"


@dataclass(frozen=True)
class Trained:
    root: Path
    configs: list[NodeConfig]
    data: list[tuple[np.ndarray, np.ndarray]]
    summaries: list[dict[str, Any]]

    @property
    def node0(self) -> NodeConfig:
        return self.configs[0]

    @property
    def node_toml(self) -> Path:
        return self.root / "node-0" / "node.toml"

    def val(self, index: int = 0) -> Dataset:
        """Node ``index``'s own validation rows: what it evaluated its models on."""
        task = self.configs[index].task
        own = site_data(self.data[index], seed=task.seed, val_fraction=task.data.val_fraction)
        return own.val


def _sites() -> list[tuple[np.ndarray, np.ndarray]]:
    bunch = load_breast_cancer()
    x = ((bunch.data - bunch.data.mean(axis=0)) / bunch.data.std(axis=0)).astype(np.float32)
    y = bunch.target.astype(np.int64)
    return [(x[i::3], y[i::3]) for i in range(3)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Three sites train the example's own model (mymodel:build, named in their node.toml) on
    their own rows, in this process, keeping their blobs on disk as ``fedledger node`` does;
    each writes summary.json as ``fedledger node`` does."""
    root = tmp_path_factory.mktemp("trained")
    task = replace(load_config(EXAMPLE / "task.toml"), rounds=3)
    (root / "task.toml").write_text(task.to_toml(), encoding="utf-8")
    configs = plan(task, task_path=root / "task.toml", out=root, mode="consensus",
                   topology=TopologySpec(), transport="memory")  # fmt: skip
    (root / "node-0").mkdir()
    shutil.copy(EXAMPLE / "mymodel.py", root / "node-0" / "mymodel.py")
    configs = [replace(c, model="mymodel:build", config_dir=root / "node-0", linger=0.5)
               for c in configs]  # fmt: skip
    write_node_config(configs[0], root / "node-0" / "node.toml")
    data = _sites()

    async def go() -> list[dict[str, Any]]:
        network = MemoryNetwork(seed=task.seed)
        nodes = [
            make_node(
                c,
                identity=Identity.from_seed(task.seed, c.index),
                transport=network.transport(c.listen),
                data=data[c.index],
                store=FileBlobStore(c.state_dir / "blobs", durable=False),
            )
            for c in configs
        ]
        return await run_nodes(nodes)

    summaries = asyncio.run(go())
    for c, s in zip(configs, summaries, strict=True):
        assert s["final_model"] is not None, s
        (c.state_dir / "summary.json").write_text(json.dumps(s, indent=2), encoding="utf-8")
    return Trained(root=root, configs=configs, data=data, summaries=summaries)


def _copy_node(trained: Trained, where: Path) -> NodeConfig:
    """Node 0 with its state copied to ``where`` (for tests that damage it)."""
    shutil.copytree(trained.node0.state_dir, where / "state")
    return replace(trained.node0, state_dir=where / "state")


def _final_params(cfg: NodeConfig, cid: str) -> list[np.ndarray]:
    return decode(FileBlobStore(cfg.state_dir / "blobs", durable=False).get(cid))


def _own_model(cfg: NodeConfig) -> torch.nn.Module:
    """The site's own architecture with the node's final parameters, in state-dict order."""
    sys.path.insert(0, str(cfg.config_dir))
    try:
        from mymodel import build  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(cfg.config_dir))
    module: torch.nn.Module = build()
    cid = json.loads((cfg.state_dir / "summary.json").read_text())["final_model"]
    params = _final_params(cfg, cid)
    keys = list(module.state_dict())
    module.load_state_dict({k: torch.from_numpy(p) for k, p in zip(keys, params, strict=True)})
    return module.eval()


_PLAIN_TORCH = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch

    out, site = sys.argv[1], sys.argv[2]
    x_raw = np.load(out + "/x.npy")
    # the documented snippet
    model = torch.export.load(out + "/model.pt2").module()
    logits = model(torch.tensor(x_raw, dtype=torch.float32))
    np.save(out + "/pt2.npy", logits.detach().numpy())
    # the state-dict form, into the site's own architecture (mymodel imports only torch)
    sys.path.insert(0, site)
    from mymodel import build
    ckpt = torch.load(out + "/model.pt", weights_only=True)
    module = build()
    module.load_state_dict(ckpt["state_dict"])
    if ckpt["mean"] is not None:  # the state dict is the bare model
        x_raw = ((x_raw - np.array(ckpt["mean"])) / np.array(ckpt["std"])).astype(np.float32)
    with torch.no_grad():
        np.save(out + "/pt.npy", module.eval()(torch.tensor(x_raw)).numpy())
    assert not [m for m in sys.modules if m.startswith("fedledger")], "fedledger imported"
    print(ckpt["format"], ckpt["task"], list(ckpt["state_dict"])[0])
    """
)


def test_the_export_gives_the_nodes_final_model_in_plain_pytorch(
    trained: Trained, tmp_path: Path
) -> None:
    cfg = trained.node0
    final = trained.summaries[0]["final_model"]
    result = export_model(trained.node_toml, tmp_path / "export")
    assert result.warnings == ()
    assert result.model_cid == final
    assert result.program == tmp_path / "export" / "model.pt2"
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "export.json", "model.pt", "model.pt2",
    ]  # fmt: skip

    val = trained.val(0)
    np.save(tmp_path / "export" / "x.npy", val.x)
    # A fresh interpreter, isolated (-I: no PYTHONPATH, no cwd on the path), torch and numpy only.
    done = subprocess.run(
        [sys.executable, "-I", "-c", _PLAIN_TORCH, str(tmp_path / "export"), str(cfg.config_dir)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [EXPORT_FORMAT, "own_model", "0.weight"]
    from_pt2 = np.load(tmp_path / "export" / "pt2.npy")
    from_pt = np.load(tmp_path / "export" / "pt.npy")

    # The node's own final model: its architecture with the blob's parameters (fed as the
    # node feeds it: standardized if the task standardizes).
    card = read_card(cfg.state_dir)
    x = val.x
    if card.mean is not None:
        x = ((x - np.array(card.mean)) / np.array(card.std)).astype(np.float32)
    with torch.no_grad():
        reference = _own_model(cfg)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(from_pt2, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(from_pt, reference)
    # ... whose accuracy on the node's validation rows is what the node recorded for it.
    accuracy = float((from_pt2.argmax(axis=1) == val.y).mean())
    last = read_rounds(cfg.state_dir)[-1]
    assert last["round"] == 3
    assert accuracy == pytest.approx(last["acc"], abs=1e-12)
    trainer = TorchTrainer(model=cfg.task.model, feature_shape=(30,), num_classes=2,
                           module=lambda: _own_model(cfg))  # fmt: skip
    fed = Dataset(name="val", x=x, y=val.y, num_classes=2, feature_shape=(30,))
    assert trainer.evaluate(_final_params(cfg, final), fed)["accuracy"] == accuracy

    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert list(ckpt["state_dict"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert list(ckpt["state_dict"]) == list(read_card(cfg.state_dir).param_names)
    assert ckpt["model_cid"] == final
    assert ckpt["config_digest"] == cfg.task.digest().hex()
    assert ckpt["factory"] == "mymodel:build"
    assert (ckpt["feature_shape"], ckpt["num_classes"]) == ([30], 2)
    info = json.loads(result.info.read_text())
    assert info["model_cid"] == final
    assert info["files"] == ["model.pt", "model.pt2"]


def test_the_program_standardizes_raw_inputs_with_the_cards_mean_and_std(
    trained: Trained, tmp_path: Path
) -> None:
    cfg = _copy_node(trained, tmp_path)
    card = read_card(cfg.state_dir)
    rng = np.random.default_rng(3)
    mean = rng.normal(size=30) * 10
    std = rng.uniform(0.5, 4.0, size=30)
    write_card(cfg.state_dir, replace(card, mean=tuple(mean), std=tuple(std),
                                      classes=("malignant", "benign")))  # fmt: skip
    result = export_model(cfg, tmp_path / "export")
    assert result.program is not None

    x_raw = (rng.normal(size=(7, 30)) * std + mean).astype(np.float32)
    program = torch.export.load(str(result.program)).module()
    with torch.no_grad():
        got = program(torch.from_numpy(x_raw)).numpy()
        standardized = ((x_raw - mean) / std).astype(np.float32)
        want = _own_model(cfg)(torch.from_numpy(standardized)).numpy()
        unstandardized = _own_model(cfg)(torch.from_numpy(x_raw)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)  # float64 as the nodes do
    assert not np.allclose(got, unstandardized, atol=1e-2)  # the standardization is in there
    assert program(torch.zeros(1, 30)).shape == (1, 2)  # any batch size
    ckpt = torch.load(result.checkpoint, weights_only=True)
    np.testing.assert_allclose(ckpt["mean"], mean)
    np.testing.assert_allclose(ckpt["std"], std)
    assert ckpt["classes"] == ["malignant", "benign"]


def test_the_cli_prints_what_it_wrote_and_the_loading_snippet(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    code = main(["model", "export", "--node", str(trained.node_toml), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert program_snippet(out / "model.pt2") in captured.out
    assert 'model.load_state_dict(ckpt["state_dict"])' in captured.out
    assert str(out / "model.pt") in captured.out
    assert trained.summaries[0]["final_model"] in captured.out
    assert (out / "model.pt2").is_file()
    # the snippet, as printed, runs
    x_raw = trained.val(0).x
    scope: dict[str, Any] = {"x_raw": x_raw}
    exec(program_snippet(out / "model.pt2"), scope)  # our own snippet
    assert tuple(scope["logits"].shape) == (len(x_raw), 2)


def test_the_documented_snippet_is_the_one_the_command_prints() -> None:
    doc = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    assert program_snippet() in doc


def test_an_export_of_another_cid_needs_no_summary(trained: Trained, tmp_path: Path) -> None:
    cfg = _copy_node(trained, tmp_path)
    (cfg.state_dir / "summary.json").unlink()
    final = trained.summaries[0]["final_model"]
    result = export_model(cfg, tmp_path / "export", cid=final)
    assert torch.load(result.checkpoint, weights_only=True)["model_cid"] == final


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "\n" not in err
    assert "Traceback" not in err
    return err


def _node_toml(cfg: NodeConfig, where: Path) -> Path:
    path = where / "node.toml"
    write_node_config(cfg, path)
    return path


def test_an_altered_blob_is_refused_in_one_line(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _copy_node(trained, tmp_path)
    final = trained.summaries[0]["final_model"]
    blob = next((cfg.state_dir / "blobs").rglob(final))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1  # one bit of the last parameter
    blob.write_bytes(bytes(data))
    out = tmp_path / "export"
    err = _one_line_error(["model", "export", "--node", str(_node_toml(cfg, tmp_path)),
                           "--out", str(out)], capsys)  # fmt: skip
    assert "does not hash to its CID" in err
    assert str(blob) in err
    assert not (out / "model.pt").exists()
    with pytest.raises(ConfigError, match="does not hash"):
        export_model(cfg, out)


def test_a_missing_summary_is_refused_in_one_line(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _copy_node(trained, tmp_path)
    (cfg.state_dir / "summary.json").unlink()
    err = _one_line_error(["model", "export", "--node", str(_node_toml(cfg, tmp_path)),
                           "--out", str(tmp_path / "export")], capsys)  # fmt: skip
    assert f"no {cfg.state_dir / 'summary.json'}" in err


def test_a_summary_without_a_final_model_is_refused(trained: Trained, tmp_path: Path) -> None:
    cfg = _copy_node(trained, tmp_path)
    summary = {**trained.summaries[0], "final_model": None, "failure": "stalled"}
    (cfg.state_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"names no final model \(the node: stalled\)"):
        export_model(cfg, tmp_path / "export")


def test_a_missing_card_or_blob_is_refused(trained: Trained, tmp_path: Path) -> None:
    cfg = _copy_node(trained, tmp_path)
    final = trained.summaries[0]["final_model"]
    next((cfg.state_dir / "blobs").rglob(final)).unlink()
    with pytest.raises(ConfigError, match=f"is missing: the node holds no blob {final}"):
        export_model(cfg, tmp_path / "export")
    (cfg.state_dir / CARD_FILE).unlink()
    with pytest.raises(ConfigError, match="no model card at"):
        export_model(cfg, tmp_path / "export")
    with pytest.raises(ConfigError, match="not a model CID"):
        export_model(trained.node0, tmp_path / "export", cid="not-a-cid")


# -- registry models, and models torch.export cannot capture (no training needed) ------------


def _synthetic_node(
    tmp_path: Path, card: ModelCard, params: list[np.ndarray], task: TaskConfig | None = None
) -> NodeConfig:
    """A node's state as a finished node leaves it: card, blob on disk, summary.json."""
    cfg = NodeConfig(task=task or TaskConfig(name="synthetic", nodes=1), index=0,
                     key_file=tmp_path / "node.key", state_dir=tmp_path / "state")  # fmt: skip
    cfg.state_dir.mkdir(parents=True)
    write_card(cfg.state_dir, card)
    cid = FileBlobStore(cfg.state_dir / "blobs").put(encode(params))
    (cfg.state_dir / "summary.json").write_text(json.dumps({"final_model": cid}))
    return cfg


def _registry(name: str, hidden: tuple[int, ...] = ()) -> tuple[torch.nn.Module, ModelCard]:
    spec = ModelSpec(name=name, hidden=hidden)
    torch.manual_seed(1)
    module = build_model(spec, feature_shape=(5,), num_classes=3)
    card = ModelCard(param_names=tuple(module.state_dict()), feature_shape=(5,), num_classes=3,
                     model={"name": name, "hidden": list(hidden)})  # fmt: skip
    return module.eval(), card


def test_a_registry_model_exports_from_the_tasks_model_section(tmp_path: Path) -> None:
    module, card = _registry("mlp", (4,))
    params = [t.detach().numpy().copy() for t in module.state_dict().values()]
    result = export_model(_synthetic_node(tmp_path, card, params), tmp_path / "export")
    assert result.program is not None
    assert result.warnings == ()
    x = torch.randn(9, 5)
    with torch.no_grad():
        got = torch.export.load(str(result.program)).module()(x)
        torch.testing.assert_close(got, module(x))
    fresh = build_model(ModelSpec(name="mlp", hidden=(4,)), feature_shape=(5,), num_classes=3)
    fresh.load_state_dict(torch.load(result.checkpoint, weights_only=True)["state_dict"])
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), module(x))


def test_a_blob_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    logreg, _ = _registry("logreg")
    _, mlp_card = _registry("mlp", (4,))
    params = [t.detach().numpy().copy() for t in logreg.state_dict().values()]
    params += params  # as many arrays as the mlp has, of the logreg's shapes
    cfg = _synthetic_node(tmp_path, mlp_card, params)
    with pytest.raises(
        ConfigError,
        match=r"parameter 1\.weight has shape \(3, 5\), the model built for .* has \(4, 5\)",
    ):
        export_model(cfg, tmp_path / "export")
    write_card(cfg.state_dir, replace(mlp_card, param_names=mlp_card.param_names[:2]))
    with pytest.raises(ConfigError, match=r"holds 4 arrays, but .* names 2 parameters"):
        export_model(cfg, tmp_path / "export")


def test_bad_standardization_in_the_card_is_refused(tmp_path: Path) -> None:
    module, card = _registry("logreg")
    params = [t.detach().numpy().copy() for t in module.state_dict().values()]
    bad = replace(card, mean=(0.0,) * 5, std=(1.0, 1.0, 0.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="std finite and > 0"):
        export_model(_synthetic_node(tmp_path, bad, params), tmp_path / "export")


class _DataDependent(torch.nn.Module):
    """A branch on the input's values: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        if float(x.sum()) > 0:
            return out * 2
        return out


def test_a_model_torch_export_cannot_capture_still_gets_its_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(2)
    module = _DataDependent()
    params = [t.detach().numpy().copy() for t in module.state_dict().values()]
    card = ModelCard(param_names=("linear.weight", "linear.bias"), feature_shape=(5,),
                     num_classes=3, factory="sitemodel:build")  # fmt: skip
    cfg = _synthetic_node(tmp_path, card, params)
    result = export_model(cfg, tmp_path / "export", model=_DataDependent)
    assert result.program is None
    assert not (tmp_path / "export" / "model.pt2").exists()
    [warning] = result.warnings
    assert warning.startswith("model.pt2 skipped: torch.export failed")
    assert "\n" not in warning
    assert f'torch.load("{result.checkpoint}", weights_only=True)' in result.snippet
    fresh = _DataDependent()
    fresh.load_state_dict(torch.load(result.checkpoint, weights_only=True)["state_dict"])
    x = torch.randn(4, 5)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), module(x))
    assert json.loads(result.info.read_text())["files"] == ["model.pt"]


def test_the_cards_factory_is_imported_from_the_node_tomls_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "exportsite_model.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(5, 3))\n"
    )
    torch.manual_seed(4)
    module = torch.nn.Sequential(torch.nn.Linear(5, 3))
    params = [t.detach().numpy().copy() for t in module.state_dict().values()]
    card = ModelCard(param_names=("0.weight", "0.bias"), feature_shape=(5,), num_classes=3,
                     factory="exportsite_model:build")  # fmt: skip
    task_path = tmp_path / "task.toml"
    task = TaskConfig(name="synthetic", nodes=1)
    task_path.write_text(task.to_toml())
    cfg = replace(_synthetic_node(tmp_path, card, params, task), task_path=task_path,
                  model="exportsite_model:build")  # fmt: skip
    write_node_config(cfg, tmp_path / "node.toml")
    # the folder holding node.toml is enough
    assert main(["model", "export", "--node", str(tmp_path), "--out", str(tmp_path / "x")]) == 0
    assert "model.pt2" in capsys.readouterr().out
    program = torch.export.load(str(tmp_path / "x" / "model.pt2")).module()
    x = torch.randn(3, 5)
    with torch.no_grad():
        torch.testing.assert_close(program(x), module(x))
    assert fedledger.export_model is export_model
