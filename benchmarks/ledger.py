"""The ledger's costs: gas against model size, transactions per second, wall time per round.

    python -m benchmarks.ledger [--gas] [--tps] [--wall] [--large-mb 10] [--txs 300]
                                [--config examples/digits.toml] [--rounds 10] [--nodes 10]
                                [--out DIR]

With none of ``--gas``/``--tps``/``--wall`` every part runs; each flag selects its part.

1. **gas against model size** (``--gas``): on an embedded chain (logical clock), a Task with 5
   members is deployed once per model size, and one round is played by hand with real parameter
   blobs of about 1 KB and ``--large-mb`` MB (random float32 arrays, encoded with
   :func:`fedledger.commit.encode`): every member commits, reveals its blob's digest and CID,
   attests the FedAvg model's digest and the result digest until the round finalizes; then one
   member distributes. Each size plays round 1 of a fresh Task, so the same call position
   (first commit of a round, the commit that closes the phase, ...) is compared across sizes.
   The gas of a whole transaction includes its calldata (4 gas a zero byte, 16 a non-zero one),
   so it is also shown without the intrinsic part (21,000 + calldata): the execution gas.
2. **transactions per second** (``--tps``): ``--txs`` sequential transactions from one sender,
   signed locally with an explicit gas limit (the cached estimate), each awaited to its
   receipt: ETH transfers to fresh addresses, and ``Task.allow`` calls (owner only; one fresh
   storage slot and one event, like a ``commit``), on the embedded chain and on anvil (started
   from the repository's node_modules; skipped with a message if it cannot start). They are
   timed in three consecutive batches: the overall rate and the best batch's are printed.
3. **wall time per round** (``--wall``): ``fedledger run``'s in-process path on ``--config``
   over the in-memory transport, once without a ledger and once with the embedded chain (no
   audit during the run); then the audit of the ledger run is timed on its own.

Figures go to ``--out``/ledger.json (default: a new temporary directory). Nothing is asserted
on time: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from fedledger.commit import cid_from_digest, encode, sha256
from fedledger.config import TaskConfig, load_config
from fedledger.errors import ChainUnavailable, LedgerError
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import Chain, EmbeddedChain
from fedledger.ledger.contract_ledger import ContractLedger, deploy_task
from fedledger.ledger.records import TxResult
from fedledger.ledger.rules import commitment, result_digest, sort_result
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[1]

FLOWER_S_PER_ROUND = 0.35
"""Flower 1.42's simulation engine on this task and machine kind, as measured for the project
brief (not measured here); the same constant as benchmarks/consensus.py."""

GAS_MEMBERS = 5
SMALL_FLOATS = 256  # 1,024 bytes of float32 (plus the safetensors header)
WARMUP_TXS = 5
BATCHES = 3


# ------------------------------------------------------------------------------------------------
# 1. Gas against model size
# ------------------------------------------------------------------------------------------------


def intrinsic_gas(calldata: bytes) -> int:
    """21,000 plus the calldata's price (EIP-2028): what a call pays before any execution."""
    zeros = calldata.count(0)
    return 21_000 + 4 * zeros + 16 * (len(calldata) - zeros)


