"""The checked-in artifacts are exactly what the sources compile to, and they deploy and run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import boa
import pytest
import vyper
from eth_abi.abi import encode as abi_encode

from fedledger.ledger import artifacts
from fedledger.ledger.artifacts import (
    BUILD_DIR,
    CONTRACT_NAMES,
    CONTRACTS_DIR,
    artifact_json,
    compile_contract,
    load_artifact,
)
from fedledger.ledger.rules import PHASE_COMMIT, commitment, result_digest, sort_result

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
    names = {e["name"] for e in load_artifact("Task")["abi"] if "name" in e}
    expected = {
        "join", "leave", "withdraw", "allow", "disallow", "start", "commit", "reveal",
        "attest", "skip", "distribute", "members", "endpoint_of", "stake_of", "active_stake",
        "current_round", "phase", "can_download", "owner", "transfer_ownership",
        "Joined", "Left", "Withdrawn", "Committed", "Revealed", "Attested", "Equivocated",
        "Slashed", "Finalized", "Skipped", "Rewarded", "Distributed", "RoundStarted",
    }  # fmt: skip
    assert expected <= names
    token = {e["name"] for e in load_artifact("RewardToken")["abi"] if "name" in e}
    assert {"mint", "set_minter", "is_minter", "totalSupply", "balanceOf", "permit"} <= token


def test_result_digest_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        result_digest(["0x" + "11" * 20], [])
    with pytest.raises(ValueError, match="length"):
        sort_result(["0x" + "11" * 20], [])
    with pytest.raises(ValueError, match="32 bytes"):
        commitment(b"short", "0x" + "11" * 20, 1, b"\x00" * 32)


def test_main_rebuilds_every_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "BUILD_DIR", tmp_path)
    assert artifacts.main([]) == 0
    written = sorted(tmp_path.iterdir())
    assert [p.name for p in written] == ["RewardToken.json", "Task.json"]
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
    task = _deploy(
        "Task",
        ["address", "uint8", "bytes32", "bytes32", "uint16", "uint256", "uint256", "uint256",
         "uint256", "uint16", "bool", "uint256", "uint8", "uint256", "address", "bytes"],
        [token.address, 1, b"\x01" * 32, hashlib.sha256(b"{}").digest(), 6000, ETHER, 60, 60,
         60, 8, False, 10 * ETHER, 0, 10, treasury, b"{}"],
    )  # fmt: skip
    token.set_minter(task.address, True)
    node = boa.env.generate_address()
    boa.env.set_balance(node, 10 * ETHER)
    task.join("127.0.0.1:7000", sender=node, value=ETHER)
    task.start()
    assert task.phase(1) == PHASE_COMMIT
    # The only member: its commit closes the commit phase, its reveal the reveal phase.
    task.commit(1, commitment(b"\x05" * 32, node, 1, b"\x06" * 32), sender=node)
    task.reveal(1, b"\x05" * 32, "bafk", 10, b"\x06" * 32, sender=node)
    contributors, scores = sort_result([node], [1])
    task.attest(1, b"\x07" * 32, result_digest(contributors, scores), sender=node)
    assert task.current_round() == 2
    task.distribute(1, contributors, scores)
    assert token.balanceOf(node) == token.totalSupply() == 10 * ETHER
