"""The ledger's costs (ledger v2): gas per member and round, transactions per second, wall
time per round with and without the ledger and under attack.

    python -m benchmarks.ledger [--gas] [--tps] [--wall] [--members 10,50,100,200]
                                [--gas-rounds 30] [--large-mb 10] [--txs 300]
                                [--config examples/digits.toml] [--rounds 10] [--out DIR]

With none of ``--gas``/``--tps``/``--wall`` every part runs; each flag selects its part.

1. **gas** (``--gas``): on an embedded chain (logical clock), a Task with N members for each N
   of ``--members`` plays ``--gas-rounds`` R rounds by hand through
   :class:`~fedledger.ledger.contract_ledger.ContractLedger`, with real EIP-712 signatures:
   every round r is ONE ``submit`` batch holding every member's signed message (its update's
   digest for r and its attestation of r - 1's outcome), which finalizes r - 1 and pays its
   contributors; round R + 1's batch carries attestations only; then every member claims its
   rewards. Printed per N: transactions per round (counted), gas per member per round (every
   transaction of rounds 1..R+1 / (N * R)), the same with the claims, the steady-state
   round's (round R, once the contract's ring of round slots is reused), and the targets
   (<= 3 transactions per round; <= 40,000 gas per member and round at N = 10, <= 20,000 at
   N = 100). Then gas against model size: a fresh Task with 10 members plays rounds 1 and 2
   with the digests of real encoded blobs (:func:`fedledger.commit.encode` of random float32
   arrays) of about 1 KB and ``--large-mb`` MiB, round 2 attesting the FedAvg model's digest:
   the chain only sees digests, so the gas is the same. The whole transaction's gas includes
   its calldata (4 gas a zero byte, 16 a non-zero one: random digests and signatures differ in
   their zero bytes), so the execution gas (without 21,000 + calldata) is compared as well.
2. **transactions per second** (``--tps``): ``--txs`` sequential transactions from one sender,
   signed locally with an explicit gas limit (the cached estimate), each awaited to its
   receipt: ETH transfers to fresh addresses, and ``Task.allow`` calls (owner only; one fresh
   storage slot and one event), on the embedded chain and on anvil (started from the
   repository's node_modules; skipped with a message if it cannot start). They are timed in
   three consecutive batches: the overall rate and the best batch's are printed.
3. **wall time per round** (``--wall``): ``fedledger run``'s in-process path on ``--config``
   with ``--rounds`` rounds over the in-memory transport: without a ledger; with the embedded
   chain; and with the embedded chain and 30 % attackers for each of ``withhold`` (signs its
   update's digest but never serves the blob: v2's "never reveal"), ``alie`` and
   ``equivocate``. Each configuration runs twice and the faster run is kept (the machine's
   other load only slows a run down). Printed: s/round (rounds 2 to the last: the time from
   the end of round 1 to the end of the last round, over the rounds in between; start-up,
   deploying and joining the task included, is the report's ``wall_s_per_round``, kept in
   the JSON as ``s_per_round_with_startup``), transactions and gas per node per round from
   the report, and the
   ratios ledger / no ledger (target <= 1.3) and attack / clean ledger (target <= 1.5). The
   runs go in passes over every configuration, so that a change in the machine's other load
   slows every configuration alike.

Figures go to ``--out``/ledger.json (default: a new temporary directory). Nothing is asserted:
the targets are printed PASS or FAIL, and timings depend on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from eth_utils.address import to_checksum_address

from fedledger.commit import encode, sha256
from fedledger.config import LedgerConfig, TaskConfig, load_config
from fedledger.errors import ChainUnavailable, FedledgerError, LedgerError
from fedledger.gossip.identity import Identity
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import Chain, EmbeddedChain
from fedledger.ledger.contract_ledger import ContractLedger, deploy_task
from fedledger.ledger.messages import ZERO32, RoundMessage
from fedledger.ledger.records import TxResult
from fedledger.ledger.rules import PHASE_FINALIZED, result_digest, sort_result
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[1]

MEMBERS = (10, 50, 100, 200)
GAS_ROUNDS = 30
TX_PER_ROUND_TARGET = 3
GAS_TARGETS = {10: 40_000, 100: 20_000}
"""Gas per member and round, by task size (members)."""
SIZE_MEMBERS = 10
SMALL_FLOATS = 256  # 1,024 bytes of float32 (plus the safetensors header)
STAKE = 10**18

WALL_ATTACKS = ("withhold", "alie", "equivocate")
ATTACKERS = 0.3
WALL_REPEATS = 2
LEDGER_TARGET = 1.3
ATTACK_TARGET = 1.5
WARMUP_TXS = 5
BATCHES = 3


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ------------------------------------------------------------------------------------------------
# 1. Gas per member and round
# ------------------------------------------------------------------------------------------------


def intrinsic_gas(calldata: bytes) -> int:
    """21,000 plus the calldata's price (EIP-2028): what a call pays before any execution."""
    zeros = calldata.count(0)
    return 21_000 + 4 * zeros + 16 * (len(calldata) - zeros)


