"""Governance of a task's rules: what a proposal asks for, and where to send it.

A proposal to change a task's rules is one call, ``Task.reconfigure(...)`` with the new
configuration document and the contract rules it implies (:func:`reconfigure_call`), run by
the task's timelock once token holders passed it. :func:`decode_proposal` reads one back
(whatever its proposer claims): the new configuration, the changes it makes to the one in force
(:func:`fedledger.config.amendments.check_amendment`), or why it is not a valid amendment, and
whether its contract rules are the document's.

:func:`governor_of` finds a task's Governor on chain: the Task's ``governor`` is its timelock,
whose proposer role was granted to the Governor. :func:`rules_in_force` rebuilds the
configuration history from the task's ``Configured`` events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from fedledger.config.amendments import RulesInForce, check_amendment
from fedledger.config.task import TaskConfig, config_from_document
from fedledger.errors import ConfigError, LedgerError
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import Chain
from fedledger.ledger.chain.base import map_chain_errors
from fedledger.ledger.records import Configured, Ledger, rules_argument
from fedledger.ledger.rules import ZERO_ADDRESS, rules_for

__all__ = ["ProposedChange", "decode_proposal", "governor_of", "reconfigure_args",
           "reconfigure_call", "rules_in_force"]  # fmt: skip

PROPOSER_ROLE: Final = keccak(text="PROPOSER_ROLE")


def reconfigure_args(task: TaskConfig) -> list[Any]:
    """``Task.reconfigure``'s arguments for configuration ``task``."""
    # The same mapping as the deployment's (the token and treasury are not governable).
    governable = rules_for(task, token=ZERO_ADDRESS, treasury=ZERO_ADDRESS)
    return [*rules_argument(governable), task.document()]


def _task_contract(chain: Chain, task_address: str) -> Any:
    return chain.contract(to_checksum_address(task_address), load_artifact("Task")["abi"])


def reconfigure_call(chain: Chain, task_address: str, task: TaskConfig) -> bytes:
    """The calldata of ``Task.reconfigure`` to configuration ``task``."""
    with map_chain_errors(f"task at {task_address}"):
        contract = _task_contract(chain, task_address)
        data = contract.encode_abi("reconfigure", args=reconfigure_args(task))
    return bytes.fromhex(str(data).removeprefix("0x"))


@dataclass(frozen=True, kw_only=True)
class ProposedChange:
    """What a proposal's call does to the task's rules."""

    config: TaskConfig | None
    """The proposed configuration (None: the call is not a valid ``reconfigure``)."""
    changes: dict[str, tuple[Any, Any]]
    """Each setting it changes: ``{"aggregation.rule": ("fedavg", "trimmed_mean")}``."""
    problem: str
    """Why nodes would not follow it ("" if they would)."""

    @property
    def valid(self) -> bool:
        return not self.problem


def decode_proposal(chain: Chain, task_address: str, target: str, data: bytes,
                    before: TaskConfig) -> ProposedChange:  # fmt: skip
    """What a proposal calling ``target`` with ``data`` does to a task whose configuration is
    ``before`` now."""
    if to_checksum_address(target) != to_checksum_address(task_address):
        return ProposedChange(config=None, changes={},
                              problem=f"it calls {target}, not the task")  # fmt: skip
    try:
        with map_chain_errors(f"task at {task_address}"):
            fn, args = _task_contract(chain, task_address).decode_function_input(data)
    except (LedgerError, ValueError) as exc:
        return ProposedChange(config=None, changes={},
                              problem=f"not a call the task knows ({exc})")  # fmt: skip
    if fn.fn_name != "reconfigure":
        why = f"it calls the task's {fn.fn_name}, not reconfigure"
        return ProposedChange(config=None, changes={}, problem=why)
    try:
        new = config_from_document(bytes(args["document"]))
    except ConfigError as exc:
        return ProposedChange(config=None, changes={}, problem=str(exc))
    try:
        changes = check_amendment(before, new)
    except ConfigError as exc:
        return ProposedChange(config=new, changes={}, problem=str(exc))
    expected = reconfigure_args(new)
    given = [args[name] for name in ("rule_id_", "rule_params_digest_", "quorum_bps_",
                                     "min_stake_", "allowlist_only_", "reward_per_round_",
                                     "access_policy_", "document")]  # fmt: skip
    given = [bytes(v) if isinstance(v, bytes | bytearray) else v for v in given]
    if given != expected:
        return ProposedChange(config=new, changes=changes,
                              problem="its contract rules are not its document's")  # fmt: skip
    return ProposedChange(config=new, changes=changes, problem="")


def rules_in_force(ledger: Ledger, base: TaskConfig, *, before: int | None = None) -> RulesInForce:
    """The task's configuration history: ``base`` (the deployment's) and every change in its
    ``Configured`` events (those mined before block ``before`` only, if given)."""
    rules = RulesInForce(base=base)
    for e in ledger.events(-1, ledger.head()):
        if isinstance(e, Configured) and (before is None or e.block < before):
            rules = rules.with_change(e.from_round, e.document)
    return rules


def governor_of(chain: Chain, task_address: str, *, from_block: int = 0) -> str:
    """The Governor whose proposals the task's timelock runs; a :class:`LedgerError` if the
    task has no governance."""
    where = f"task at {task_address}"
    with map_chain_errors(where):
        timelock = str(chain.call(_task_contract(chain, task_address).functions.governor()))
        if int(timelock, 16) == 0:
            raise LedgerError(f"the {where} has no governance (its rules never change)")
        contract = chain.contract(to_checksum_address(timelock),
                                  load_artifact("Timelock")["abi"])  # fmt: skip
        changes: list[tuple[int, int, str, bool]] = []
        for name, granted in (("RoleGranted", True), ("RoleRevoked", False)):
            for log in chain.events(getattr(contract.events, name)(), from_block=from_block):
                if bytes(log["args"]["role"]) == PROPOSER_ROLE:
                    changes.append((int(log["blockNumber"]), int(log["logIndex"]),
                                    str(log["args"]["account"]), granted))  # fmt: skip
    holders: dict[str, bool] = {}
    for _, _, account, on in sorted(changes):
        holders[account] = on
    proposers = [a for a, on in holders.items() if on]
    if len(proposers) != 1:
        raise LedgerError(f"the {where}'s timelock has {len(proposers)} proposers, not one "
                          "governor")  # fmt: skip
    return to_checksum_address(proposers[0])
