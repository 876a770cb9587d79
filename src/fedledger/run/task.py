"""``fedledger run``: a whole task on this machine, with or without a ledger, then its report
(and, with a ledger, the audit)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount

from fedledger.attacks.behaviour import OMNISCIENT, PROTOCOL_ATTACKS, Attack
from fedledger.attacks.data import choose_attackers
from fedledger.config import TaskConfig
from fedledger.config.consent import ConsentPolicy
from fedledger.errors import ConfigError, RunFailed
from fedledger.gossip.identity import Identity
from fedledger.gossip.topology import TopologySpec
from fedledger.ledger.chain import Chain, EmbeddedChain, RpcChain
from fedledger.ledger.contract_ledger import ContractLedger, deploy_task_contracts
from fedledger.ledger.reputation import uses_reputation
from fedledger.node.consensus import Timeouts
from fedledger.report import Report, read_baseline
from fedledger.run.local import (
    joining,
    run_in_memory,
    run_ledger_in_process,
    start_when_joined,
)
from fedledger.run.plan import ProgressFn, plan
from fedledger.run.processes import run_processes
from fedledger.run.results import add_attack, check_run, ledger_final, merge_report
from fedledger.rundir import JOURNAL_FILE, LedgerDeployment, clear_run

log = logging.getLogger("fedledger.run")

T = TypeVar("T")


GAS_FUNDS = 10**18
"""Wei each node's account receives for gas, on top of its stake, in ``fedledger run``."""


def deploy_for_run(
    chain: Chain, task: TaskConfig, *, owner: LocalAccount, members: Sequence[str], backend: str
) -> LedgerDeployment:
    """Deploy the task's contracts (with its model NFT, and its Governor and Timelock when it
    has ``[governance]``) and fund every member's account with stake and gas."""
    first = chain.block_number()
    contracts = deploy_task_contracts(chain, task, owner=owner)
    for address in members:
        chain.transfer(address, task.ledger.min_stake + GAS_FUNDS, sender=owner)
    return LedgerDeployment(backend=backend, chain_id=chain.chain_id, task=contracts.task,
                            token=contracts.token, owner=owner.address, first_block=first,
                            nft=contracts.nft, governor=contracts.governor,
                            timelock=contracts.timelock)  # fmt: skip


def mint_models(chain: Chain, deployment: LedgerDeployment, owner: LocalAccount,
                task: TaskConfig) -> list[dict[str, Any]]:  # fmt: skip
    """Mint every finalized model of the run as an NFT (in order, against the task's lineage;
    epsilon as :mod:`fedledger.incentives.models` computes it); the tokens minted."""
    if deployment.nft is None:
        return []
    from fedledger.incentives.models import EPSILON_UNIT, models_to_mint
    from fedledger.ledger.governance import ModelNFT

    reader = ContractLedger(chain, deployment.task, None)
    nft = ModelNFT(chain, deployment.nft, owner)
    last, _ = nft.last_minted()
    todo = models_to_mint(reader.events(deployment.first_block), task.privacy_plan(),
                          after=last, rounds=task.rounds)  # fmt: skip
    if todo:
        nft.mint([t.round for t in todo], [t.model for t in todo], [t.epsilon for t in todo])
    return [{"round": m.round, "token_uri": m.token_uri, "parent": m.parent,
             "epsilon": m.epsilon / EPSILON_UNIT, "owner": m.owner}
            for m in nft.minted()]  # fmt: skip


