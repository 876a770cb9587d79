"""A site's own data in a sites task: the task's columns and classes, pooled statistics, and
the nodes agreeing on them before round 1."""

from __future__ import annotations

import asyncio
import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedledger
from fedledger.config import load_config
from fedledger.config.node import NodeConfig
from fedledger.config.task import (
    DataConfig,
    TaskConfig,
    config_differences,
    config_from_document,
)
from fedledger.data import Dataset
from fedledger.data.site import SiteStats, load_site, pool, site_stats
from fedledger.errors import ConfigError, DataError, MessageError
from fedledger.gossip.identity import Identity
from fedledger.gossip.messages import decode_frame, encode_frame, make_message

ROOT = Path(__file__).resolve().parents[2]
TASK = ROOT / "examples" / "hospitals" / "task.toml"
SPEC = DataConfig(dataset="sites", features=("a", "b"), classes=("no", "yes"),
                  label_column="label")  # fmt: skip


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- the task's [data] -------------------------------------------------------------------------


def test_a_sites_task_names_its_features_and_classes() -> None:
    with pytest.raises(ConfigError, match=r"data\.features: a sites task names its features"):
        DataConfig(dataset="sites", classes=("x", "y"))
    with pytest.raises(ConfigError, match=r"data\.classes: listed more than once: x"):
        DataConfig(dataset="sites", features=("a",), classes=("x", "x"))
    with pytest.raises(ConfigError, match=r"data\.features: applies to a sites data set only"):
        DataConfig(dataset="digits", features=("a",))
    with pytest.raises(ConfigError, match=r"data\.path: a sites task has no shared file"):
        DataConfig(dataset="sites", features=("a",), classes=("x",), path="all.csv")
    with pytest.raises(ConfigError, match="'a' is also a feature"):
        DataConfig(dataset="sites", features=("a",), classes=("x",), label_column="a")


def test_the_feature_order_is_part_of_the_task_identity() -> None:
    cfg = load_config(TASK)
    assert cfg.data.is_sites
    assert cfg.data.features is not None
    swapped = replace(cfg, data=replace(cfg.data, features=tuple(reversed(cfg.data.features))))
    assert swapped.digest() != cfg.digest()
    assert config_from_document(cfg.document()) == cfg
    lr = replace(cfg, train=replace(cfg.train, lr=0.5))
    assert config_differences(lr, cfg) == ["train.lr: 0.5 here, 0.05 in the task"]


def test_a_sites_task_cannot_be_split_like_a_shared_data_set() -> None:
    from fedledger.task import prepare_task

    with pytest.raises(ConfigError, match="no shared data set to split"):
        prepare_task(load_config(TASK))


# -- a site's file -----------------------------------------------------------------------------


def test_columns_are_read_in_the_task_order_whatever_the_file_order(tmp_path: Path) -> None:
    one = write_csv(tmp_path / "one.csv", ["id", "a", "b", "label"],
                    [[1, 1.0, 2.0, "no"], [2, 3.0, 4.0, "yes"]])  # fmt: skip
    two = write_csv(tmp_path / "two.csv", ["label", "b", "note", "a"],
                    [["no", 2.0, "x", 1.0], ["yes", 4.0, "y", 3.0]])  # fmt: skip
    a, b = load_site(one, SPEC), load_site(two, SPEC)
    assert a.x.tolist() == b.x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert a.y.tolist() == b.y.tolist() == [0, 1]
    assert a.num_classes == 2
    assert a.feature_shape == (2,)


def test_a_site_file_that_does_not_fit_the_task_is_named(tmp_path: Path) -> None:
    missing = write_csv(tmp_path / "m.csv", ["a", "label"], [[1.0, "no"]])
    with pytest.raises(DataError, match="missing the task's column\\(s\\) 'b'"):
        load_site(missing, SPEC)
    unknown = write_csv(tmp_path / "u.csv", ["a", "b", "label"], [[1, 2, "no"], [1, 2, "maybe"]])
    with pytest.raises(DataError, match="line 3: label 'maybe' is not one of the task's classes"):
        load_site(unknown, SPEC)
    text = write_csv(tmp_path / "t.csv", ["a", "b", "label"], [[1, "n/a", "no"]])
    with pytest.raises(DataError, match="line 2, column 'b': not a number: 'n/a'"):
        load_site(text, SPEC)
    np.savez(tmp_path / "wide.npz", x=np.zeros((2, 3)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="x must have shape \\(rows, 2\\)"):
        load_site(tmp_path / "wide.npz", SPEC)
    np.savez(tmp_path / "ok.npz", x=np.ones((2, 2)), y=np.array(["yes", "no"]))
    assert load_site(tmp_path / "ok.npz", SPEC).y.tolist() == [1, 0]


# -- pooled statistics -------------------------------------------------------------------------


def dataset(x: np.ndarray) -> Dataset:
    return Dataset(name="d", x=x.astype(np.float32), y=np.zeros(len(x), dtype=np.int64),
                   num_classes=1, feature_shape=(x.shape[1],))  # fmt: skip


def test_pooled_statistics_are_those_of_all_rows_together() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc=i, scale=1 + i, size=(n, 3)) for i, n in enumerate((5, 40, 17))]
    stats = [site_stats(dataset(p)) for p in parts]
    mean, std = pool(stats)
    whole = np.concatenate([p.astype(np.float32).astype(np.float64) for p in parts])
    assert np.allclose(mean, whole.mean(axis=0), rtol=1e-10)
    assert np.allclose(std, whole.std(axis=0), rtol=1e-10)
    assert pool(stats) == (mean, std)  # the same inputs in the same order: the same bits


