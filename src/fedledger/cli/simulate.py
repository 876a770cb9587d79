"""Whole tasks on this machine: ``fedledger baseline`` and ``fedledger run``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedledger.attacks.behaviour import ATTACKS
from fedledger.cli.common import (
    console,
    out_dir,
    password_option,
    progress_bar,
    rpc_url,
    waiting_progress_bar,
)
from fedledger.errors import ConfigError

if TYPE_CHECKING:
    from fedledger.config import TaskConfig


def cmd_baseline(args: argparse.Namespace) -> int:
    from fedledger.baseline import run_baseline
    from fedledger.config import load_config
    from fedledger.task import prepare_task

    cfg = load_config(args.config)
    if args.rounds is not None:
        cfg = replace(cfg, rounds=args.rounds)
    out_dir(args.out)
    task = prepare_task(cfg)
    with progress_bar() as bar:
        bars: dict[str, Any] = {}

        def progress(phase: str, step: int, total: int, acc: float) -> None:
            if phase not in bars:
                bars[phase] = bar.add_task(phase, total=total, acc=0.0)
            bar.update(bars[phase], completed=step, acc=acc)

        report = run_baseline(task, progress=progress)
    path = report.write(args.out)
    png = _write_png(report.to_dict(), args.out)

    table = Table(
        title=f"{escape(cfg.name)}: {cfg.nodes} nodes, {cfg.rounds} rounds, {cfg.data.partition}"
    )
    for col in ("mode", "test acc (mean / min / max)", "wall s", "s / round"):
        table.add_column(col, justify="right" if col != "mode" else "left")
    central = report.extra["central"]
    table.add_row(
        f"central ({central['epochs']} epochs)",
        f"{central['acc']:.4f}",
        f"{central['wall_s']:.2f}",
        f"{central['wall_s'] / cfg.rounds:.3f}",
    )
    f = report.final
    table.add_row(
        "fedavg (server)",
        f"{f['acc_mean']:.4f} / {f['acc_min']:.4f} / {f['acc_max']:.4f}",
        f"{f['wall_s']:.2f}",
        f"{f['wall_s_per_round']:.3f}",
    )
    Console().print(table)
    console.print(f"report: {escape(str(path))}; plots: {escape(str(png))}")
    return 0


def _write_png(report: dict[str, Any], out: Path) -> Path:
    """report.png beside report.json (matplotlib is imported only now)."""
    from fedledger.plots import write_png

    return write_png(report, out)


def run_header(
    cfg: TaskConfig,
    *,
    mode: str,
    topology: str,
    transport: str,
    chain: str,
    mixing: str,
    attack: str | None,
    attackers: Sequence[int],
) -> list[str]:
    """What ``fedledger run`` says before it starts (rich markup): the task, the rule the mode
    really runs (gossip mode's mixing rule, consensus mode's aggregation rule), the attack
    and its attackers, and the chain."""
    if chain == "embedded":
        where, ledger = f"one process over {transport}", "embedded EVM, in this process"
    elif chain == "none":
        where = "one process" if transport == "memory" else "one process per node, gRPC"
        ledger = "none (no ledger)"
    else:
        where, ledger = "one process per node, gRPC", escape(chain)
    if mode == "gossip":
        g = cfg.gossip
        delta = f" (delta {g.delta:g})" if g.delta is not None else ""
        rule = f"mixing rule {g.rule}{delta} with {mixing} weights"
    else:
        agg = cfg.aggregation
        extras = [f"f = {agg.f}"] if agg.f else []
        extras += [f"{k} = {v}" for k, v in sorted(agg.params.items())]
        rule = f"rule {agg.rule}" + (f" ({', '.join(extras)})" if extras else "")
    if attack is None:
        attacked = "attack: none"
    else:
        who = ", ".join(str(i) for i in attackers)
        attacked = (f"attack: {attack} by node{'s' if len(attackers) != 1 else ''} {who} "
                    f"({len(attackers)} of {cfg.nodes})")  # fmt: skip
    return [
        f"[bold]{escape(cfg.name)}[/bold]: {cfg.nodes} nodes, {cfg.rounds} rounds, {mode} "
        f"mode, {topology} topology, {where}",
        f"  {escape(rule)}; {escape(attacked)}; chain: {ledger}",
    ]


def cmd_run(args: argparse.Namespace) -> int:
    ledger = args.chain or ("embedded" if args.mode == "consensus" else "none")
    if args.transport == "grpc" and ledger != "embedded":
        # One process per node to come: their fork server imports torch and fedledger while
        # this process imports the rest (fedledger.run.spawn).
        from fedledger.run.spawn import start_server

        start_server(ledger=ledger != "none")
    from fedledger.config import load_config
    from fedledger.config.overrides import with_overrides
    from fedledger.gossip.topology import TopologySpec
    from fedledger.run.progress import RunProgress
    from fedledger.run.task import attack_setup, reference_for, run_task

    if args.deployer_key is not None:
        raise ConfigError("a key on the command line shows in ps and shell histories: give the "
                          "deployer's key with FEDLEDGER_DEPLOYER_KEY or --deployer-keyfile",
                          field="deployer-key")  # fmt: skip
    base = load_config(args.config)
    out_dir(args.out)
    if not args.overwrite:
        from fedledger.rundir import clear_run

        clear_run(args.out, overwrite=False)  # fails now, before any output
    n = args.nodes if args.nodes is not None else base.nodes
    cfg = with_overrides(base, rounds=args.rounds, nodes=args.nodes, rule=args.rule,
                         f=round(args.attackers * n) if args.attack else 0)  # fmt: skip
    topology = TopologySpec(kind=args.topology, degree=args.degree, p=args.p)
    chain = args.chain or ("embedded" if args.mode == "consensus" else "none")
    if chain != "none":
        cfg.check_ledger()  # fails now, before any output
    deployer_key = None
    if args.password_file is not None and args.deployer_keyfile is None:
        raise ConfigError("--password-file unlocks the --deployer-keyfile keystore: give both",
                          field="password-file")  # fmt: skip
    if chain in ("embedded", "none"):
        if args.deployer_keyfile is not None:
            raise ConfigError("--deployer-keyfile deploys on a JSON-RPC chain: give --chain URL",
                              field="deployer-keyfile")  # fmt: skip
    else:
        from fedledger.keys import deployer_identity
        from fedledger.ledger.chain import RpcChain

        RpcChain(rpc_url(chain, field="chain"))  # fails now, before any output, if unreachable

        deployer = deployer_identity(
            keyfile=args.deployer_keyfile, password_file=args.password_file
        )
        deployer_key = deployer.private_key if deployer is not None else None
    consents = _consents(args.consent or [], cfg.nodes)
    if consents and chain == "none":
        raise ConfigError("consent policies are registered on chain: a ledger run only",
                          field="consent")  # fmt: skip
    bad = attack_setup(cfg, attack=args.attack, attackers=args.attackers, chain=chain,
                       transport=args.transport)  # fmt: skip
    if args.baseline is not None:
        reference_for(cfg, args.baseline)  # fails now, before any output
    for line in run_header(cfg, mode=args.mode, topology=args.topology,
                           transport=args.transport, chain=chain, mixing=args.mixing,
                           attack=args.attack, attackers=bad):  # fmt: skip
        console.print(line, soft_wrap=True)
    with waiting_progress_bar() as bar:
        task_id = bar.add_task("rounds", total=cfg.rounds, acc=0.0)

        def progress(p: RunProgress) -> None:
            bar.waiting = p.waiting or ""
            bar.update(task_id, completed=p.done, acc=p.acc)

        report = run_task(
            cfg, out=args.out, mode=args.mode, transport=args.transport, topology=topology,
            mixing=args.mixing, progress=progress, timeout=args.timeout, chain=chain,
            deployer_key=deployer_key, audit=not args.no_audit, attack=args.attack,
            attackers=args.attackers, consents=consents, baseline=args.baseline,
            overwrite=args.overwrite,
        )  # fmt: skip
        bar.waiting = ""
        bar.update(task_id, completed=report.final.get("rounds_completed", 0))
    png = _write_png(report.to_dict(), args.out)
    f = report.final
    table = Table(
        title=f"{escape(cfg.name)}: {args.mode} mode, {cfg.nodes} nodes, {args.transport}"
    )
    attacked = args.attack is not None
    columns = ["round", "test acc (mean / min / max)", *(["honest acc"] if attacked else []),
               "wall s", "KB sent / node", "agree"]  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    shown = (
        report.rounds
        if len(report.rounds) <= 10
        else report.rounds[:: max(1, len(report.rounds) // 10)]
    )
    if report.rounds and shown[-1] is not report.rounds[-1]:
        shown = [*shown, report.rounds[-1]]
    for r in shown:
        honest = r.extra.get("honest_acc")
        table.add_row(
            str(r.round), f"{r.acc_mean:.4f} / {r.acc_min:.4f} / {r.acc_max:.4f}",
            *([f"{honest:.4f}" if honest is not None else "-"] if attacked else []),
            f"{r.wall_s:.2f}", f"{r.extra['bytes_per_node']['sent'] / 1024:.1f}",
            "yes" if r.extra["model_digests_agree"] else "no",
        )  # fmt: skip
    Console().print(table)
    honest_final = f.get("honest_acc_mean")
    Console().print(
        f"final accuracy {f['acc_mean']:.4f} (min {f['acc_min']:.4f}, max {f['acc_max']:.4f}"
        + (f"; honest nodes {honest_final:.4f}" if honest_final is not None else "")
        + f"); {f['wall_s_per_round']:.3f} s per round; model digests agree: "
        f"{f['model_digests_agree']}"
    )
    reference = report.extra.get("baseline")
    if reference is not None:
        Console().print(f"baseline (server FedAvg, {escape(reference['dir'])}): final accuracy "
                        f"{reference['final_acc']:.4f}")  # fmt: skip
    privacy = f.get("privacy")
    if privacy is not None:
        spent = [v for v in privacy["epsilon"].values() if v is not None]
        stops = privacy["budget_spent_at"]
        console.print(
            f"privacy: clip {privacy['clip']:g}, noise multiplier "
            f"{privacy['noise_multiplier']:.3f}, delta {privacy['delta']:g}; epsilon per node "
            + ", ".join(f"{i}: {v:.2f}" if v is not None else f"{i}: -"
                        for i, v in privacy["epsilon"].items())
            + f" (max {max(spent, default=0.0):.2f}, budget {privacy['budget']:g})"
            + (f"; budget spent, updates stopped: {stops}" if stops else "")
        )  # fmt: skip
    secure = f.get("secure_aggregation")
    if secure is not None:
        dropped = {r: n for r, n in secure["dropouts"].items() if n}
        console.print(
            f"secure aggregation: {secure['unmasked_rounds']} rounds unmasked"
            + (f", dropouts by round {dropped}" if dropped else ", no dropout")
            + (f"; abandoned rounds {secure['abandoned_rounds']}"
               if secure["abandoned_rounds"] else "")
        )  # fmt: skip
    if "rounds_finalized" in f:
        rewards = f["rewards"]
        gas = f.get("gas_per_node_per_round")
        txs = f.get("transactions_per_round")
        console.print(
            f"ledger: {f['rounds_finalized']} of {cfg.rounds} rounds finalized on chain; "
            + (f"{txs:.1f} transactions per round; " if txs is not None else "")
            + (f"{gas:,.0f} gas per member per round" if gas is not None else "no gas used")
        )
        console.print(
            "rewards per node: "
            + ", ".join(f"{i}: {v:,.1f}" for i, v in enumerate(rewards.values()))
            + f" (total {sum(rewards.values()):,.1f} tokens)"
        )
        for key, what in (("refused", "did not join"), ("withdrew", "left the task")):
            for address, why in (f.get(key) or {}).items():
                console.print(f"{address} {what}: {escape(str(why))}", soft_wrap=True)
        scores = f.get("scores") or {}
        if scores:
            console.print(
                "contribution scores per node (rounds' worth: its share of each paid round, "
                "summed): " + ", ".join(f"{i}: {v:.2f}" for i, v in enumerate(scores.values()))
            )
        models = f.get("models") or []
        if models:
            last = models[-1]
            eps = f", epsilon {last['epsilon']:.2f}" if last["epsilon"] else ""
            console.print(
                f"model NFTs: {len(models)} minted (token id = round, owner {last['owner']}); "
                f"the last: #{last['round']} {last['token_uri']} (parent #{last['parent']}{eps})"
            )
        if "audit_ok" in f:
            verdict = "[green]OK[/green]" if f["audit_ok"] else "[red]FAILED[/red]"
            console.print(f"audit: {verdict} (details: {escape(str(args.out / 'audit.json'))})")
    console.print(f"report: {escape(str(args.out / 'report.json'))}; plots: {escape(str(png))}")
    if f.get("audit_ok") is False:
        return 1
    return 0


def _consents(items: list[str], nodes: int) -> dict[int, Any]:
    """``--consent INDEX=FILE`` options: each node's policy, from the file's [consent]."""
    from fedledger.config.consent import parse_consent
    from fedledger.config.task import read_toml

    out: dict[int, Any] = {}
    for item in items:
        index, eq, path = item.partition("=")
        if not eq or not index.strip().isdigit() or not 0 <= int(index) < nodes:
            raise ConfigError(f"not INDEX=FILE with INDEX in 0..{nodes - 1}: {item!r}",
                              field="consent")  # fmt: skip
        doc = read_toml(path.strip(), what="consent policy")
        if set(doc) != {"consent"}:
            raise ConfigError(f"{path.strip()} must hold one [consent] table", field="consent")
        out[int(index)] = parse_consent(doc["consent"])
    return out


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "baseline",
        parents=[common],
        help="train a task centrally and with server-based FedAvg (the reference)",
        description="Train the task two ways over the same partition, centrally on all the "
        "data and with classic server-based FedAvg, and write DIR/report.json.",
    )
    p.add_argument("--config", required=True, type=Path, help="task configuration (TOML)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--rounds", type=int, default=None, help="override the task's rounds")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a whole task on this machine, serverless, and write report.json",
        description="Start the task's nodes (separate processes on 127.0.0.1 over gRPC, or one "
        "process over the in-memory transport), show progress, and write DIR/report.json.",
    )
    p.add_argument("--config", required=True, type=Path, help="task configuration (TOML)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--mode", default="consensus", choices=["consensus", "gossip"])
    p.add_argument("--transport", default="grpc", choices=["grpc", "memory"])
    p.add_argument(
        "--topology",
        default="full",
        choices=["full", "ring", "regular", "erdos_renyi", "small_world", "two_cliques"],
    )
    p.add_argument("--degree", type=int, default=3, help="regular / small_world degree")
    p.add_argument("--p", type=float, default=0.3, help="erdos_renyi / small_world probability")
    p.add_argument(
        "--mixing",
        default="metropolis_hastings",
        choices=["metropolis_hastings", "uniform"],
        help="gossip mode's mixing weights",
    )
    p.add_argument("--rounds", type=int, default=None, help="override the task's rounds")
    p.add_argument("--nodes", type=int, default=None, help="override the task's nodes")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument(
        "--chain",
        default=None,
        metavar="none|embedded|URL",
        help="the ledger: embedded (an in-process EVM, every node in this process; the default "
        "in consensus mode), a JSON-RPC URL (e.g. from `fedledger chain up`; one process per "
        "node), or none (no ledger; the default in gossip mode)",
    )
    p.add_argument(
        "--deployer-keyfile",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --chain URL: the key that deploys the task and funds the nodes, a hex key "
        "file or an encrypted keystore (mode 0600; or the hex key in $FEDLEDGER_DEPLOYER_KEY). "
        "Default on a local development chain (chain id 31337 or 1337 on 127.0.0.1): anvil's "
        "first development account",
    )
    p.add_argument("--deployer-key", default=None, help=argparse.SUPPRESS)  # refused, see cmd_run
    password_option(p, "the --deployer-keyfile keystore")
    p.add_argument("--no-audit", action="store_true", help="skip the audit after a ledger run")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous run in --out (refused otherwise)")  # fmt: skip
    p.add_argument(
        "--attack",
        default=None,
        choices=sorted(ATTACKS),
        help="robustness experiments: the attack the Byzantine nodes mount",
    )
    p.add_argument(
        "--attackers", type=float, default=0.0, help="with --attack: the fraction of nodes (0-1)"
    )
    p.add_argument(
        "--rule",
        default=None,
        help="override the task's aggregation rule (tolerating the attackers: f = their "
        "number); 'robust' is the default robust rule: Multi-Krum after nearest-neighbour "
        "mixing, tolerating as many attackers as it can",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="the output directory of `fedledger baseline` for the same task: its accuracy "
        "per round goes into report.json (baseline) and report.png draws the run against it",
    )
    p.add_argument(
        "--consent",
        action="append",
        metavar="INDEX=FILE",
        help="node INDEX's data owner's consent policy: a TOML file with a [consent] table "
        "(repeatable; docs/incentives.md)",
    )
    p.set_defaults(func=cmd_run)
