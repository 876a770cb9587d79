"""Crash safety of ledger v2, end to end: five `fedledger node` processes on a real anvil, one
of them killed (SIGKILL: no goodbye) and restarted from its state directory in each phase of a
round, one after the other. Nobody is slashed (a restarted node never signs a message that
conflicts with one it signed before its crash: the content is on disk before it signs), every
round finalizes, every node ends with the same model, and the audit passes."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from fedledger.config import load_config
from fedledger.config.node import NodeConfig, load_node_config
from fedledger.gossip.identity import Identity
from fedledger.ledger.chain import RpcChain
from fedledger.ledger.chain.anvil import find_anvil, install_anvil, start_anvil
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.records import Finalized, Slashed, Submitted
from fedledger.ledger.rules import PHASE_AGGREGATE, PHASE_OPEN
from fedledger.node.state import MESSAGES_FILE
from fedledger.run.processes import start_node_process
from fedledger.run.task import run_task
from fedledger.rundir import LEDGER_FILE

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


@dataclass
class Chaos:
    """Kill node ``k`` when phase ``k``'s condition holds, restart it once the others opened
    another round without it; then the next one. The phases are tried in any order: whichever
    pending phase holds first is played (a narrow one, such as "signed, not yet on chain",
    must not hold up the others on a loaded machine)."""

    out: Path
    url: str
    phases: list[tuple[str, Callable[[Chaos, int], bool]]]
    step: int = 0
    killed_at: int | None = None
    victim: int = 0
    done: list[str] = field(default_factory=list)
    reader: ContractLedger | None = None

    def ledger(self) -> ContractLedger:
        if self.reader is None:
            task = json.loads((self.out / LEDGER_FILE).read_text())["task"]
            self.reader = ContractLedger(RpcChain(self.url), task, None)
        return self.reader

    def finalized(self) -> int:
        return max((e.round for e in self.ledger().events(-1) if isinstance(e, Finalized)),
                   default=0)  # fmt: skip

    def __call__(self, procs: dict[int, subprocess.Popen[bytes]]) -> None:
        if self.step >= len(self.phases) or not (self.out / LEDGER_FILE).exists():
            return
        if self.killed_at is None:
            if self.ledger().current_round() < 1:
                return
            for victim, (name, when) in enumerate(self.phases):  # node k dies in phase k
                if name not in self.done and when(self, victim):
                    procs[victim].send_signal(signal.SIGKILL)
                    procs[victim].wait()
                    self.victim = victim
                    self.killed_at = self.ledger().current_round()
                    return
        elif self.ledger().current_round() > self.killed_at:  # the others went on without it
            cfg_dir = self.out / f"node-{self.victim}"
            procs[self.victim] = start_node_process(_config(cfg_dir))
            self.done.append(self.phases[self.victim][0])
            self.killed_at = None
            self.step += 1


def _config(node_dir: Path) -> NodeConfig:
    return load_node_config(node_dir / "node.toml")


def _signed_rounds(chaos: Chaos, victim: int) -> set[int]:
    path = chaos.out / f"node-{victim}" / "state" / MESSAGES_FILE
    if not path.exists():
        return set()
    return {int(k) for k in json.loads(path.read_text()).get("messages", {})}


def _signed_not_on_chain(chaos: Chaos, victim: int) -> bool:
    """It signed a message the chain does not hold yet (between signing and the batch)."""
    address = _address(chaos, victim)
    on_chain = {e.round for e in chaos.ledger().events(-1)
                if isinstance(e, Submitted) and e.member == address}  # fmt: skip
    return bool(_signed_rounds(chaos, victim) - on_chain)


def _address(chaos: Chaos, victim: int) -> str:
    return Identity.load(_config(chaos.out / f"node-{victim}").key_file).address


def _phase(wanted: int) -> Callable[[Chaos, int], bool]:
    def check(chaos: Chaos, victim: int) -> bool:
        ledger = chaos.ledger()
        return ledger.phase(ledger.current_round()) == wanted

    return check


def _after_finalization(chaos: Chaos, victim: int) -> bool:
    return chaos.finalized() >= 2


@pytest.mark.slow
def test_a_node_killed_in_every_phase_restarts_and_nobody_is_slashed(tmp_path: Path) -> None:
    base = load_config(DIGITS)
    # Enough rounds for four restarts (importing torch takes 5-20 s each); the others
    # wait for a missing member only `grace` seconds once a quorum's messages are in (4 of 5).
    task = replace(base, nodes=5, rounds=60,
                   ledger=replace(base.ledger, window=120, grace=2))  # fmt: skip
    with start_anvil(anvil=find_anvil(ROOT) or install_anvil(ROOT)) as node:
        chaos = Chaos(out=tmp_path, url=node.url, phases=[
            ("signed, not yet on chain", _signed_not_on_chain),
            ("round open", _phase(PHASE_OPEN)),
            ("aggregating", _phase(PHASE_AGGREGATE)),
            ("just after a finalization", _after_finalization),
        ])  # fmt: skip
        report = run_task(task, out=tmp_path, transport="grpc", chain=node.url, timeout=900,
                          on_poll=chaos).to_dict()  # fmt: skip
        events = chaos.ledger().events(-1)
    assert sorted(chaos.done) == sorted(name for name, _ in chaos.phases), (
        "the run ended before every kill"
    )
    final = report["final"]
    assert [e for e in events if isinstance(e, Slashed)] == []
    assert final["slashed"] == []
    # A kill right after a round closed can split the members on its blob: that round fails
    # (no quorum) and the next goes on.
    assert final["rounds_finalized"] >= 60 - 2 * len(chaos.phases)
    assert final["model_digests_agree"] is True
    assert final["audit_ok"] is True