class GasTask:
    """A fresh Task on ``chain`` with ``n`` members (accounts 1..n), started, played by hand."""

    def __init__(self, chain: EmbeddedChain, n: int, rounds: int) -> None:
        self.chain = chain
        owner, *members = chain.accounts()[: n + 1]
        task = TaskConfig(name="bench", nodes=n, rounds=rounds,
                          ledger=LedgerConfig(min_stake=STAKE, max_participants=256))  # fmt: skip
        self.address, _ = deploy_task(chain, task, owner=owner)
        self.members = members
        self.ledgers = [ContractLedger(chain, self.address, m) for m in members]
        self.identities = [Identity.from_hex(m.key.hex()) for m in members]
        for ledger in self.ledgers:
            ledger.join("mem://member", STAKE)
        ContractLedger(chain, self.address, owner).start()
        self.chain_id = self.ledgers[0].chain_id
        self.submitted = 0

    def submit(
        self,
        rnd: int,
        updates: Sequence[bytes],
        examples: Sequence[int],
        pair: tuple[bytes, bytes],
        contributors: Sequence[str],
        scores: Sequence[int],
    ) -> TxResult:
        """Round ``rnd``'s one batch: every member's signed message, paying round rnd - 1."""
        msgs = []
        for i, u, e in zip(self.identities, updates, examples, strict=True):
            msg = RoundMessage(round=rnd, update=u, examples=e, model=pair[0], result=pair[1])
            msgs.append(msg.sign(i, self.chain_id, self.address))
        # The submitter rotates, as the nodes' designated submitter does.
        ledger = self.ledgers[self.submitted % len(self.ledgers)]
        self.submitted += 1
        res = ledger.submit(rnd, msgs, contributors, scores)
        self.chain.time_travel(1)
        return res

    def execution(self, res: TxResult) -> int:
        return res.gas_used - intrinsic_gas(self.chain.transaction_input(res.tx))


