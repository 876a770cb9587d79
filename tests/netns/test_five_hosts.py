"""Five real hosts and a chain host (network namespaces, every link with netem's delay, jitter
and loss): a task deployed the way docs/deploy.md's multi-host section says (a keystore per
site made on its own host, a coordinator with its own funded key on a JSON-RPC chain reached
over the network, nodes listening on 0.0.0.0:7001 and advertising their address), every round
finalized on chain, every node on the chain's models, and the audit passes from a sixth
place that has only the RPC URL, the task's address and a reader's key."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from fedledger.commit.cid import cid_from_digest
from fedledger.config import load_config
from fedledger.keys import dev_deployer_key
from fedledger.ledger.chain import RpcChain
from fedledger.ledger.chain.anvil import find_anvil, install_anvil
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.records import Finalized, Slashed
from fedledger.node.state import read_rounds
from tests.netns.harness import NODE_PORT, NamespacedAnvil, Network, child_env, fedledger_node
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
PASSWORD = "a long passphrase"
FEDLEDGER = [sys.executable, "-m", "fedledger"]
ROUNDS = 3

NODE_TOML = """\
task = "task.toml"
index = {index}
key_file = "node.key"
state_dir = "state"
listen = "0.0.0.0:{port}"
advertise = "{ip}:{port}"
chain = "{rpc}"
task_address = "{task}"
"""


def documented(command: str) -> list[str]:
    assert command in DOC, f"docs/deploy.md does not show: {command}"
    return command.split()


def fedledger(net: Network | None, host_index: int | None, command: str, cwd: Path,
              **subs: str) -> str:  # fmt: skip
    """A command docs/deploy.md shows, run on a host (``net`` and its index) or here (the
    coordinator's and the auditor's machine); its stdout, failing on a non-zero exit."""
    args = documented(command)
    args = [w for a in args for w in next((v for k, v in subs.items() if a == f"${k}"), a).split()]
    argv = [*FEDLEDGER, *args[1:]]
    env = child_env({"FEDLEDGER_KEY_PASSWORD": PASSWORD,
                     "FEDLEDGER_DEPLOYER_KEY": "0x" + dev_deployer_key().hex()})  # fmt: skip
    if net is not None and host_index is not None:
        argv = ["ip", "netns", "exec", net.hosts[host_index].namespace, *argv]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_five_hosts_on_lossy_links_finalize_every_round_and_pass_the_audit(
    tmp_path: Path, make_network: object
) -> None:
    assert callable(make_network)
    net: Network = make_network(5)
    net.impair_all(delay=15, jitter=5, loss=0.01)  # every link, the chain's included
    chain = NamespacedAnvil(net, state=tmp_path / "chain" / "state.json",
                            anvil=find_anvil(ROOT) or install_anvil(ROOT))  # fmt: skip
    chain.start()
    rpc = chain.url

    base = load_config(ROOT / "examples" / "digits.toml")
    task_cfg = replace(base, nodes=5, rounds=ROUNDS, model=replace(base.model, hidden=(32,)),
                       ledger=replace(base.ledger, window=60, grace=3))  # fmt: skip
    coordinator = tmp_path / "coordinator"
    coordinator.mkdir()
    (coordinator / "task.toml").write_text(task_cfg.to_toml(), encoding="utf-8")
    sites = [tmp_path / f"site_{i}" for i in range(5)]
    for site in sites:
        site.mkdir()
        (site / "task.toml").write_bytes((coordinator / "task.toml").read_bytes())
    with ThreadPoolExecutor(max_workers=len(sites)) as pool:  # each site on its own host
        made = pool.map(lambda i: fedledger(net, i, "fedledger keys new --out node.key",
                                            sites[i]), range(len(sites)))  # fmt: skip
        addresses = [out.strip().splitlines()[-1] for out in made]
    for site, address in zip(sites, addresses, strict=True):
        assert re.fullmatch(r"0x[0-9a-fA-F]{40}", address)
        assert (site / "node.key").stat().st_mode & 0o077 == 0
    fedledger(None, None, "fedledger keys fund $SITE_A $SITE_B $SITE_C --rpc $RPC --eth 1",
              coordinator, SITE_A=addresses[0], SITE_B=addresses[1],
              SITE_C=" ".join(addresses[2:]), RPC=rpc)  # fmt: skip
    deployed = fedledger(None, None, "fedledger task deploy --config task.toml --rpc $RPC",
                         coordinator, RPC=rpc)  # fmt: skip
    found = re.search(r"task address\s+(0x[0-9a-fA-F]{40})", deployed)
    assert found is not None, deployed
    task = found.group(1)

    for key in ("listen", "advertise"):
        assert re.search(rf"^{key} = \"0\.0\.0\.0:7001\"|^{key} = \"\S+:7001\"", DOC, re.M), key
    documented("fedledger node --config node.toml --serve")
    nodes = []
    for i, site in enumerate(sites):
        toml = NODE_TOML.format(index=i, port=NODE_PORT, ip=net.hosts[i].ip, rpc=rpc, task=task)
        (site / "node.toml").write_text(toml, encoding="utf-8")
        nodes.append(fedledger_node(net, net.hosts[i], site, serve=True,
                                    env={"FEDLEDGER_KEY_PASSWORD": PASSWORD}))  # fmt: skip
    reader = ContractLedger(RpcChain(rpc), task, None)
    wait_until(lambda: reader.member_count() == 5 or any(p.poll() is not None for p in nodes),
               timeout=600, what="five members joined", interval=0.5)  # fmt: skip
    assert [p.poll() for p in nodes] == [None] * 5, logs(sites)
    endpoints = {m.endpoint for m in reader.members()}
    assert endpoints == {h.endpoint() for h in net.hosts}  # the advertised addresses
    started = fedledger(None, None,
                        "fedledger task start --rpc $RPC --task $TASK --config task.toml",
                        coordinator, RPC=rpc, TASK=task)  # fmt: skip
    assert "round 1 started" in started

    def over() -> bool:
        done = all("task complete: serving" in log(s) for s in sites)
        return done or any(p.poll() is not None for p in nodes)

    wait_until(over, timeout=900, what="the end of the task on every host", interval=0.5)
    assert [p.poll() for p in nodes] == [None] * 5, logs(sites)

    events = reader.events(-1)
    finalized = {e.round: cid_from_digest(e.model_digest) for e in events
                 if isinstance(e, Finalized)}  # fmt: skip
    assert sorted(finalized) == list(range(1, ROUNDS + 1))
    assert [e for e in events if isinstance(e, Slashed)] == []
    for site in sites:  # every node on every round's finalized model
        records = {r["round"]: r["model"] for r in read_rounds(site / "state")}
        assert records == finalized, (site, records, finalized)
    assert min(r["acc"] for s in sites for r in read_rounds(s / "state")[-1:]) > 0.5
    status = json.loads(subprocess.run(
        [*FEDLEDGER, "status", "--rpc", rpc, "--task", task, "--json"], capture_output=True,
        text=True, timeout=120, env=child_env(), check=True).stdout)  # fmt: skip
    assert status["token_supply"] <= status["total_earned"]

    auditor = tmp_path / "auditor"
    auditor.mkdir()
    reader_address = fedledger(None, None, "fedledger keys new --out auditor.key",
                               auditor).strip().splitlines()[-1]  # fmt: skip
    fedledger(None, None, "fedledger task grant-reader --rpc $RPC --task $TASK $AUDITOR",
              coordinator, RPC=rpc, TASK=task, AUDITOR=reader_address)  # fmt: skip
    audit = fedledger(None, None, "fedledger audit --rpc $RPC --task $TASK --key auditor.key",
                      auditor, RPC=rpc, TASK=task)  # fmt: skip
    assert "audit: OK, every round verifies" in audit, audit
    for proc in nodes:  # Ctrl-C: a clean stop
        os.kill(proc.pid, signal.SIGINT)
    for proc, site in zip(nodes, sites, strict=True):
        assert proc.wait(timeout=120) == 0, log(site)


def log(site: Path) -> str:
    path = site / "stderr.log"
    return path.read_text(errors="replace") if path.exists() else ""


def logs(sites: list[Path]) -> str:
    return "\n".join(f"--- {s.name}\n{log(s)[-3000:]}" for s in sites)