def run_task(
    task: TaskConfig,
    *,
    out: Path,
    mode: str = "consensus",
    transport: str = "grpc",
    topology: TopologySpec | None = None,
    timeouts: Timeouts | None = None,
    mixing: str = "metropolis_hastings",
    progress: ProgressFn | None = None,
    timeout: float | None = None,
    chain: str | None = None,
    deployer_key: str | bytes | None = None,
    audit: bool = True,
    attack: str | None = None,
    attackers: float = 0.0,
    on_poll: Callable[[dict[int, subprocess.Popen[bytes]]], None] | None = None,
    consents: Mapping[int, ConsentPolicy] | None = None,
    on_chain: Callable[[Chain, LedgerDeployment], None] | None = None,
    baseline: Path | None = None,
    overwrite: bool = False,
) -> Report:
    """``fedledger run``: the whole task on this machine, then report.json in ``out``.

    ``timeout``: seconds the whole run may take, in every mode; past it the run stops with
    :class:`RunFailed`. The run also fails (after writing the report) if no round produced a
    model on any node.

    ``chain`` (default, as on the command line: ``"embedded"`` in consensus mode, ``"none"``
    in gossip mode): ``"none"`` (consensus or gossip mode without a ledger), ``"embedded"`` (an
    in-process EVM shared by every node, all in this process; its journal is saved as
    ``chain.jsonl``) or a JSON-RPC URL (one process per node, over gRPC; ``deployer_key``
    deploys and funds, by default anvil's first development account on a local development
    chain only; nodes get random keys unless the chain is one: fedledger.keys). With a ledger
    the run directory also gets ``ledger.json``, and the audit runs at the end unless
    ``audit`` is False. ``on_poll``: called with the node processes (by index) about five
    times a second in a run of one process per node on a JSON-RPC chain (tests kill and
    restart nodes with it). ``consents``: some nodes' data owners' consent policies, by index
    (ledger runs). ``on_chain``: with the embedded chain, called with it and the deployment
    about five times a second while the nodes run (tests act on the chain with it: governance
    votes). ``baseline``: the directory of ``fedledger baseline``'s run of the same task, the
    reference recorded in the report (``baseline``: its accuracy per round; report.png draws
    the run against it). ``overwrite``: replace a previous run in ``out`` (refused otherwise:
    :func:`fedledger.rundir.clear_run`).
    """
    reference = reference_for(task, baseline) if baseline is not None else None
    if transport not in ("grpc", "memory"):
        raise ConfigError(f"unknown transport {transport!r}; known: grpc, memory",
                          field="transport")  # fmt: skip
    if chain is None:
        chain = "embedded" if mode == "consensus" else "none"
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"must be > 0 seconds, got {timeout}", field="timeout")
    if chain != "none" and mode != "consensus":
        raise ConfigError("a ledger runs consensus rounds: use --mode consensus", field="mode")
    if chain != "none":
        task.check_ledger()
    task.check_nodes()
    if chain == "none" and uses_reputation(task.aggregation.params):
        raise ConfigError("reputation (min_reputation, reputation_rewards) is kept on chain: "
                          "use --chain", field="aggregation")  # fmt: skip
    if chain == "none" and task.secure_aggregation:
        raise ConfigError("secure aggregation fixes who masks with whom on chain: it runs in "
                          "consensus mode with a ledger (--mode consensus; --chain embedded by "
                          "default)", field="privacy.secure_aggregation")  # fmt: skip
    privacy = task.privacy_plan()
    if chain == "none" and privacy is not None:
        privacy.check_without_ledger()  # before any node starts
    if chain not in ("none", "embedded") and transport != "grpc":
        raise ConfigError("nodes on an external chain run as processes over gRPC",
                          field="transport")  # fmt: skip
    topology = topology or TopologySpec()
    bad = attack_setup(task, attack=attack, attackers=attackers, chain=chain,
                       transport=transport)  # fmt: skip
    clear_run(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    task_path = out / "task.toml"  # the effective task, overrides included, for every node
    task_path.write_text(task.to_toml(), encoding="utf-8")
    if chain == "none":
        configs = plan(task, task_path=task_path, out=out, mode=mode, topology=topology,
                       transport=transport, timeouts=timeouts, mixing=mixing, attack=attack,
                       attackers=bad)  # fmt: skip
        if transport == "memory":
            summaries = within(timeout, run_in_memory(configs, progress=progress))
        else:
            summaries = run_processes(configs, progress=progress, timeout=timeout)
        report = merge_report(configs, summaries, mode=mode, transport=transport,
                              topology=topology)  # fmt: skip
    else:
        report, summaries = _run_with_ledger(
            task, out=out, task_path=task_path, transport=transport, topology=topology,
            timeouts=timeouts, progress=progress, timeout=timeout, chain=chain,
            deployer_key=deployer_key, audit=audit, attack=attack, attackers=bad,
            on_poll=on_poll, consents=consents, on_chain=on_chain,
        )  # fmt: skip
    if attack is not None:
        add_attack(report, attack=attack, attackers=bad)
    if reference is not None:
        report.extra["baseline"] = reference
    report.write(out)
    check_run(summaries)
    return report


def reference_for(task: TaskConfig, directory: Path) -> dict[str, Any]:
    """``fedledger baseline``'s report in ``directory`` as the reference of a run of
    ``task`` (:func:`fedledger.report.read_baseline`), after checking it trained that task
    on as many nodes."""
    reference = read_baseline(directory)
    if reference["task"] != task.name or reference["nodes"] != task.nodes:
        raise ConfigError(f"{directory} holds the baseline of task {reference['task']!r} on "
                          f"{reference['nodes']} nodes, not of {task.name!r} on {task.nodes}",
                          field="baseline")  # fmt: skip
    return reference


def within(timeout: float | None, job: Coroutine[Any, Any, T]) -> T:
    """Run ``job`` to the end in a new event loop, or fail after ``timeout`` seconds."""
    try:
        return asyncio.run(asyncio.wait_for(job, timeout))
    except TimeoutError as exc:
        raise RunFailed(f"the run did not finish within {timeout} s") from exc


def attack_setup(
    task: TaskConfig, *, attack: str | None, attackers: float, chain: str, transport: str
) -> tuple[int, ...]:
    """Which nodes attack (from the seed), after checking the attack can run this way."""
    if attack is None:
        if attackers:
            raise ConfigError("--attackers needs --attack", field="attackers")
        return ()
    Attack(name=attack, n=task.nodes, f=max(1, round(attackers * task.nodes)))  # validates
    in_process = transport == "memory" or chain == "embedded"
    if attack in OMNISCIENT and not in_process:
        raise ConfigError(f"{attack} needs the attackers in one process to collude: use "
                          "--transport memory or --chain embedded", field="attack")  # fmt: skip
    if attack in PROTOCOL_ATTACKS and chain == "none":
        raise ConfigError(f"{attack} attacks the ledger protocol: use --chain embedded or a "
                          "chain URL", field="attack")  # fmt: skip
    chosen = choose_attackers(task.nodes, attackers, task.seed)
    if not chosen:
        raise ConfigError(f"{attackers} of {task.nodes} nodes is no attacker", field="attackers")
    return chosen


def _run_with_ledger(
    task: TaskConfig,
    *,
    out: Path,
    task_path: Path,
    transport: str,
    topology: TopologySpec,
    timeouts: Timeouts | None,
    progress: ProgressFn | None,
    timeout: float | None,
    chain: str,
    deployer_key: str | bytes | None,
    audit: bool,
    attack: str | None = None,
    attackers: Sequence[int] = (),
    on_poll: Callable[[dict[int, subprocess.Popen[bytes]]], None] | None = None,
    consents: Mapping[int, ConsentPolicy] | None = None,
    on_chain: Callable[[Chain, LedgerDeployment], None] | None = None,
) -> tuple[Report, list[dict[str, Any]]]:
    backend: Chain
    if chain == "embedded":
        # Chain time runs one second per block, and at the wall clock's rate while idle: the
        # windows are upper bounds on waiting, whatever the number of transactions.
        embedded = EmbeddedChain(accounts=1, clock=time.time, pace="elapsed")
        backend = embedded
        identities = [Identity.from_seed(task.seed, i) for i in range(task.nodes)]
    else:
        from fedledger import keys

        # Seeded keys and anvil's public account only on a local development chain: elsewhere
        # anyone holding task.toml could sign for the nodes (fedledger.keys, docs/keys.md).
        chain_id = RpcChain(chain).chain_id
        dev = keys.is_dev_chain(chain_id, chain)
        if deployer_key is None and not dev:
            raise ConfigError(f"the chain at {chain} (chain id {chain_id}) is not a local "
                              f"development chain: give the deployer's key with "
                              f"{keys.DEPLOYER_KEY_ENV} or --deployer-keyfile",
                              field="deployer")  # fmt: skip
        rpc = RpcChain(chain, private_key=deployer_key if deployer_key is not None
                       else keys.dev_deployer_key())  # fmt: skip
        backend = rpc
        identities = keys.node_identities(task.seed, task.nodes, seeded=dev)
    members = [identity.address for identity in identities]
    owner = backend.accounts()[0]
    deployment = deploy_for_run(backend, task, owner=owner, members=members,
                                backend="embedded" if chain == "embedded" else chain)  # fmt: skip
    deployment.write(out)
    if chain == "embedded":
        configs = plan(task, task_path=task_path, out=out, mode="consensus", topology=topology,
                       transport=transport, timeouts=timeouts, attack=attack,
                       attackers=attackers, consents=consents)  # fmt: skip
        runner = run_ledger_in_process(
            configs, chain=backend, deployment=deployment, owner=owner, transport=transport,
            progress=progress, on_chain=on_chain,
        )  # fmt: skip
        try:
            summaries = within(timeout, runner)
        finally:
            embedded.save(out / JOURNAL_FILE)
    else:
        configs = plan(task, task_path=task_path, out=out, mode="consensus", topology=topology,
                       transport="grpc", timeouts=timeouts, chain_url=chain,
                       task_address=deployment.task, attack=attack,
                       attackers=attackers, identities=identities,
                       consents=consents)  # fmt: skip
        owner_ledger = ContractLedger(backend, deployment.task, owner)
        started = [False]

        def start(procs: dict[int, subprocess.Popen[bytes]]) -> None:
            if not started[0]:
                started[0] = start_when_joined(owner_ledger, joining(configs, deployment.task),
                                               secure=task.secure_aggregation)  # fmt: skip
            if on_poll is not None:
                on_poll(procs)

        summaries = run_processes(configs, progress=progress, timeout=timeout, on_poll=start)
    models = mint_models(backend, deployment, owner, task)
    if chain == "embedded":
        embedded.save(out / JOURNAL_FILE)  # with the minted models
    reader = ContractLedger(backend, deployment.task, None)
    figures = ledger_final(reader, deployment, members, task.rounds)
    figures["models"] = models
    if audit:
        from fedledger.audit import audit_run

        verdict = audit_run(out, chain=backend)
        figures["audit_ok"] = verdict.ok
        (out / "audit.json").write_text(json.dumps(verdict.to_dict(), indent=2) + "\n")
    report = merge_report(configs, summaries, mode="consensus", transport=transport,
                          topology=topology, chain=deployment.backend, ledger=figures)  # fmt: skip
    return report, summaries
