"""End to end with ``[compression]``: `fedledger run` on the embedded chain, every node
publishing int8 top-k deltas with error feedback; the nodes agree on every round's model,
the contract finalizes every round, and the audit recomputes each from the compressed blobs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedledger.audit import initial_model
from fedledger.commit import cid_from_digest, decode, sha256
from fedledger.commit.codec import decode_tensors
from fedledger.commit.compression import DELTA_FORMAT, compressed_size, decode_update
from fedledger.config import CompressionConfig, load_config
from fedledger.errors import ConfigError
from fedledger.gossip.blobs import FileBlobStore
from fedledger.node.residual import RESIDUAL_FILE, RESIDUAL_FORMAT
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


@pytest.mark.slow
def test_a_compressed_run_agrees_finalizes_and_passes_the_audit(tmp_path: Path) -> None:
    compression = CompressionConfig(quantize="int8", topk=0.1)
    task = replace(load_config(DIGITS), nodes=4, rounds=3, compression=compression)
    report = run_task(task, out=tmp_path, transport="memory", chain="embedded",
                      timeout=300).to_dict()  # fmt: skip
    final = report["final"]
    assert final["rounds_finalized"] == 3
    assert final["model_digests_agree"] is True
    assert all(r["model_digests_agree"] for r in report["rounds"])
    assert final["audit_ok"] is True
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert [r["ok"] for r in audit["rounds"]] == [True, True, True]
    # Every update a member signed is a compressed delta of the task's scheme and size.
    initial = initial_model(task)
    base = decode(initial)
    size = compressed_size([(a.shape, a.dtype) for a in base], compression.scheme)
    store = FileBlobStore(tmp_path / "node-0" / "state" / "blobs")
    for node in range(4):
        state = tmp_path / f"node-{node}" / "state"
        messages = json.loads((state / "messages.json").read_text())["messages"]
        for rnd in ("1", "2", "3"):
            blob = store.get(cid_from_digest(bytes.fromhex(messages[rnd]["update"])))
            meta, _ = decode_tensors(blob, format=DELTA_FORMAT)
            assert meta["scheme"] == "topk_int8"
            assert len(blob) == size < len(initial) / 4
        # Round 1's delta is against the initial model: base + delta is a model.
        first = store.get(cid_from_digest(bytes.fromhex(messages["1"]["update"])))
        model = decode_update(first, base=base, base_digest=sha256(initial),
                              scheme=compression.scheme)  # fmt: skip
        assert [a.shape for a in model] == [a.shape for a in base]
        assert any(not np.array_equal(a, b) for a, b in zip(model, base, strict=True))
        # Each node kept its residual, durably, after its last update (round 3).
        meta, _ = decode_tensors((state / RESIDUAL_FILE).read_bytes(), format=RESIDUAL_FORMAT)
        assert meta["round"] == "3"


def test_gossip_mode_refuses_a_compressed_task(tmp_path: Path) -> None:
    task = replace(load_config(DIGITS), nodes=2, rounds=1,
                   compression=CompressionConfig(quantize="int8"))  # fmt: skip
    with pytest.raises(ConfigError, match="gossip mode exchanges models") as info:
        run_task(task, out=tmp_path, mode="gossip", transport="memory", chain="none", timeout=60)
    assert info.value.field == "compression"