def play_task(n: int, rounds: int) -> dict[str, Any]:
    """R rounds and the attestation-only round R + 1 with ``n`` members, then every claim."""
    chain = EmbeddedChain(accounts=n + 1)
    t = GasTask(chain, n, rounds)
    addresses = [m.address for m in t.members]
    examples = [100 + k for k in range(n)]
    pair = (ZERO32, ZERO32)
    who: list[str] = []
    scores: list[int] = []
    per_round: list[list[TxResult]] = []
    start = time.perf_counter()
    for rnd in range(1, rounds + 2):
        last = rnd > rounds
        updates = [ZERO32 if last else hashlib.sha256(f"update/{rnd}/{k}".encode()).digest()
                   for k in range(n)]  # fmt: skip
        counts = [0] * n if last else examples
        res = t.submit(rnd, updates, counts, pair, who, scores)
        per_round.append([res])
        if not last:  # round rnd's outcome, attested (and paid) in round rnd + 1
            who, scores = sort_result(addresses, examples)
            pair = (hashlib.sha256(f"model/{rnd}".encode()).digest(), result_digest(who, scores))
    seconds = time.perf_counter() - start
    phases = [t.ledgers[0].phase(r) for r in range(1, rounds + 1)]
    claims = [ledger.claim(a) for ledger, a in zip(t.ledgers, addresses, strict=True)]
    earned = [t.ledgers[0].earned_of(a) for a in addresses]
    round_gas = [sum(r.gas_used for r in txs) for txs in per_round]
    claim_gas = sum(c.gas_used for c in claims)
    total = sum(round_gas)
    return {
        "members": n,
        "rounds": rounds,
        "finalized": sum(1 for p in phases if p == PHASE_FINALIZED),
        "tx_per_round": [len(txs) for txs in per_round],
        "max_tx_per_round": max(len(txs) for txs in per_round),
        "gas_per_round": round_gas,
        "claim_gas": claim_gas,
        "claim_gas_each": claim_gas / n,
        "gas_per_member_per_round": total / (n * rounds),
        "gas_per_member_per_round_with_claims": (total + claim_gas) / (n * rounds),
        "steady_gas_per_member": round_gas[rounds - 1] / n,
        "steady_round": rounds,
        "execution_per_member_steady": t.execution(per_round[rounds - 1][0]) / n,
        "earned_total": sum(earned) / 10**18,
        "play_seconds": seconds,
    }


def size_round(floats: int, seed: int) -> dict[str, Any]:
    """Rounds 1 and 2 of a fresh Task with :data:`SIZE_MEMBERS` members whose updates are
    blobs of ``floats`` float32 each; round 2 attests the FedAvg model's digest."""
    chain = EmbeddedChain(accounts=SIZE_MEMBERS + 1)
    t = GasTask(chain, SIZE_MEMBERS, rounds=2)
    rng = np.random.default_rng(seed)
    examples = [100 + 10 * k for k in range(SIZE_MEMBERS)]
    digests, size, hash_s = [], 0, 0.0
    model = np.zeros(floats, dtype=np.float64)
    for e in examples:  # one blob at a time: 10 of 10 MiB need not be held at once
        update = rng.standard_normal(floats).astype(np.float32)
        model += e * update
        blob = encode([update])
        t0 = time.perf_counter()
        digests.append(sha256(blob))
        hash_s += time.perf_counter() - t0
        size = len(blob)
    model_digest = sha256(encode([(model / sum(examples)).astype(np.float32)]))
    who, scores = sort_result([m.address for m in t.members], examples)
    first = t.submit(1, digests, examples, (ZERO32, ZERO32), [], [])
    pair = (model_digest, result_digest(who, scores))
    second = t.submit(2, [ZERO32] * SIZE_MEMBERS, [0] * SIZE_MEMBERS, pair, who, scores)
    calls = (("round 1: submit (updates)", first),
             ("round 2: submit (attests 1, pays it)", second))  # fmt: skip
    return {
        "blob_bytes": size,
        "hash_s": hash_s / SIZE_MEMBERS,
        "finalized": t.ledgers[0].model_digest(1) == model_digest,
        "calls": [{"call": c, "gas": r.gas_used, "execution": t.execution(r)} for c, r in calls],
    }