def play_round(
    chain: EmbeddedChain,
    task: TaskConfig,
    owner: LocalAccount,
    members: list[LocalAccount],
    floats: int,
    seed: int,
) -> dict[str, Any]:
    """Deploy a fresh Task, let ``members`` join, start it and play round 1 with blobs of
    ``floats`` float32 each. Returns the blob size and the gas of every call, in order."""
    task_address, _ = deploy_task(chain, task, owner=owner)
    ledgers = [ContractLedger(chain, task_address, m) for m in members]
    stake = task.ledger.min_stake
    for i, ledger in enumerate(ledgers):
        ledger.join(f"mem://member-{i}", stake)
    ContractLedger(chain, task_address, owner).start()
    rnd = 1

    rng = np.random.default_rng(seed)
    updates = [rng.standard_normal(floats).astype(np.float32) for _ in members]
    blobs = [encode([u]) for u in updates]
    t0 = time.perf_counter()
    digests = [sha256(b) for b in blobs]
    hash_s = (time.perf_counter() - t0) / len(blobs)
    cids = [cid_from_digest(d) for d in digests]
    examples = [100 + 10 * i for i in range(len(members))]
    model = np.average(np.stack(updates), axis=0, weights=examples).astype(np.float32)  # FedAvg
    model_digest = sha256(encode([model]))
    who, scores = sort_result([m.address for m in members], examples)
    result = result_digest(who, scores)
    salts = [hashlib.sha256(f"salt/{i}".encode()).digest() for i in range(len(members))]

    calls: list[tuple[str, TxResult]] = []
    for i, ledger in enumerate(ledgers):
        c = commitment(digests[i], members[i].address, rnd, salts[i])
        calls.append((f"commit #{i + 1}", ledger.commit(rnd, c)))
    for i, ledger in enumerate(ledgers):
        res = ledger.reveal(rnd, digests[i], cids[i], examples[i], salts[i])
        calls.append((f"reveal #{i + 1}", res))
    finalized = False
    for i, ledger in enumerate(ledgers):
        res = ledger.attest(rnd, model_digest, result)
        finalized = ledger.model_digest(rnd) == model_digest
        calls.append((f"attest #{i + 1}" + (" (finalizes)" if finalized else ""), res))
        if finalized:
            break
    if not finalized:
        raise LedgerError("the round did not finalize: every member attested")
    calls.append((f"distribute ({len(who)} contributors)", ledgers[0].distribute(rnd, who, scores)))

    rows: list[dict[str, Any]] = []
    for name, res in calls:
        intrinsic = intrinsic_gas(chain.transaction_input(res.tx))
        rows.append({"call": name, "gas": res.gas_used, "execution": res.gas_used - intrinsic})
    per_round = [r for r in rows if not r["call"].startswith("distribute")]
    return {
        "blob_bytes": len(blobs[0]),
        "hash_s": hash_s,
        "calls": rows,
        "gas_per_node_per_round": sum(r["gas"] for r in per_round) / len(members),
        "execution_per_node_per_round": sum(r["execution"] for r in per_round) / len(members),
    }


def bench_gas(task: TaskConfig, large_mb: float) -> dict[str, Any]:
    task = replace(task, nodes=GAS_MEMBERS)
    chain = EmbeddedChain(accounts=GAS_MEMBERS + 1)
    owner, *members = chain.accounts()
    large = int(large_mb * 2**20) // 4
    small_run = play_round(chain, task, owner, members, SMALL_FLOATS, seed=1)
    large_run = play_round(chain, task, owner, members, large, seed=2)

    def kb(n: int) -> str:
        return f"{n / 1024:,.1f} KB" if n < 2**20 else f"{n / 2**20:,.2f} MiB"

    a, b = small_run, large_run
    print(f"\n1. Gas per call, Task with {GAS_MEMBERS} members, round 1 of a fresh Task per size "
          f"(embedded chain)")  # fmt: skip
    print(f"   blobs: {kb(a['blob_bytes'])} and {kb(b['blob_bytes'])} per member; sha256 of "
          f"one blob (off chain): {a['hash_s'] * 1e3:.2f} ms and "
          f"{b['hash_s'] * 1e3:.1f} ms")  # fmt: skip
    header = (f"{'call':<30} {'gas ~1KB':>9} {'gas ~10MB':>10} {'ratio':>6}   "
              f"{'exec ~1KB':>9} {'exec ~10MB':>10}")  # fmt: skip
    print(header)
    print("-" * len(header))
    names_a = [r["call"] for r in a["calls"]]
    names_b = [r["call"] for r in b["calls"]]
    if names_a != names_b:
        print(f"   the rounds differ in shape: {names_a} / {names_b}")
    for ra, rb in zip(a["calls"], b["calls"], strict=False):
        print(f"{ra['call']:<30} {ra['gas']:>9,} {rb['gas']:>10,} {rb['gas'] / ra['gas']:6.3f}   "
              f"{ra['execution']:>9,} {rb['execution']:>10,}")  # fmt: skip
    ga, gb = a["gas_per_node_per_round"], b["gas_per_node_per_round"]
    ea, eb = a["execution_per_node_per_round"], b["execution_per_node_per_round"]
    print(f"{'gas per node per round':<30} {ga:>9,.0f} {gb:>10,.0f} {gb / ga:6.3f}   "
          f"{ea:>9,.0f} {eb:>10,.0f}")  # fmt: skip
    same_total = [r["gas"] for r in a["calls"]] == [r["gas"] for r in b["calls"]]
    same_exec = [r["execution"] for r in a["calls"]] == [r["execution"] for r in b["calls"]]
    print(f"   (commit + reveal + attest over the {GAS_MEMBERS} members / {GAS_MEMBERS}; "
          f"distribute is paid by one member)")  # fmt: skip
    print(f"   ratio {b['blob_bytes'] / a['blob_bytes']:,.0f}x the bytes / same gas: "
          f"{gb / ga:.3f}; every call's gas equal: {'yes' if same_total else 'no'}; "
          f"execution gas equal: {'yes' if same_exec else 'no'}")  # fmt: skip
    if same_exec and not same_total:
        print("   the whole-transaction gas differs only by calldata pricing: the random "
              "32-byte digests and commitments have a different number of zero bytes "
              "(4 gas instead of 16 each)")  # fmt: skip
    return {"members": GAS_MEMBERS, "small": a, "large": b, "ratio": gb / ga,
            "equal": same_total, "execution_equal": same_exec}  # fmt: skip


