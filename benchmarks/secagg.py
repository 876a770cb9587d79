"""Secure aggregation: what it costs against plain FedAvg, and that its sum is exact.

    python -m benchmarks.secagg [--config examples/digits.toml] [--nodes 10] [--rounds 5]
                                [--out runs/secagg]

Three parts, all measured in this run (no figure is copied from elsewhere):

1. **Exactness.** The task's model shapes, ``nodes`` members with random models and example
   counts: the sum unmasked from the key blobs, masked inputs and reveals
   (:mod:`fedledger.privacy.secagg_round`) against plain FedAvg's fixed-point result, with 0,
   10, 20 and 33 % of the members dropped out after the masking set was fixed. Equal means
   byte-equal model blobs.
2. **Sizes.** A masked update against a plain update blob, a reveal message and a key blob
   (amortized over the task's rounds).
3. **Runs.** ``fedledger run`` of the task twice on the embedded chain, every node in this
   process over the in-memory transport: plain FedAvg, then with
   ``[privacy] secure_aggregation = true``; bytes per node per round (sent + received, every
   frame and blob) and seconds per round, and their ratios (goal: bytes at most 2x at 10
   members).

Written to ``--out``: secagg.json and results.md (the table for docs/performance.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fedledger.aggregation import fedavg
from fedledger.aggregation.validation import spec_of
from fedledger.commit import encode
from fedledger.config import AggregationConfig, PrivacyConfig, TaskConfig, load_config
from fedledger.node.consensus import Timeouts
from fedledger.privacy.secagg_keys import channel_private, make_key_blob, public_bytes
from fedledger.privacy.secagg_round import (
    encode_masked,
    make_reveal,
    mask_update,
    rebuild,
    secagg_model,
    unmask_sum,
    weight_of,
)
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "digits.toml"
DROPOUTS = (0.0, 0.1, 0.2, 0.33)
SCOPE = "31337:0x00000000000000000000000000000000000000be"
ROUND = 1
PATIENT = Timeouts(initial=120.0, minimum=60.0, maximum=120.0)
"""One process, no crash: deadlines would only cut stragglers of a loaded machine."""


def _shapes(task: TaskConfig) -> list[np.ndarray]:
    from fedledger.audit import initial_model
    from fedledger.commit import decode

    return list(decode(initial_model(task)))


def exactness(task: TaskConfig, nodes: int) -> dict[str, Any]:
    """The unmasked model against plain FedAvg, for each dropout fraction; timings."""
    init = _shapes(task)
    rng = np.random.default_rng(task.seed)  # the models and counts, not secrets
    keys = {f"0x{hashlib.sha256(bytes([i])).hexdigest()[:40]}":
            hashlib.sha256(b"benchmark key %d" % i).digest() for i in range(nodes)}  # fmt: skip
    members = sorted(keys)
    channels = {a: public_bytes(channel_private(k, SCOPE)) for a, k in keys.items()}
    t0 = time.perf_counter()
    blobs = {a: make_key_blob(k, scope=SCOPE, member=a, first_round=ROUND,
                              last_round=ROUND + task.rounds - 1, recipients=channels)
             for a, k in keys.items()}  # fmt: skip
    keygen = (time.perf_counter() - t0) / nodes
    models = {a: [(p + rng.normal(0, 0.1, p.shape)).astype(p.dtype) for p in init]
              for a in members}  # fmt: skip
    examples = {a: int(rng.integers(20, 400)) for a in members}
    peers = {a: b.keys_of(ROUND).mask_key for a, b in blobs.items()}
    t0 = time.perf_counter()
    masked = {a: mask_update(keys[a], scope=SCOPE, rnd=ROUND, me=a, params=models[a],
                             weight=weight_of(examples[a]), peers=peers)
              for a in members}  # fmt: skip
    mask_s = (time.perf_counter() - t0) / nodes
    cells = []
    for fraction in DROPOUTS:
        dropped = round(fraction * nodes)
        dropouts, survivors = members[:dropped], members[dropped:]
        t0 = time.perf_counter()
        reveals = [make_reveal(keys[a], scope=SCOPE, rnd=ROUND, me=a, survivors=survivors,
                               dropouts=dropouts, blobs=blobs) for a in survivors]  # fmt: skip
        reveal_s = (time.perf_counter() - t0) / len(survivors)
        t0 = time.perf_counter()
        weights = {a: ("-", weight_of(examples[a])) for a in survivors}
        transcript = rebuild(scope=SCOPE, rnd=ROUND, dropouts=dropouts, blobs=blobs,
                             reveals=reveals, survivors=weights)  # fmt: skip
        total, weight = unmask_sum(transcript, masked={a: masked[a] for a in survivors},
                                   blobs=blobs)  # fmt: skip
        model = secagg_model(total, weight, spec_of(init))
        unmask_s = time.perf_counter() - t0
        plain = fedavg([models[a] for a in survivors], [examples[a] for a in survivors])
        cells.append({"dropout": fraction, "dropped": dropped,
                      "exact": encode(model) == encode(plain.params),
                      "reveal_s": reveal_s, "unmask_s": unmask_s})  # fmt: skip
    reveal_bytes = len(json.dumps(reveals[0].to_body(), separators=(",", ":")))
    return {
        "members": nodes, "coordinates": int(sum(p.size for p in init)),
        "keygen_s_per_member": keygen, "mask_s_per_member": mask_s, "cells": cells,
        "plain_update_bytes": len(encode(init)),
        "masked_update_bytes": len(encode_masked(rnd=ROUND, member=members[0], weight=1,
                                                 masked=masked[members[0]])),
        "reveal_body_bytes": reveal_bytes,
        "key_blob_bytes": len(blobs[members[0]].to_bytes()),
        "rounds": task.rounds,
    }  # fmt: skip


def run_pair(task: TaskConfig, out: Path) -> dict[str, Any]:
    """The task run plainly, then with secure aggregation: bytes and seconds per round."""
    rows = {}
    for name, privacy in (("plain", None), ("secure", PrivacyConfig(secure_aggregation=True))):
        cell = replace(task, privacy=privacy)
        report = run_task(cell, out=out / name, transport="memory", chain="embedded",
                          timeouts=PATIENT, audit=False).to_dict()  # fmt: skip
        final = report["final"]
        per_round = final["bytes_per_node_per_round"]
        rows[name] = {"bytes": per_round["sent"] + per_round["recv"],
                      "sent": per_round["sent"], "recv": per_round["recv"],
                      "s_per_round": final["wall_s_per_round"], "acc": final["acc_mean"],
                      "rounds_finalized": final.get("rounds_finalized")}  # fmt: skip
    plain, secure = rows["plain"], rows["secure"]
    return {**rows, "bytes_ratio": secure["bytes"] / plain["bytes"],
            "time_ratio": secure["s_per_round"] / plain["s_per_round"]}  # fmt: skip


def results_md(result: dict[str, Any]) -> str:
    ex, runs = result["exactness"], result["runs"]
    lines = [
        "| dropped out | unmasked = plain FedAvg | reveal (s/member) | unmask (s) |",
        "| --- | --- | --- | --- |",
    ]
    for c in ex["cells"]:
        lines.append(f"| {c['dropped']} of {ex['members']} ({c['dropout']:.0%}) | "
                     f"{'yes' if c['exact'] else 'NO'} | {c['reveal_s']:.3f} | "
                     f"{c['unmask_s']:.3f} |")  # fmt: skip
    lines += [
        "",
        "| run | bytes per node per round | seconds per round | accuracy |",
        "| --- | --- | --- | --- |",
    ]
    for name in ("plain", "secure"):
        r = runs[name]
        lines.append(f"| {name} | {r['bytes']:,.0f} | {r['s_per_round']:.3f} | {r['acc']:.3f} |")
    lines.append(f"| ratio | {runs['bytes_ratio']:.2f}x | {runs['time_ratio']:.2f}x | |")
    return "\n".join(lines) + "\n"


def run_benchmark(*, config: Path, nodes: int, rounds: int, out: Path,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    # Plain FedAvg is the baseline (secure aggregation's rule) whatever the task's rule.
    task = replace(load_config(config), nodes=nodes, rounds=rounds,
                   aggregation=AggregationConfig(rule="fedavg"))  # fmt: skip
    ex = exactness(task, nodes)
    for c in ex["cells"]:
        echo(f"dropout {c['dropout']:.0%}: exact {c['exact']}")
    factor = ex["masked_update_bytes"] / ex["plain_update_bytes"]
    echo(f"masked update {ex['masked_update_bytes']:,} bytes, plain "
         f"{ex['plain_update_bytes']:,} ({factor:.2f}x)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_pair(task, Path(tmp))
    echo(f"bytes per node per round: plain {runs['plain']['bytes']:,.0f}, secure "
         f"{runs['secure']['bytes']:,.0f} ({runs['bytes_ratio']:.2f}x); seconds per round "
         f"{runs['plain']['s_per_round']:.3f} vs {runs['secure']['s_per_round']:.3f} "
         f"({runs['time_ratio']:.2f}x)")  # fmt: skip
    result = {"task": task.name, "config": str(config), "nodes": nodes, "rounds": rounds,
              "exactness": ex, "runs": runs}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "secagg.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(results_md(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/secagg"))
    args = parser.parse_args(argv)
    run_benchmark(config=args.config, nodes=args.nodes, rounds=args.rounds, out=args.out)
    print(f"written: {args.out / 'secagg.json'}, {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