def bench_gas(members: Sequence[int], rounds: int, large_mb: float) -> dict[str, Any]:
    runs = []
    print(f"\n1. Gas on the embedded chain: {rounds} rounds + the attestation-only round "
          f"{rounds + 1}, one batch of every member's signed message a round, then every "
          f"member claims")  # fmt: skip
    header = (f"{'members':>7} {'tx/round':>8} {'gas/member/round':>16} {'+ claims':>9} "
              f"{'steady':>7} {'target':>7}  {'verdict (avg, +claims, steady)':<30} "
              f"{'finalized':>9} {'play s':>7}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for n in members:
        r = play_task(n, rounds)
        target = GAS_TARGETS.get(n)
        gas_ok = None
        if target is not None:
            gas_ok = {"average": r["gas_per_member_per_round"] <= target,
                      "with_claims": r["gas_per_member_per_round_with_claims"] <= target,
                      "steady": r["steady_gas_per_member"] <= target}  # fmt: skip
        tx_ok = r["max_tx_per_round"] <= TX_PER_ROUND_TARGET
        r.update(gas_target=target, gas_ok=gas_ok, tx_ok=tx_ok)
        runs.append(r)
        shown = "-" if gas_ok is None else ", ".join(verdict(v) for v in gas_ok.values())
        print(f"{n:>7} {r['max_tx_per_round']:>8} {r['gas_per_member_per_round']:>16,.0f} "
              f"{r['gas_per_member_per_round_with_claims']:>9,.0f} "
              f"{r['steady_gas_per_member']:>7,.0f} "
              f"{'-' if target is None else f'{target:,}':>7}  {shown:<30} "
              f"{r['finalized']:>5}/{rounds:<3} {r['play_seconds']:7.1f}")  # fmt: skip
    print(f"   tx/round: transactions sent in each of rounds 1..{rounds + 1} (the most of "
          f"any round); target <= {TX_PER_ROUND_TARGET}: "
          f"{verdict(all(r['tx_ok'] for r in runs))}")  # fmt: skip
    print(f"   gas/member/round: every transaction of rounds 1..{rounds + 1} / (members x "
          f"{rounds}); + claims: with every member's claim (one each, at the end); steady: "
          f"round {rounds}'s batch / members (the contract's 8 round slots reused)")  # fmt: skip
    for r in runs:
        g = r["gas_per_round"]
        print(f"   {r['members']:>3} members, gas per batch: round 1 {g[0]:,}, round 2 "
              f"{g[1]:,}, round {rounds} {g[rounds - 1]:,}, round {rounds + 1} "
              f"(attests only) {g[rounds]:,}; a claim {r['claim_gas_each']:,.0f}; steady "
              f"execution gas / member {r['execution_per_member_steady']:,.0f}")  # fmt: skip

    large = int(large_mb * 2**20) // 4
    a, b = size_round(SMALL_FLOATS, seed=1), size_round(large, seed=2)

    def kb(n: int) -> str:
        return f"{n / 1024:,.1f} KB" if n < 2**20 else f"{n / 2**20:,.2f} MiB"

    print(f"\n   Gas against model size: a fresh Task with {SIZE_MEMBERS} members per size, "
          f"blobs of {kb(a['blob_bytes'])} and {kb(b['blob_bytes'])} per member (sha256 of "
          f"one, off chain: {a['hash_s'] * 1e3:.2f} ms and "
          f"{b['hash_s'] * 1e3:.1f} ms)")  # fmt: skip
    header = (f"   {'call':<38} {'gas ~1KB':>9} {'gas ~10MiB':>10} {'ratio':>6}   "
              f"{'exec ~1KB':>9} {'exec ~10MiB':>11}")  # fmt: skip
    print(header)
    print("   " + "-" * (len(header) - 3))
    for ra, rb in zip(a["calls"], b["calls"], strict=True):
        print(f"   {ra['call']:<38} {ra['gas']:>9,} {rb['gas']:>10,} "
              f"{rb['gas'] / ra['gas']:6.4f}   {ra['execution']:>9,} "
              f"{rb['execution']:>11,}")  # fmt: skip
    same_total = [r["gas"] for r in a["calls"]] == [r["gas"] for r in b["calls"]]
    same_exec = [r["execution"] for r in a["calls"]] == [r["execution"] for r in b["calls"]]
    ga, gb = (sum(r["gas"] for r in x["calls"]) for x in (a, b))
    print(f"   {b['blob_bytes'] / a['blob_bytes']:,.0f}x the bytes, gas ratio {gb / ga:.4f}; "
          f"every call's gas equal: {'yes' if same_total else 'no'}; execution gas equal: "
          f"{'yes' if same_exec else 'no'}; round 1 finalized both times: "
          f"{'yes' if a['finalized'] and b['finalized'] else 'no'}")  # fmt: skip
    if same_exec and not same_total:
        print("   the whole-transaction gas differs only by calldata pricing: the random "
              "digests and signatures have different numbers of zero bytes (4 gas instead of "
              "16 each)")  # fmt: skip
    return {"rounds": rounds, "runs": runs,
            "size": {"members": SIZE_MEMBERS, "small": a, "large": b, "ratio": gb / ga,
                     "equal": same_total, "execution_equal": same_exec}}  # fmt: skip


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
# 3. Wall time per round, with and without the ledger, and under attack
# ------------------------------------------------------------------------------------------------


def wall_run(task: TaskConfig, out: Path, chain: str, attack: str | None) -> dict[str, Any]:
    start = time.perf_counter()
    kwargs: dict[str, Any] = {} if attack is None else {"attack": attack,
                                                        "attackers": ATTACKERS}  # fmt: skip
    try:
        report = run_task(task, out=out, transport="memory", chain=chain, audit=False,
                          timeout=max(600.0, 60.0 * task.rounds), **kwargs).to_dict()  # fmt: skip
    except FedledgerError as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "total_s": time.perf_counter() - start}
    f = report["final"]
    rounds = report.get("rounds") or []
    txs = [r["transactions"] for r in rounds if "transactions" in r]
    gas = [r["gas_per_node"] for r in rounds if "gas_per_node" in r]
    walls = [r["wall_s"] for r in rounds]
    steady = (walls[-1] - walls[0]) / (len(walls) - 1) if len(walls) > 1 else f["wall_s_per_round"]
    return {
        "s_per_round": steady,
        "s_per_round_with_startup": f["wall_s_per_round"],
        "total_s": time.perf_counter() - start,
        "acc_mean": f["acc_mean"],
        "honest_acc": f.get("honest_acc_mean"),
        "model_digests_agree": f["model_digests_agree"],
        "rounds_completed": f.get("rounds_completed"),
        "rounds_finalized": f.get("rounds_finalized"),
        "slashed": f.get("slashed"),
        "transactions_per_round": txs,
        "max_transactions_per_round": max(txs) if txs else None,
        "gas_per_node_per_round": f.get("gas_per_node_per_round"),
        "gas_per_node_by_round": gas,
    }