# ------------------------------------------------------------------------------------------------
# 2. Transactions per second
# ------------------------------------------------------------------------------------------------


def fresh_address(i: int, salt: str) -> str:
    return to_checksum_address(hashlib.sha256(f"{salt}/{i}".encode()).digest()[:20])


def rate(n: int, send: Callable[[int], object], batches: int = BATCHES) -> dict[str, float]:
    """``n`` calls of ``send`` after a warm-up, timed in ``batches`` consecutive batches: the
    overall rate, and the best batch's (less sensitive to other load on the machine)."""
    for i in range(WARMUP_TXS):
        send(-1 - i)
    times = []
    sizes = [n // batches + (1 if b < n % batches else 0) for b in range(batches)]
    done = 0
    for size in sizes:
        start = time.perf_counter()
        for i in range(done, done + size):
            send(i)
        times.append(time.perf_counter() - start)
        done += size
    elapsed = sum(times)
    best = max(size / t for size, t in zip(sizes, times, strict=True) if size)
    return {"txs": n, "seconds": elapsed, "tx_per_s": n / elapsed,
            "ms_per_tx": 1e3 * elapsed / n, "best_batch_tx_per_s": best}  # fmt: skip


def chain_rates(chain: Chain, task: TaskConfig, n: int, label: str) -> dict[str, dict[str, float]]:
    owner = chain.accounts()[0]
    task_address, _ = deploy_task(chain, task, owner=owner)
    contract = chain.contract(task_address, load_artifact("Task")["abi"])
    warm = chain.transact(contract.functions.allow(fresh_address(0, f"{label}/warm")), sender=owner)
    allow_gas = warm.gas_limit  # the cached estimate, passed explicitly from now on

    def transfer(i: int) -> object:
        return chain.transfer(fresh_address(i, f"{label}/transfer"), 1, sender=owner)

    def allow(i: int) -> object:
        fn = contract.functions.allow(fresh_address(i, f"{label}/allow"))
        return chain.transact(fn, sender=owner, gas=allow_gas)

    return {"transfer": rate(n, transfer), "allow": rate(n, allow)}


def bench_tps(task: TaskConfig, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    embedded = EmbeddedChain(accounts=1, clock=time.time, pace="elapsed")  # as `fedledger run`
    out["embedded"] = chain_rates(embedded, task, n, "embedded")
    try:
        from fedledger.ledger.chain.anvil import find_anvil, install_anvil, start_anvil

        binary = find_anvil(ROOT) or install_anvil(ROOT)
        with start_anvil(anvil=binary) as anvil:
            out["anvil"] = chain_rates(anvil.chain(), task, n, "anvil")
    except (LedgerError, ChainUnavailable, OSError) as exc:
        print(f"\nanvil skipped: {exc}")
        out["anvil"] = {"skipped": str(exc)}

    print(f"\n2. Sequential transactions from one sender, signed locally, explicit gas, each "
          f"awaited to its receipt ({n} after {WARMUP_TXS} warm-up, timed in {BATCHES} "
          f"batches)")  # fmt: skip
    header = f"{'backend':<10} {'transaction':<34} {'tx/s':>7} {'ms/tx':>7} {'best batch':>10}"
    print(header)
    print("-" * len(header))
    kinds = {"transfer": "ETH transfer (21,000 gas)", "allow": "Task.allow (new slot + event)"}
    for backend, figures in out.items():
        if "skipped" in figures:
            print(f"{backend:<10} skipped")
            continue
        for kind, label in kinds.items():
            f = figures[kind]
            print(f"{backend:<10} {label:<34} {f['tx_per_s']:7.1f} {f['ms_per_tx']:7.2f} "
                  f"{f['best_batch_tx_per_s']:8.1f}/s")  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------------
# 3. Wall time per round, with and without the ledger
# ------------------------------------------------------------------------------------------------


def bench_wall(task: TaskConfig, out: Path) -> dict[str, Any]:
    from fedledger.audit import audit_run

    runs: dict[str, dict[str, Any]] = {}
    for chain in ("none", "embedded"):
        start = time.perf_counter()
        report = run_task(task, out=out / f"wall-{chain}", transport="memory", chain=chain,
                          audit=False).to_dict()  # fmt: skip
        f = report["final"]
        runs[chain] = {
            "s_per_round": f["wall_s_per_round"],
            "total_s": time.perf_counter() - start,
            "acc_mean": f["acc_mean"],
            "model_digests_agree": f["model_digests_agree"],
            "rounds_finalized": f.get("rounds_finalized"),
            "gas_per_node_per_round": f.get("gas_per_node_per_round"),
        }
    start = time.perf_counter()
    verdict = audit_run(out / "wall-embedded")
    audit = {"seconds": time.perf_counter() - start, "ok": verdict.ok,
             "rounds": len(verdict.rounds)}  # fmt: skip

    none, emb = runs["none"], runs["embedded"]
    print(f"\n3. {task.name}: {task.nodes} nodes, {task.rounds} rounds, in-memory transport, "
          f"every node in this process")  # fmt: skip
    header = (f"{'chain':<10} {'s/round':>8} {'x none':>7} {'x Flower':>9} {'acc':>7} "
              f"{'finalized':>9} {'gas/node/round':>15} {'run s':>7}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, r in runs.items():
        fin = "-" if r["rounds_finalized"] is None else f"{r['rounds_finalized']}/{task.rounds}"
        gas = r["gas_per_node_per_round"]
        print(f"{name:<10} {r['s_per_round']:8.3f} {r['s_per_round'] / none['s_per_round']:7.2f} "
              f"{r['s_per_round'] / FLOWER_S_PER_ROUND:9.2f} {r['acc_mean']:7.4f} {fin:>9} "
              f"{'-' if gas is None else f'{gas:,.0f}':>15} {r['total_s']:7.1f}")  # fmt: skip
    print(f"   embedded / none: {emb['s_per_round'] / none['s_per_round']:.2f}; "
          f"x Flower: against Flower 1.42's simulation ({FLOWER_S_PER_ROUND} s/round, quoted "
          f"from the brief, not measured here)")  # fmt: skip
    print(f"   audit of the ledger run (journal replay + every check): {audit['seconds']:.1f} s, "
          f"{audit['rounds']} rounds, ok: {audit['ok']}")  # fmt: skip
    return {"task": task.name, "nodes": task.nodes, "rounds": task.rounds, "runs": runs,
            "ratio_embedded_none": emb["s_per_round"] / none["s_per_round"],
            "flower_s_per_round": FLOWER_S_PER_ROUND, "audit": audit}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gas", action="store_true", help="part 1: gas against model size")
    parser.add_argument("--tps", action="store_true", help="part 2: transactions per second")
    parser.add_argument("--wall", action="store_true", help="part 3: wall time per round")
    parser.add_argument("--large-mb", type=float, default=10.0, help="the large model (MiB)")
    parser.add_argument("--txs", type=int, default=300, help="transactions per measurement")
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "digits.toml")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="run directories and ledger.json")
    args = parser.parse_args()
    everything = not (args.gas or args.tps or args.wall)
    task = load_config(args.config)
    out = args.out or Path(tempfile.mkdtemp(prefix="fedledger-bench-ledger-"))
    out.mkdir(parents=True, exist_ok=True)

    figures: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f} (other "
          f"processes on the machine slow every timing below)")  # fmt: skip
    if everything or args.gas:
        figures["gas"] = bench_gas(task, args.large_mb)
    if everything or args.tps:
        figures["tps"] = bench_tps(task, args.txs)
    if everything or args.wall:
        figures["wall"] = bench_wall(replace(task, rounds=args.rounds, nodes=args.nodes), out)
    figures["loadavg_end"] = os.getloadavg()
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {rss:.0f} MiB")
    (out / "ledger.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {out / 'ledger.json'}")


if __name__ == "__main__":
    main()
