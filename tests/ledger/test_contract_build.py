"""The checked-in artifacts are exactly what the sources compile to, and they deploy and run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import boa
import pytest
import vyper
from eth_abi.abi import encode as abi_encode

from fedledger.errors import MessageError
from fedledger.gossip.identity import Identity
from fedledger.ledger import artifacts
from fedledger.ledger.artifacts import (
    BUILD_DIR,
    CONTRACT_NAMES,
    CONTRACTS_DIR,
    artifact_json,
    compile_contract,
    load_artifact,
)
from fedledger.ledger.contract_ledger import _RULE_FIELDS
from fedledger.ledger.messages import ZERO32, RoundMessage
from fedledger.ledger.records import (
    EVENT_TYPES,
    GOVERNABLE_RULES,
    LedgerEvent,
    batch_arguments,
    message_argument,
)
from fedledger.ledger.rules import (
    PHASE_AGGREGATE,
    PHASE_FINALIZED,
    PHASE_OPEN,
    result_digest,
    sort_result,
)

ETHER = 10**18


@pytest.fixture(scope="module")
def fresh() -> dict[str, dict[str, Any]]:
    return {name: compile_contract(name) for name in CONTRACT_NAMES}


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_checked_in_artifact_matches_a_fresh_compile(
    name: str, fresh: dict[str, dict[str, Any]]
) -> None:
    artifact = load_artifact(name)
    built = fresh[name]
    source = (CONTRACTS_DIR / f"{name}.vy").read_bytes()
    hint = "stale artifact: run `python -m fedledger.ledger.artifacts`"
    assert artifact["source_sha256"] == hashlib.sha256(source).hexdigest(), hint
    assert artifact["source_sha256"] == built["source_sha256"], hint
    assert artifact["integrity"] == built["integrity"], hint  # covers snekmate's modules too
    assert artifact["bytecode"] == built["bytecode"], hint
    assert artifact["bytecode_runtime"] == built["bytecode_runtime"], hint
    assert artifact["abi"] == built["abi"], hint
    assert artifact["vyper_version"] == vyper.__version__ == built["vyper_version"]
    assert artifact["contract_name"] == name
    # The file is byte-for-byte what a rebuild writes (no spurious diffs).
    assert (BUILD_DIR / f"{name}.json").read_text() == artifact_json(built)


def test_compile_does_not_depend_on_the_checkout_path(
    tmp_path: Path, fresh: dict[str, dict[str, Any]]
) -> None:
    for name in CONTRACT_NAMES:
        (tmp_path / f"{name}.vy").write_bytes((CONTRACTS_DIR / f"{name}.vy").read_bytes())
    assert compile_contract("Task", tmp_path) == fresh["Task"]


def test_unknown_contract_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown contract"):
        compile_contract("Nope")
    with pytest.raises(ValueError, match="unknown contract"):
        load_artifact("../Task")


def test_artifact_abi_has_the_task_interface() -> None:
    abi = load_artifact("Task")["abi"]
    names = {e["name"] for e in abi if "name" in e}
    functions = {
        "join", "leave", "withdraw", "allow", "disallow", "grant_reader", "revoke_reader",
        "start", "submit", "close", "distribute", "claim", "slash", "pay_treasury", "members",
        "member_count", "endpoint_of", "stake_of", "earned_of", "claimed_of", "last_round_of",
        "active_stake", "current_round", "phase", "closes_at", "round_start", "message_hash",
        "model_digest", "result_digest", "window", "grace", "cooldown", "max_rounds",
        "reward_per_round", "total_earned", "total_claimed", "treasury_owed", "can_download",
        "owner", "transfer_ownership", "eip712Domain", "move", "set_keys", "reconfigure",
        "rules_at", "governor", "lineage", "set_consent", "rule_id", "rule_params_digest",
        "config_digest", "quorum_bps", "min_stake", "allowlist_only", "access_policy",
        "committee",
    }  # fmt: skip
    events = {
        "Configured", "Joined", "Left", "Moved", "Withdrawn", "RoundStarted", "Submitted",
        "Quorate", "Closed", "Finalized", "Skipped", "Distributed", "Equivocated", "Slashed",
        "Claimed", "Keys", "Consent", "CommitteeSampled",
    }  # fmt: skip
    assert functions <= {e["name"] for e in abi if e.get("type") == "function"}
    assert events <= {e["name"] for e in abi if e.get("type") == "event"}
    assert set(EVENT_TYPES) <= events  # every event a ledger decodes is the contract's
    # ... with the same fields, in the same order (a record's own fields after where it was).
    where = [f.name for f in fields(LedgerEvent)]
    for name, cls in EVENT_TYPES.items():
        (event,) = (e for e in abi if e.get("type") == "event" and e["name"] == name)
        assert [i["name"] for i in event["inputs"]] == [f.name for f in fields(cls)][len(where) :]
    inputs = {e["name"]: [(i["name"], i["type"]) for i in e["inputs"]]
              for e in abi if e.get("type") == "function"}  # fmt: skip
    assert inputs["submit"][-1] == inputs["distribute"][-1] == ("transcript", "bytes32")
    assert inputs["set_keys"] == [("channel_key", "bytes32"), ("keys_digest", "bytes32"),
                                  ("first_round", "uint256"), ("last_round", "uint256"),
                                  ("recipients", "uint256")]  # fmt: skip
    assert inputs["join"] == [("endpoint", "string"), ("consent", "bytes")]
    assert inputs["set_consent"] == [("policy", "bytes")]
    assert [t for _, t in inputs["reconfigure"]] == [
        "uint8",
        "bytes32",
        "uint16",
        "uint256",
        "bool",
        "uint256",
        "uint8",
        "bytes",
    ]
    # The constructor takes the rules in _RULE_FIELDS' order, then the document.
    (constructor,) = (e for e in abi if e.get("type") == "constructor")
    arguments = [i["name"].rstrip("_") for i in constructor["inputs"]]
    assert arguments == [*_RULE_FIELDS, "config_document"]
    # rules_at's struct: the governable rules (what ContractLedger reads), then from_round;
    # reconfigure takes them in that order (config_digest: the document's sha256).
    (rules_at,) = (e for e in abi if e.get("name") == "rules_at")
    components = [c["name"] for c in rules_at["outputs"][0]["components"]]
    assert components == [*GOVERNABLE_RULES, "from_round"]
    governable = [n for n in GOVERNABLE_RULES if n != "config_digest"]
    assert [n.rstrip("_") for n, _ in inputs["reconfigure"]] == [*governable, "document"]
    # Ledger v1's commit-reveal-attest calls and their events are gone.
    gone = {"commit", "reveal", "attest", "skip", "Committed", "Revealed", "Attested",
            "Rewarded", "commit_window", "reveal_window", "attest_window"}  # fmt: skip
    assert not gone & names
    token = {e["name"] for e in load_artifact("RewardToken")["abi"] if "name" in e}
    assert {"mint", "set_minter", "is_minter", "totalSupply", "balanceOf", "permit"} <= token


def test_result_digest_and_messages_reject_malformed_input() -> None:
    with pytest.raises(ValueError, match="length"):
        result_digest(["0x" + "11" * 20], [])
    with pytest.raises(ValueError, match="length"):
        sort_result(["0x" + "11" * 20], [])
    with pytest.raises(MessageError, match="32 bytes"):
        RoundMessage(round=1, update=b"short", examples=1)
    with pytest.raises(MessageError, match="needs examples"):
        RoundMessage(round=1, update=b"\x05" * 32, examples=0)


def test_main_rebuilds_every_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "BUILD_DIR", tmp_path)
    assert artifacts.main([]) == 0
    written = sorted(tmp_path.iterdir())
    assert [p.name for p in written] == sorted(f"{name}.json" for name in CONTRACT_NAMES)
    for path in written:
        assert json.loads(path.read_text()) == load_artifact(path.stem)


def _deploy(name: str, types: list[str], args: list[Any]) -> Any:
    artifact = load_artifact(name)
    code = bytes.fromhex(artifact["bytecode"].removeprefix("0x")) + abi_encode(types, args)
    address, _ = boa.env.deploy_code(bytecode=code)
    deployed_code = boa.env.evm.get_code(address)
    # The deployed code is the runtime bytecode followed by the immutables' data.
    assert deployed_code.startswith(bytes.fromhex(artifact["bytecode_runtime"].removeprefix("0x")))
    return boa.loads_abi(json.dumps(artifact["abi"]), name=name).at(address)


def test_artifacts_deploy_and_run_a_round() -> None:
    token = _deploy(
        "RewardToken",
        ["string", "string", "uint8", "string", "string"],
        ["fedledger reward", "FLR", 18, "fedledger reward", "1"],
    )
    treasury = boa.env.generate_address()
    # window 60 s, grace 10 s, 2 rounds, 8 participants, 10 tokens a round, cooldown 10 s.
    task = _deploy(
        "Task",
        ["address", "uint8", "bytes32", "bytes32", "uint16", "uint256", "uint256", "uint256",
         "uint256", "uint16", "bool", "uint256", "uint8", "uint256", "address", "address",
         "uint16", "bytes"],
        [token.address, 1, b"\x01" * 32, hashlib.sha256(b"{}").digest(), 6000, ETHER, 60, 10,
         2, 8, False, 10 * ETHER, 0, 10, treasury, "0x" + "00" * 20, 0, b"{}"],
    )  # fmt: skip
    token.set_minter(task.address, True)
    identity = Identity.from_hex("0x" + "42" * 32)
    node = identity.address
    boa.env.set_balance(node, 10 * ETHER)
    task.join("127.0.0.1:7000", b"", sender=node, value=ETHER)
    task.start()
    assert task.phase(1) == PHASE_OPEN
    chain_id = task.eip712Domain()[3]

    def submit(rnd: int, message: RoundMessage, contributors: Any = (), scores: Any = ()) -> None:
        signed = message.sign(identity, chain_id, task.address)
        assert signed.verify(chain_id, task.address)
        m = signed.message
        # The digest signed off chain is the contract's own.
        assert task.message_hash(rnd, m.update, m.examples, m.model, m.result) == m.digest(
            chain_id, task.address
        )
        pairs, entries = batch_arguments([signed])
        task.submit(rnd, pairs, entries, list(contributors), list(scores), ZERO32, sender=node)

    # Round 1: the only member's signed update closes the round at once.
    submit(1, RoundMessage(round=1, update=b"\x05" * 32, examples=10))
    assert task.message_count(1) == 1
    assert task.last_round_of(node) == 1
    assert task.phase(1) == PHASE_AGGREGATE
    boa.env.time_travel(seconds=1)
    # Round 2's message attests round 1's (model, result): the whole stake finalizes it, and
    # the same call pays its rewards.
    contributors, scores = sort_result([node], [1])
    result = result_digest(contributors, scores)
    message = RoundMessage(round=2, update=b"\x06" * 32, examples=10, model=b"\x07" * 32,
                           result=result)  # fmt: skip
    submit(2, message, contributors, scores)
    assert task.current_round() == 2
    assert task.phase(1) == PHASE_FINALIZED
    assert task.model_digest(1) == b"\x07" * 32
    assert task.distributed(1)
    assert task.earned_of(node) == task.total_earned() == 10 * ETHER
    # Round 3 (max_rounds + 1) carries attestations only: it finalizes round 2.
    boa.env.time_travel(seconds=1)
    attestation = RoundMessage(round=3, model=b"\x08" * 32, result=result)
    submit(3, attestation)
    assert task.phase(2) == PHASE_FINALIZED
    task.distribute(2, contributors, scores, ZERO32)
    assert task.earned_of(node) == 20 * ETHER
    assert token.totalSupply() == 0  # earned, not minted until claimed
    task.claim(node)
    assert token.balanceOf(node) == token.totalSupply() == task.claimed_of(node) == 20 * ETHER
    assert task.total_claimed() == 20 * ETHER
    with boa.reverts("nothing to claim"):
        task.claim(node)

    # Two different signed messages for one round are evidence: the stake goes, a tenth of it
    # to whoever brings them.
    a = attestation.sign(identity, chain_id, task.address)
    b = RoundMessage(round=3, model=b"\x09" * 32, result=result).sign(
        identity, chain_id, task.address
    )
    witness = boa.env.generate_address()
    task.slash(3, message_argument(a), message_argument(b), sender=witness)
    assert task.status_of(node) == 3
    assert task.total_slashed() == ETHER
    assert boa.env.get_balance(witness) == ETHER // 10
    assert boa.env.get_balance(treasury) == ETHER - ETHER // 10