def bench_wall(task: TaskConfig, out: Path, attacks: Sequence[str]) -> dict[str, Any]:
    configs: list[tuple[str, str, str | None]] = [("no ledger", "none", None),
                                                  ("ledger", "embedded", None)]  # fmt: skip
    configs += [(f"ledger + {a}", "embedded", a) for a in attacks]
    tried: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in configs}
    # Passes over every configuration (not each configuration twice in a row): a change in
    # the machine's other load then slows every configuration alike.
    for k in range(WALL_REPEATS):
        for name, chain, attack in configs:
            where = out / f"wall-{name.replace(' + ', '-').replace(' ', '-')}-{k + 1}"
            t = wall_run(task, where, chain, attack)
            tried[name].append(t)
            print(f"   pass {k + 1}, {name}: "
                  + (t["error"] if "error" in t else f"{t['s_per_round']:.3f} s/round")
                  + f" (load average {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
    runs: dict[str, dict[str, Any]] = {}
    for name, tries in tried.items():
        ok = [t for t in tries if "error" not in t]
        best = min(ok, key=lambda t: t["s_per_round"]) if ok else dict(tries[-1])
        best["runs_s_per_round"] = [t.get("s_per_round") for t in tries]
        runs[name] = best

    base = runs["no ledger"].get("s_per_round")
    clean = runs["ledger"].get("s_per_round")
    print(f"\n3. {task.name}: {task.nodes} nodes, {task.rounds} rounds, in-memory transport, "
          f"every node in this process; {int(ATTACKERS * 100)} % attackers; the faster of "
          f"{WALL_REPEATS} runs of each ({WALL_REPEATS} passes over every "
          f"configuration)")  # fmt: skip
    header = (f"{'run':<22} {'s/round':>8} {'runs':>13} {'ratio':>6} {'acc':>7} "
              f"{'finalized':>9} {'tx/round':>8} {'gas/node/round':>15}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, r in runs.items():
        if "error" in r:
            print(f"{name:<22} failed: {r['error']}")
            continue
        ref = base if name == "ledger" else clean if name.startswith("ledger +") else None
        ratio = "-" if ref is None else f"{r['s_per_round'] / ref:.2f}"
        fin = "-" if r["rounds_finalized"] is None else f"{r['rounds_finalized']}/{task.rounds}"
        both = "/".join("-" if s is None else f"{s:.2f}" for s in r["runs_s_per_round"])
        tx = r["max_transactions_per_round"]
        gas = r["gas_per_node_per_round"]
        print(f"{name:<22} {r['s_per_round']:8.3f} {both:>13} {ratio:>6} {r['acc_mean']:7.4f} "
              f"{fin:>9} {'-' if tx is None else tx:>8} "
              f"{'-' if gas is None else f'{gas:,.0f}':>15}")  # fmt: skip
    ratios: dict[str, Any] = {}
    if base and clean:
        ratios["ledger/no ledger"] = clean / base
        print(f"   ledger / no ledger: {clean / base:.2f} (target <= {LEDGER_TARGET}): "
              f"{verdict(clean / base <= LEDGER_TARGET)}")  # fmt: skip
    for a in attacks:
        r = runs[f"ledger + {a}"]
        if clean and "error" not in r:
            ratio = r["s_per_round"] / clean
            ratios[f"{a}/ledger"] = ratio
            print(f"   {a} / ledger: {ratio:.2f} (target <= {ATTACK_TARGET}): "
                  f"{verdict(ratio <= ATTACK_TARGET)}")  # fmt: skip
        else:
            print(f"   {a} / ledger: no figure ({r.get('error', 'no clean ledger run')})")
    print("   s/round: from the end of round 1 to the end of the last round, per round (start-up "
          "excluded; with it: s_per_round_with_startup in the JSON); tx/round: the most "
          "transactions of any round; gas/node/round: the report's mean")  # fmt: skip
    return {"task": task.name, "nodes": task.nodes, "rounds": task.rounds,
            "attackers": ATTACKERS, "repeats": WALL_REPEATS, "runs": runs,
            "ratios": ratios}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gas", action="store_true", help="part 1: gas per member and round")
    parser.add_argument("--tps", action="store_true", help="part 2: transactions per second")
    parser.add_argument("--wall", action="store_true", help="part 3: wall time per round")
    parser.add_argument("--members", default=",".join(map(str, MEMBERS)),
                        help="task sizes for --gas (comma-separated)")  # fmt: skip
    parser.add_argument("--gas-rounds", type=int, default=GAS_ROUNDS,
                        help="rounds played for --gas")  # fmt: skip
    parser.add_argument("--large-mb", type=float, default=10.0, help="the large model (MiB)")
    parser.add_argument("--txs", type=int, default=300, help="transactions per measurement")
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "digits.toml")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of each --wall run")
    parser.add_argument("--attacks", default=",".join(WALL_ATTACKS),
                        help="attacks for --wall (comma-separated; empty: none)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="run directories and ledger.json")
    args = parser.parse_args()
    everything = not (args.gas or args.tps or args.wall)
    task = load_config(args.config)
    out = args.out or Path(tempfile.mkdtemp(prefix="fedledger-bench-ledger-"))
    out.mkdir(parents=True, exist_ok=True)
    members = [int(m) for m in args.members.split(",") if m.strip()]
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]

    figures: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f} (other "
          f"processes on the machine slow every timing below)")  # fmt: skip
    if everything or args.gas:
        figures["gas"] = bench_gas(members, args.gas_rounds, args.large_mb)
    if everything or args.tps:
        figures["tps"] = bench_tps(task, args.txs)
    if everything or args.wall:
        figures["wall"] = bench_wall(replace(task, rounds=args.rounds), out, attacks)
    figures["loadavg_end"] = os.getloadavg()
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {rss:.0f} MiB")
    (out / "ledger.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {out / 'ledger.json'}")


if __name__ == "__main__":
    main()