def test_site_statistics_are_checked() -> None:
    with pytest.raises(DataError, match="count must be in"):
        SiteStats(count=0, mean=(0.0,), m2=(0.0,))
    with pytest.raises(DataError, match="cannot be negative"):
        SiteStats(count=2, mean=(0.0,), m2=(-1.0,))
    with pytest.raises(DataError, match="finite"):
        SiteStats(count=2, mean=(float("nan"),), m2=(1.0,))


def test_a_stats_message_carries_exact_floats_only() -> None:
    me = Identity.generate()
    task = "ab" * 32

    def frame(body: dict[str, object]) -> bytes:
        return encode_frame(make_message(kind="stats", identity=me, task=task, round=0,
                                         body=body), ttl=0)  # fmt: skip

    good = {"count": 3, "mean": [(0.1).hex()], "m2": [(2.5).hex()], "reply": False}
    signed, _ = decode_frame(frame(good), task=task, known={me.address})
    assert float.fromhex(signed.message.body["mean"][0]) == 0.1
    for bad, why in (
        ({**good, "mean": ["0x1.8p+0"]}, "canonical hex"),
        ({**good, "mean": ["inf"]}, "not a hex float|canonical"),
        ({**good, "m2": []}, "one entry per feature"),
        ({**good, "count": 0}, "body.count"),
    ):
        with pytest.raises(MessageError, match=why):
            decode_frame(frame(bad), task=task, known={me.address})


# -- nodes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    import importlib.util

    out = tmp_path_factory.mktemp("hospitals")
    spec = importlib.util.spec_from_file_location("make_sites", TASK.parent / "make_sites.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paths: list[Path] = module.write_sites(out)
    return paths


def test_three_sites_agree_on_the_pooled_statistics_and_learn(
    sites: list[Path], tmp_path: Path
) -> None:
    cfg = replace(load_config(TASK), rounds=4)
    report = fedledger.run_task(cfg, out=tmp_path, data=sites)
    assert report.final["model_digests_agree"]
    assert report.final["acc_min"] > 0.85
    saved = {json.loads((tmp_path / f"node-{i}/state/preprocessing.json").read_text())["mean"][0]
             for i in range(3)}  # fmt: skip
    assert len(saved) == 1  # the same statistics at every site
    whole = np.concatenate([load_site(p, cfg.data).x for p in sites])
    assert abs(saved.pop() - float(whole[:, 0].mean())) < 0.5  # the train rows of all sites
    card = json.loads((tmp_path / "node-0/state/model.json").read_text())
    assert card["features"] == list(cfg.data.features or ())
    assert card["classes"] == ["benign", "malignant"]
    assert len(card["std"]) == 30


def site_nodes(cfg: TaskConfig, tmp_path: Path) -> list[NodeConfig]:
    """The node configurations of ``cfg`` (written to ``tmp_path``), over the memory network."""
    from fedledger.gossip.topology import TopologySpec
    from fedledger.run.plan import plan

    (tmp_path / "task.toml").write_text(cfg.to_toml(), encoding="utf-8")
    return plan(cfg, task_path=tmp_path / "task.toml", out=tmp_path, mode="consensus",
                topology=TopologySpec(), transport="memory")  # fmt: skip


def run_sites(
    configs: list[NodeConfig], sites: list[Path], *, ready_timeout: float
) -> list[dict[str, Any]]:
    """Run these nodes in this process, node i on site i's file; their summaries."""
    from fedledger.api import make_node
    from fedledger.gossip.blobs import MemoryBlobStore
    from fedledger.gossip.memory import MemoryNetwork

    async def run() -> list[dict[str, Any]]:
        network = MemoryNetwork(seed=0)
        nodes = [
            make_node(
                replace(c, ready_timeout=ready_timeout),
                identity=Identity.from_seed(c.task.seed, c.index),
                transport=network.transport(c.listen),
                data=sites[c.index],
                store=MemoryBlobStore(),
            )
            for c in configs
        ]
        return list(await asyncio.gather(*(n.run() for n in nodes)))

    return asyncio.run(run())


def test_a_site_that_never_sends_its_statistics_stops_the_start_clearly(
    sites: list[Path], tmp_path: Path
) -> None:
    configs = site_nodes(replace(load_config(TASK), rounds=2), tmp_path)
    for summary in run_sites(configs[:2], sites, ready_timeout=3.0):
        assert "no feature statistics from 1 member(s)" in str(summary["failure"])
        assert summary["final_model"] is None


# -- image sites -------------------------------------------------------------------------------


def write_digit_images(
    root: Path, rows: np.ndarray, images: np.ndarray, labels: np.ndarray
) -> Path:
    from PIL import Image

    for r in rows:
        folder = root / f"digit{labels[r]}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (images[r] / 16.0 * 255).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{r:04d}.png")
    return root


