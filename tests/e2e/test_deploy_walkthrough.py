"""docs/deploy.md, followed as written: three hospitals in three folders, each with only its own
CSV and key, separate `fedledger node` processes against a real anvil, deploy, start, train,
export, and an audit from a fourth folder that has only the RPC URL, the task address and
network access to the sites.

Every command this test runs is checked to appear in docs/deploy.md (with the placeholders the
doc uses): the doc cannot drift from what works. The one change: ``fedledger chain up`` runs on
port 0 with a data directory in the test's folder, never a fixed port."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedledger.node.state import read_rounds
from tests.support import ProcessOutput, interruptible

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
SITES = ("site_a", "site_b", "site_c")
PASSWORD = "a long passphrase"
FEDLEDGER = [sys.executable, "-m", "fedledger"]


def documented(command: str) -> str:
    """``command`` as docs/deploy.md writes it; fails if the doc does not have it."""
    assert command in DOC, f"docs/deploy.md does not show: {command}"
    return command


def run(command: str, cwd: Path, **subs: str) -> subprocess.CompletedProcess[str]:
    """Run a documented command (``$NAME`` placeholders substituted) in ``cwd``."""
    documented(command)
    for name, value in subs.items():
        command = command.replace(f"${name}", value)
    args = command.split()
    if args[0] == "fedledger":
        args = FEDLEDGER + args[1:]
    elif args[0] == "python":
        args = [sys.executable, *args[1:]]
    env = {**os.environ, "FEDLEDGER_KEY_PASSWORD": PASSWORD}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}: {proc.stderr}"
    return proc.stdout


NODE_TOML = """\
task = "task.toml"
index = {index}
key_file = "node.key"
state_dir = "state"
data = "data.csv"
listen = "127.0.0.1:0"
chain = "{rpc}"
task_address = "{task}"
"""


def node_toml(index: int, rpc: str, task: str) -> str:
    for line in NODE_TOML.splitlines():
        key = line.split("=")[0].strip()
        assert re.search(rf"^{key} = ", DOC, re.M), f"docs/deploy.md's node.toml lacks {key}"
    return NODE_TOML.format(index=index, rpc=rpc, task=task)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[str]:
    documented("fedledger chain up --port 8545")
    proc = subprocess.Popen(
        [*FEDLEDGER, "chain", "up", "--port", "0", "--data-dir", str(tmp_path / "chain")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible,
    )  # fmt: skip
    output = ProcessOutput(proc)
    try:
        url = output.wait_for(r"listening on (http://\S+)", timeout=120, what="the chain's URL")
        yield url.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        output.finish(timeout=60)


@pytest.mark.slow
def test_three_hospitals_follow_the_deploy_walkthrough(tmp_path: Path, chain: str) -> None:
    rpc = chain
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")  # the repository's examples, read only
    # 1. the sites' own files
    ok(run("python examples/hospitals/make_sites.py --out hospitals", work))
    sites = [work / "hospitals" / s for s in SITES]
    for site in sites:  # each site has its own records, the task, its node.toml; no key yet
        assert sorted(p.name for p in site.iterdir()) == ["data.csv", "node.toml", "task.toml"]

    # 3. keys: each site its own; the coordinator funds them on the local chain
    addresses = []
    for site in sites:
        out = ok(run("fedledger keys new --out node.key", site))
        addresses.append(out.strip().splitlines()[-1])
        assert re.fullmatch(r"0x[0-9a-fA-F]{40}", addresses[-1])
    ok(run("fedledger keys fund $SITE_A $SITE_B $SITE_C --rpc $RPC --eth 1", work,
           SITE_A=addresses[0], SITE_B=addresses[1], SITE_C=addresses[2], RPC=rpc))  # fmt: skip

    # 4. deploy
    coordinator = work / "coordinator"
    coordinator.mkdir()
    shutil.copy(ROOT / "examples" / "hospitals" / "task.toml", coordinator)
    deployed = ok(run("fedledger task deploy --config task.toml --rpc $RPC", coordinator, RPC=rpc))
    found = re.search(r"task address\s+(0x[0-9a-fA-F]{40})", deployed)
    assert found is not None, deployed
    task = found.group(1)

    # 5-6. each site's node.toml, then its node
    for i, site in enumerate(sites):
        (site / "node.toml").write_text(node_toml(i, rpc, task), encoding="utf-8")
    documented("fedledger node --config node.toml --serve")
    env = {**os.environ, "FEDLEDGER_KEY_PASSWORD": PASSWORD}
    nodes = [
        subprocess.Popen([*FEDLEDGER, "node", "--config", "node.toml", "--serve"], cwd=site,
                         env=env, preexec_fn=interruptible,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for site in sites
    ]  # fmt: skip
    outputs = [ProcessOutput(p, p.stderr) for p in nodes]

    # a site whose task.toml differs is refused, with the difference named
    rogue = work / "rogue"
    rogue.mkdir()
    shutil.copy(sites[0] / "data.csv", rogue)
    (rogue / "task.toml").write_text(
        (sites[0] / "task.toml").read_text().replace("lr = 0.05", "lr = 0.1"), encoding="utf-8"
    )
    (rogue / "node.toml").write_text(node_toml(0, rpc, task), encoding="utf-8")
    ok(run("fedledger keys new --out node.key", rogue))
    refused = subprocess.run([*FEDLEDGER, "node", "--config", "node.toml"], cwd=rogue, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert refused.returncode != 0
    assert "train.lr: 0.1 here, 0.05 in the task" in refused.stderr, refused.stderr
    # and an address that holds another contract (here the reward token) gets no stake
    token = re.search(r"token address\s+(0x[0-9a-fA-F]{40})", deployed)
    assert token is not None, deployed
    (rogue / "task.toml").write_bytes((sites[0] / "task.toml").read_bytes())
    (rogue / "node.toml").write_text(node_toml(0, rpc, token.group(1)), encoding="utf-8")
    fake = subprocess.run([*FEDLEDGER, "node", "--config", "node.toml"], cwd=rogue, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert fake.returncode == 2
    assert "is not a Task" in fake.stderr, fake.stderr

    # 7. start, once the three have joined
    for watch in outputs:
        watch.wait_for(r"^node 0x", timeout=300, what="the node's address")
    status: dict[str, Any] = {"members": []}
    for _ in range(600):  # the joins land on chain: read the task's own status
        status = json.loads(ok(run_status(coordinator, rpc, task)))
        if len(status["members"]) == 3:
            break
    assert len(status["members"]) == 3
    started = ok(run("fedledger task start --rpc $RPC --task $TASK --config task.toml",
                     coordinator, RPC=rpc, TASK=task))  # fmt: skip
    assert "round 1 started" in started
    for watch in outputs:  # the task is over, the nodes keep serving for the audit
        watch.wait_for(r"^task complete: serving", timeout=900, what="the end of the task")
        assert "round 12/12: accuracy" in watch.text
        assert "finalized on chain (3 attested)" in watch.text
    last = [read_rounds(site / "state")[-1] for site in sites]
    assert len({r["model"] for r in last}) == 1
    assert min(r["acc"] for r in last) > 0.85, last
    ok(run("fedledger status --rpc $RPC --task $TASK", coordinator, RPC=rpc, TASK=task))

    # 8. the model, out: plain PyTorch reproduces the accuracy the node reported
    for site, record in zip(sites, last, strict=True):
        ok(run("fedledger model export --node node.toml --out model", site))
        acc = plain_torch_accuracy(site, index=sites.index(site))
        assert abs(acc - record["acc"]) < 1e-9, (acc, record["acc"])

    # 9. the audit, from a folder with nothing but a key
    auditor = work / "auditor"
    auditor.mkdir()
    reader = ok(run("fedledger keys new --out auditor.key", auditor)).strip().splitlines()[-1]
    ok(run("fedledger task grant-reader --rpc $RPC --task $TASK $AUDITOR", coordinator,
           RPC=rpc, TASK=task, AUDITOR=reader))  # fmt: skip
    audit = run("fedledger audit --rpc $RPC --task $TASK --key auditor.key", auditor,
                RPC=rpc, TASK=task)  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert sorted(p.name for p in auditor.iterdir()) == ["auditor.key"]
    for p, watch in zip(nodes, outputs, strict=True):  # Ctrl-C: a clean stop, exit 0
        p.send_signal(signal.SIGINT)
        text = watch.finish(timeout=120)
        assert p.returncode == 0, text


def run_status(cwd: Path, rpc: str, task: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDLEDGER, "status", "--rpc", rpc, "--task", task, "--json"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)  # fmt: skip


def plain_torch_accuracy(site: Path, *, index: int) -> float:
    """The exported model's accuracy on the site's validation rows, computed with torch and
    numpy only (the rows the node evaluated on: its seeded split of its own file)."""
    from fedledger.api import site_data
    from fedledger.config import load_config
    from fedledger.data.site import load_site

    cfg = load_config(site / "task.toml")
    own = site_data(load_site(site / "data.csv", cfg.data, name=f"site-{index}"), seed=cfg.seed,
                    val_fraction=cfg.data.val_fraction, num_classes=2)  # fmt: skip
    raw = site / "val.npz"
    import numpy as np

    np.savez(raw, x=own.val.x, y=own.val.y)
    script = (
        "import sys, numpy as np, torch\n"
        "model = torch.export.load(sys.argv[1]).module()\n"
        "d = np.load(sys.argv[2])\n"
        "with torch.no_grad():\n"
        "    pred = model(torch.tensor(d['x'], dtype=torch.float32)).argmax(1).numpy()\n"
        "print(float((pred == d['y']).mean()))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", script, str(site / "model" / "model.pt2"),
                          str(raw)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip())