def test_image_sites_train_a_cnn_on_their_own_image_folders(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    from fedledger.config.task import parse_config

    digits = load_digits()
    classes = [f"digit{k}" for k in range(10)]
    order = np.random.default_rng(0).permutation(len(digits.target))
    sites = [write_digit_images(tmp_path / f"site{i}", part, digits.images, digits.target)
             for i, part in enumerate(np.array_split(order[:900], 2))]  # fmt: skip
    cfg = parse_config({
        "task": {"name": "images", "seed": 3, "rounds": 4, "nodes": 2},
        "data": {"dataset": "sites", "classes": classes, "image_shape": [1, 8, 8]},
        "model": {"name": "cnn"},
        "train": {"lr": 0.1, "batch_size": 16, "epochs": 1},
    })  # fmt: skip
    one = load_site(sites[0], cfg.data)
    assert one.image_shape == (1, 8, 8)
    assert one.feature_shape == (64,)
    assert 0.0 <= float(one.x.min()) <= float(one.x.max()) <= 1.0
    report = fedledger.run_task(cfg, out=tmp_path / "run", data=sites)
    assert report.final["model_digests_agree"]
    assert report.final["acc_min"] > 0.6  # 10 classes: chance is 0.1


def test_an_image_folder_that_does_not_fit_the_task_is_named(tmp_path: Path) -> None:
    from PIL import Image

    spec = DataConfig(dataset="sites", classes=("cat", "dog"), image_shape=(1, 4, 4))
    (tmp_path / "cat").mkdir()
    Image.new("L", (5, 4)).save(tmp_path / "cat" / "a.png")
    with pytest.raises(DataError, match="5x4 pixels, the task's images are 4x4"):
        load_site(tmp_path, spec)
    (tmp_path / "cat" / "a.png").unlink()
    (tmp_path / "bird").mkdir()
    with pytest.raises(DataError, match="subfolder 'bird' is not one of the task's classes"):
        load_site(tmp_path, spec)
    with pytest.raises(ConfigError, match="channels \\(1 or 3\\)"):
        DataConfig(dataset="sites", classes=("a",), image_shape=(2, 4, 4))
    with pytest.raises(ConfigError, match="not both"):
        DataConfig(dataset="sites", classes=("a",), features=("x",), image_shape=(1, 4, 4))


def test_a_site_that_reloaded_its_statistics_still_answers_one_that_did_not(
    sites: list[Path], tmp_path: Path
) -> None:
    # Site 0 restarted after saving the pooled statistics, site 1 before: site 1 asks again,
    # and site 0 answers with its own statistics although it needs nobody's.
    from fedledger.node.core import PREPROCESSING_FILE

    configs = site_nodes(replace(load_config(TASK), rounds=1, nodes=2), tmp_path)
    saved = {"mean": [0.0] * 30, "std": [1.0] * 30}
    configs[0].state_dir.mkdir(parents=True)
    (configs[0].state_dir / PREPROCESSING_FILE).write_text(json.dumps(saved))

    summaries = run_sites(configs, sites, ready_timeout=60.0)
    assert [s["failure"] for s in summaries] == [None, None]
    assert json.loads((configs[0].state_dir / PREPROCESSING_FILE).read_text()) == saved
    pooled = json.loads((configs[1].state_dir / PREPROCESSING_FILE).read_text())
    assert pooled["mean"] != saved["mean"]  # site 1 pooled both sites' real statistics
