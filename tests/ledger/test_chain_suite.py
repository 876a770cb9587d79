"""One behavioural suite for every Chain implementation (embedded py-evm and anvil over
JSON-RPC), plus the embedded chain's journal (save + replay).

anvil comes from the repository's package.json: if it is not installed yet, the suite installs
it with npm (``install_anvil``), as a clean checkout in CI needs.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import vyper
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.contract import Contract
from web3.types import RPCEndpoint

from fedledger.errors import ChainUnavailable, ConfigError, LedgerError, TransactionReverted
from fedledger.ledger.chain import OUT_OF_GAS, Chain, EmbeddedChain, RpcChain
from fedledger.ledger.chain.anvil import AnvilProcess, find_anvil, install_anvil, start_anvil
from fedledger.ledger.chain.embedded import DEFAULT_GENESIS_TIMESTAMP

REPO_ROOT = Path(__file__).resolve().parents[2]
ETHER = 10**18

AnyChain = EmbeddedChain | RpcChain

COUNTER_SOURCE = """
# pragma version ~=0.4.3

event Bumped:
    who: indexed(address)
    count: uint256

event Deposited:
    who: indexed(address)
    amount: uint256

owner: public(address)
count: public(uint256)
stamp: public(uint256)

@deploy
@payable
def __init__(start: uint256):
    self.owner = msg.sender
    self.count = start

@external
def bump() -> uint256:
    self.count += 1
    log Bumped(who=msg.sender, count=self.count)
    return self.count

@external
@payable
def deposit():
    log Deposited(who=msg.sender, amount=msg.value)

@external
@payable
def __default__():
    log Deposited(who=msg.sender, amount=msg.value)

@external
def withdraw(to: address, amount: uint256):
    assert msg.sender == self.owner, "not owner"
    send(to, amount)

@external
def nope():
    raise "nope"

@external
def fail_silently():
    raise

@external
def record_time():
    self.stamp = block.timestamp

@external
def burn(n: uint256):
    for i: uint256 in range(n, bound=10000):
        self.count += 1

@external
@view
def twice(x: uint256) -> uint256:
    return 2 * x

@external
@view
def checked(x: uint256) -> uint256:
    assert x > 0, "nope"
    return x
"""


@functools.cache
def anvil_binary() -> Path:
    """anvil from the repository's node_modules (or PATH), installed with npm if missing."""
    return find_anvil(REPO_ROOT) or install_anvil(REPO_ROOT)


@pytest.fixture(scope="session")
def counter_artifact() -> tuple[Any, str]:
    out = vyper.compile_code(COUNTER_SOURCE, output_formats=["abi", "bytecode"])
    return out["abi"], out["bytecode"]


@pytest.fixture(scope="module")
def anvil_node() -> Iterator[AnvilProcess]:
    with start_anvil(anvil=anvil_binary()) as node:
        yield node


@pytest.fixture(params=["embedded", "anvil"])
def chain(request: pytest.FixtureRequest) -> AnyChain:
    if request.param == "embedded":
        return EmbeddedChain()
    node: AnvilProcess = request.getfixturevalue("anvil_node")
    return node.chain()


@pytest.fixture
def owner(chain: AnyChain) -> LocalAccount:
    return chain.accounts()[0]


def deploy_counter(
    chain: AnyChain, artifact: tuple[Any, str], sender: LocalAccount, start: int = 0, value: int = 0
) -> Contract:
    abi, bytecode = artifact
    return chain.deploy(abi, bytecode, start, sender=sender, value=value)


def test_both_implement_the_protocol(anvil_node: AnvilProcess) -> None:
    chains: list[Chain] = [EmbeddedChain(), anvil_node.chain()]  # checked by mypy
    assert {c.chain_id for c in chains} == {EmbeddedChain().chain_id, 31337}
    assert all(len(c.accounts()) == 10 for c in chains)


def test_accounts_are_funded_local_keys(chain: AnyChain) -> None:
    accounts = chain.accounts()
    assert len({a.address for a in accounts}) == len(accounts) == 10
    for account in accounts[:3]:
        assert chain.balance(account.address) > 1000 * ETHER
        assert Account.from_key(account.key).address == account.address


def test_deploy_and_transact(chain: AnyChain, counter_artifact: tuple[Any, str]) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner, start=5)
    assert chain.call(counter.functions.count()) == 5
    assert chain.call(counter.functions.owner()) == owner.address

    receipts = [chain.transact(counter.functions.bump(), sender=owner) for _ in range(3)]

    assert chain.call(counter.functions.count()) == 8
    for receipt in receipts:
        assert receipt.status == 1
        assert receipt.gas_used > 0
        assert receipt.gas_limit >= receipt.gas_used
        assert receipt.effective_gas_price > 0
        assert receipt.fee == receipt.gas_used * receipt.effective_gas_price
        assert receipt.tx_hash.startswith("0x")
        assert len(receipt.tx_hash) == 66
    assert [r.block for r in receipts] == sorted({r.block for r in receipts})
    assert receipts[-1].block == chain.block_number()
    decoded = [receipt.decode(counter.events.Bumped) for receipt in receipts]
    assert [[e["args"]["count"] for e in events] for events in decoded] == [[6], [7], [8]]
    assert decoded[0][0]["args"]["who"] == owner.address


def test_events_are_read_back_across_windows(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    first = chain.block_number()
    receipts = [chain.transact(counter.functions.bump(), sender=owner) for _ in range(10)]
    assert len({r.block for r in receipts}) == 10  # one block each

    bumped = counter.events.Bumped
    everything = chain.events(bumped, from_block=first)
    windowed = chain.events(bumped, from_block=first, window=2)
    single = chain.events(bumped, from_block=first, window=1)

    assert [e["args"]["count"] for e in everything] == list(range(1, 11))
    assert windowed == everything
    assert single == everything
    assert [e["blockNumber"] for e in everything] == [r.block for r in receipts]
    assert [e["transactionHash"].to_0x_hex() for e in everything] == [r.tx_hash for r in receipts]
    middle = chain.events(
        bumped, from_block=receipts[3].block, to_block=receipts[6].block, window=3
    )
    assert [e["args"]["count"] for e in middle] == [4, 5, 6, 7]
    assert chain.events(counter.events.Deposited, from_block=first, window=2) == []
    assert chain.events(bumped, from_block=0, to_block=first - 1) == []


def test_event_window_must_be_positive(chain: AnyChain) -> None:
    with pytest.raises(ConfigError):
        chain.events(_any_event(chain), from_block=0, window=0)


def _any_event(chain: AnyChain) -> Any:
    abi = vyper.compile_code(COUNTER_SOURCE, output_formats=["abi"])["abi"]
    return chain.contract("0x" + "11" * 20, abi).events.Bumped


@pytest.mark.parametrize("gas", [None, 200_000], ids=["estimated", "explicit-gas"])
def test_revert_reason_is_the_same_on_every_backend(
    chain: AnyChain, counter_artifact: tuple[Any, str], gas: int | None
) -> None:
    owner, other = chain.accounts()[:2]
    counter = deploy_counter(chain, counter_artifact, owner)
    before = chain.block_number()

    with pytest.raises(TransactionReverted) as caught:
        chain.transact(counter.functions.nope(), sender=owner, gas=gas)
    assert caught.value.reason == "nope"

    with pytest.raises(TransactionReverted) as caught:
        chain.transact(counter.functions.withdraw(other.address, 1), sender=other, gas=gas)
    assert caught.value.reason == "not owner"

    with pytest.raises(TransactionReverted) as caught:
        chain.transact(counter.functions.fail_silently(), sender=owner, gas=gas)
    assert caught.value.reason is None

    if gas is None:  # found while estimating: nothing was sent
        assert caught.value.receipt is None
        assert chain.block_number() == before
    else:  # mined with status 0
        receipt = caught.value.receipt
        assert receipt is not None
        assert receipt.status == 0
        assert receipt.gas_limit == gas
        assert caught.value.tx_hash == receipt.tx_hash
        assert chain.block_number() == before + 3
    # The failures did not disturb the sender's nonces.
    assert chain.transact(counter.functions.bump(), sender=owner).status == 1


def test_reverting_view_raises_transaction_reverted(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    counter = deploy_counter(chain, counter_artifact, chain.accounts()[0])
    assert chain.call(counter.functions.checked(3)) == 3
    with pytest.raises(TransactionReverted) as caught:
        chain.call(counter.functions.checked(0))
    assert caught.value.reason == "nope"
    assert caught.value.receipt is None


def test_views_and_historical_calls(chain: AnyChain, counter_artifact: tuple[Any, str]) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner, start=1)
    deployed_at = chain.block_number()
    chain.transact(counter.functions.bump(), sender=owner)
    assert chain.call(counter.functions.twice(21)) == 42
    assert chain.call(counter.functions.count()) == 2
    assert chain.call(counter.functions.count(), block=deployed_at) == 1


def test_value_transfers_and_balances(chain: AnyChain, counter_artifact: tuple[Any, str]) -> None:
    owner, payer, payee = chain.accounts()[:3]
    counter = deploy_counter(chain, counter_artifact, owner, value=3 * ETHER)
    assert chain.balance(counter.address) == 3 * ETHER

    payer_before = chain.balance(payer.address)
    receipt = chain.transact(counter.functions.deposit(), sender=payer, value=2 * ETHER)
    assert chain.balance(counter.address) == 5 * ETHER
    assert chain.balance(payer.address) == payer_before - 2 * ETHER - receipt.fee
    (deposited,) = receipt.decode(counter.events.Deposited)
    assert deposited["args"]["who"] == payer.address
    assert deposited["args"]["amount"] == 2 * ETHER

    payee_before = chain.balance(payee.address)
    chain.transact(counter.functions.withdraw(payee.address, ETHER), sender=owner)
    assert chain.balance(payee.address) == payee_before + ETHER
    assert chain.balance(counter.address) == 4 * ETHER

    # A key the node has never seen: funded, then transacting (so signing is local).
    fresh: LocalAccount = Account.create()
    funding = chain.transfer(fresh.address, ETHER, sender=owner)
    assert funding.gas_used == 21_000
    assert chain.balance(fresh.address) == ETHER
    bumped = chain.transact(counter.functions.bump(), sender=fresh)
    assert bumped.decode(counter.events.Bumped)[0]["args"]["who"] == fresh.address
    assert chain.balance(fresh.address) == ETHER - bumped.fee
    # Value to a contract through transfer() needs more than 21 000 gas: it is estimated.
    paid = chain.transfer(counter.address, 10, sender=owner)
    assert paid.status == 1
    assert chain.balance(counter.address) == 4 * ETHER + 10


def test_many_transactions_in_a_row_from_one_sender(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    start_nonce = chain.w3.eth.get_transaction_count(owner.address)
    receipts = [chain.transact(counter.functions.bump(), sender=owner) for _ in range(40)]
    assert chain.call(counter.functions.count()) == 40
    nonces = [chain.w3.eth.get_transaction(r.tx_hash)["nonce"] for r in receipts]  # type: ignore[arg-type]
    assert nonces == list(range(start_nonce, start_nonce + 40))


def test_nonces_resync_after_a_transaction_sent_elsewhere(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner, other = chain.accounts()[:2]
    counter = deploy_counter(chain, counter_artifact, owner)
    chain.transact(counter.functions.bump(), sender=owner)  # the chain now caches the nonce

    # The same key sends a transaction behind the chain object's back.
    w3 = chain.w3
    block = w3.eth.get_block("latest")
    outside = owner.sign_transaction(
        {
            "type": 2,
            "chainId": chain.chain_id,
            "nonce": w3.eth.get_transaction_count(owner.address, "pending"),
            "to": other.address,
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": 2 * block["baseFeePerGas"] + 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(outside.raw_transaction))

    receipt = chain.transact(counter.functions.bump(), sender=owner)
    assert receipt.status == 1
    assert chain.call(counter.functions.count()) == 2


def test_explicit_gas_is_used(chain: AnyChain, counter_artifact: tuple[Any, str]) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    receipt = chain.transact(counter.functions.bump(), sender=owner, gas=123_456)
    assert receipt.gas_limit == 123_456
    assert chain.w3.eth.get_transaction(receipt.tx_hash)["gas"] == 123_456  # type: ignore[arg-type]


def test_default_gas_is_estimated_once_and_cached(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)  # count == 0
    bump = counter.functions.bump()
    assert chain.default_gas(bump) is None
    # The first bump writes a zero slot (expensive); later ones would estimate much lower.
    first = chain.transact(bump, sender=owner)
    cached = chain.default_gas(bump)
    assert cached is not None
    assert first.gas_limit == cached
    later = [chain.transact(counter.functions.bump(), sender=owner) for _ in range(3)]
    assert [r.gas_limit for r in later] == [cached] * 3
    assert all(r.gas_used < first.gas_used for r in later)
    assert chain.w3.eth.get_transaction(later[-1].tx_hash)["gas"] == cached  # type: ignore[arg-type]
    # Cached per contract: another deployment estimates on its own.
    other = deploy_counter(chain, counter_artifact, owner)
    assert chain.default_gas(other.functions.bump()) is None


def test_out_of_gas_under_the_cached_default_drops_it(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    chain.transact(counter.functions.burn(1), sender=owner)  # caches a default for burn()
    with pytest.raises(TransactionReverted) as caught:
        chain.transact(counter.functions.burn(1000), sender=owner)
    assert caught.value.reason == OUT_OF_GAS
    receipt = caught.value.receipt
    assert receipt is not None
    assert receipt.gas_used == receipt.gas_limit
    assert chain.default_gas(counter.functions.burn(1)) is None
    # Estimated again, with the larger argument: it goes through.
    assert chain.transact(counter.functions.burn(1000), sender=owner).status == 1
    assert chain.call(counter.functions.count()) == 1001


def test_time_travel_moves_block_timestamp(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    chain.transact(counter.functions.record_time(), sender=owner)
    before = chain.call(counter.functions.stamp())
    height = chain.block_number()

    chain.time_travel(3600)

    assert chain.block_number() == height + 1
    assert chain.w3.eth.get_block("latest")["timestamp"] >= before + 3600
    chain.transact(counter.functions.record_time(), sender=owner)
    after = chain.call(counter.functions.stamp())
    assert after >= before + 3600
    with pytest.raises(ConfigError):
        chain.time_travel(-1)


def test_unbound_function_is_refused(chain: AnyChain, counter_artifact: tuple[Any, str]) -> None:
    abi, bytecode = counter_artifact
    factory = chain.w3.eth.contract(abi=abi, bytecode=bytecode)
    with pytest.raises(ConfigError):
        chain.transact(factory.functions.bump(), sender=chain.accounts()[0])


def test_rejected_transaction_raises_ledger_error(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    broke: LocalAccount = Account.create()  # no funds at all
    with pytest.raises(LedgerError) as caught:
        chain.transact(counter.functions.bump(), sender=broke, gas=100_000)
    assert not isinstance(caught.value, TransactionReverted)
    # The chain stays usable.
    assert chain.transact(counter.functions.bump(), sender=owner).status == 1


# --------------------------------------------------------------------------------------------
# The error boundary: only fedledger's errors leave a chain, the original as __cause__
# --------------------------------------------------------------------------------------------


def assert_translated(error: BaseException, expected: type[LedgerError] = LedgerError) -> None:
    """``error`` is exactly ``expected`` (not a subclass), translated from a third-party
    error kept as its cause."""
    assert type(error) is expected, repr(error)
    cause = error.__cause__
    assert cause is not None, repr(error)
    assert not type(cause).__module__.startswith("fedledger"), repr(cause)


def raised_by(call: Callable[[], object]) -> BaseException:
    """What ``call`` raised (the test fails if it raised nothing)."""
    try:
        call()
    except BaseException as exc:
        return exc
    pytest.fail(f"{call} raised nothing")


def test_every_public_method_is_behind_the_error_boundary() -> None:
    for cls in (EmbeddedChain, RpcChain):
        for name, attr in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_"):
                continue
            assert hasattr(attr, "__wrapped__"), f"{cls.__name__}.{name} is not @translated"


def test_a_call_to_an_address_without_code_is_a_ledger_error(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner, other = chain.accounts()[:2]
    abi, _ = counter_artifact
    nothing = chain.contract(other.address, abi)  # an account, not a contract
    with pytest.raises(LedgerError) as caught:
        chain.call(nothing.functions.count())
    assert_translated(caught.value)
    assert "no contract" in str(caught.value)
    head = chain.block_number()
    with pytest.raises(LedgerError, match="no contract") as refused:
        chain.transact(nothing.functions.bump(), sender=owner, gas=100_000)
    assert type(refused.value) is LedgerError
    assert chain.block_number() == head  # nothing was sent
    counter = deploy_counter(chain, counter_artifact, owner)  # the chain stays usable
    assert chain.transact(counter.functions.bump(), sender=owner).status == 1


@pytest.mark.parametrize("address", ["0x1234", "0x" + "zz" * 20, "not an address", ""])
def test_a_malformed_address_is_a_ledger_error(
    chain: AnyChain, counter_artifact: tuple[Any, str], address: str
) -> None:
    abi, _ = counter_artifact
    sender = chain.accounts()[0]
    calls = {
        "balance": lambda: chain.balance(address),
        "code": lambda: chain.code(address),
        "contract": lambda: chain.contract(address, abi),
        "logs": lambda: chain.logs(address, from_block=0),
        "transfer": lambda: chain.transfer(address, 1, sender=sender),
    }
    raised = {name: raised_by(call) for name, call in calls.items()}
    assert {name: type(e) for name, e in raised.items()} == dict.fromkeys(calls, LedgerError)
    for error in raised.values():
        assert_translated(error)


def test_unknown_blocks_and_transactions_are_ledger_errors(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    counter = deploy_counter(chain, counter_artifact, chain.accounts()[0])
    future = chain.block_number() + 1000
    calls = [
        lambda: chain.block_timestamp(future),
        lambda: chain.block_timestamp(-1),
        lambda: chain.block_hash(future),
        lambda: chain.call(counter.functions.count(), block=future),  # anvil: Web3RPCError
        lambda: chain.raw_transaction("not hex"),
        lambda: chain.transaction_input("0x12"),
    ]
    for error in map(raised_by, calls):
        assert isinstance(error, LedgerError), repr(error)
        assert not isinstance(error, TransactionReverted | ChainUnavailable), repr(error)
    with pytest.raises(LedgerError, match="no mined transaction"):
        chain.transaction_input("0x" + "ab" * 32)


def test_malformed_deployments_are_ledger_errors(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    abi, bytecode = counter_artifact
    owner = chain.accounts()[0]
    with pytest.raises(LedgerError) as caught:
        chain.deploy(abi, "0xnothex", 0, sender=owner)
    assert_translated(caught.value)
    with pytest.raises(LedgerError) as caught:
        chain.deploy(abi, bytecode, "not a number", sender=owner)
    assert_translated(caught.value)
    assert deploy_counter(chain, counter_artifact, owner).address


def test_reverts_keep_their_cause(chain: AnyChain, counter_artifact: tuple[Any, str]) -> None:
    counter = deploy_counter(chain, counter_artifact, chain.accounts()[0])
    with pytest.raises(TransactionReverted) as caught:
        chain.call(counter.functions.checked(0))
    assert_translated(caught.value, TransactionReverted)
    assert caught.value.reason == "nope"


# --------------------------------------------------------------------------------------------
# Embedded only: determinism, the journal, save + replay
# --------------------------------------------------------------------------------------------


def _scripted_run(chain: EmbeddedChain, artifact: tuple[Any, str]) -> Contract:
    owner, payer, payee = chain.accounts()[:3]
    counter = deploy_counter(chain, artifact, owner, start=7, value=ETHER)
    for _ in range(5):
        chain.transact(counter.functions.bump(), sender=owner)
    chain.transact(counter.functions.deposit(), sender=payer, value=2 * ETHER)
    chain.time_travel(86_400)
    chain.transact(counter.functions.record_time(), sender=payer)
    with pytest.raises(TransactionReverted):
        chain.transact(counter.functions.nope(), sender=owner, gas=100_000)  # mined, status 0
    chain.transact(counter.functions.withdraw(payee.address, ETHER // 2), sender=owner)
    chain.transfer("0x" + "ab" * 20, 12345, sender=payee)
    chain.transact(counter.functions.bump(), sender=payee)
    return counter


def _state(chain: EmbeddedChain, counter: Contract) -> dict[str, Any]:
    bound = chain.contract(counter.address, counter.abi)
    latest = chain.w3.eth.get_block("latest")
    return {
        "block": chain.block_number(),
        "hash": latest["hash"],
        "timestamp": latest["timestamp"],
        "count": chain.call(bound.functions.count()),
        "stamp": chain.call(bound.functions.stamp()),
        "balances": [chain.balance(a.address) for a in chain.accounts()]
        + [chain.balance(counter.address)],
        "bumped": chain.events(bound.events.Bumped, from_block=0),
        "deposited": chain.events(bound.events.Deposited, from_block=0),
    }


def test_save_and_replay_reproduce_state_and_events(
    tmp_path: Path, counter_artifact: tuple[Any, str]
) -> None:
    original = EmbeddedChain()
    counter = _scripted_run(original, counter_artifact)
    journal = tmp_path / "chain.jsonl"
    original.save(journal)

    replayed = EmbeddedChain.replay(journal)

    assert _state(replayed, counter) == _state(original, counter)
    assert replayed.recorded_transactions() == original.recorded_transactions()
    assert len(original.recorded_transactions()) == 12
    lines = journal.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "fedledger.embedded-chain"
    assert len(lines) == 1 + original.block_number()  # one line per mined block
    again = tmp_path / "again.jsonl"
    replayed.save(again)
    assert again.read_bytes() == journal.read_bytes()
    # The replayed chain goes on like the original would (the new transactions' bytes may
    # differ: each chain object picks its own fee cap).
    owner = replayed.accounts()[0]
    bound = replayed.contract(counter.address, counter.abi)
    replayed.transact(bound.functions.bump(), sender=owner)
    original.transact(counter.functions.bump(), sender=owner)
    on_replayed, on_original = _state(replayed, counter), _state(original, counter)
    for key in ("block", "timestamp", "count", "stamp", "balances"):
        assert on_replayed[key] == on_original[key]
    assert [e["args"] for e in on_replayed["bumped"]] == [e["args"] for e in on_original["bumped"]]


def test_logical_time_makes_runs_identical(counter_artifact: tuple[Any, str]) -> None:
    first, second = EmbeddedChain(), EmbeddedChain()
    _scripted_run(first, counter_artifact)
    _scripted_run(second, counter_artifact)
    assert first.w3.eth.get_block("latest")["hash"] == second.w3.eth.get_block("latest")["hash"]
    stamps = [first.w3.eth.get_block(n)["timestamp"] for n in range(4)]
    assert stamps == [1_735_689_600 + n for n in range(4)]


def test_replay_of_a_wall_clock_run_uses_the_recorded_timestamps(
    tmp_path: Path, counter_artifact: tuple[Any, str]
) -> None:
    ticks = iter(range(1_800_000_000, 1_900_000_000, 7))
    original = EmbeddedChain(clock=lambda: float(next(ticks)))
    counter = _scripted_run(original, counter_artifact)
    original.save(tmp_path / "wall.jsonl")
    replayed = EmbeddedChain.replay(tmp_path / "wall.jsonl", clock=time.time)
    assert _state(replayed, counter) == _state(original, counter)
    assert original.w3.eth.get_block(1)["timestamp"] > 1_800_000_000


def test_replay_detects_a_tampered_journal(
    tmp_path: Path, counter_artifact: tuple[Any, str]
) -> None:
    original = EmbeddedChain()
    _scripted_run(original, counter_artifact)
    journal = tmp_path / "chain.jsonl"
    original.save(journal)
    lines = journal.read_text().splitlines()

    record = json.loads(lines[3])
    record["timestamp"] += 1
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([*lines[:3], json.dumps(record), *lines[4:]]) + "\n")
    with pytest.raises(LedgerError, match="diverged at block 3"):
        EmbeddedChain.replay(tampered)

    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text("\n".join([*lines[:3], *lines[4:]]) + "\n")
    with pytest.raises(LedgerError):
        EmbeddedChain.replay(dropped)

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n")
    with pytest.raises(LedgerError, match="cannot read"):
        EmbeddedChain.replay(garbage)


def test_snapshot_revert_truncates_the_journal(
    tmp_path: Path, counter_artifact: tuple[Any, str]
) -> None:
    chain = EmbeddedChain()
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    snapshot = chain.w3.manager.request_blocking(RPCEndpoint("evm_snapshot"), [])
    chain.transact(counter.functions.bump(), sender=owner)
    # Rewinds the owner's nonce too: the chain object resyncs on the nonce error.
    chain.w3.manager.request_blocking(RPCEndpoint("evm_revert"), [snapshot])
    chain.transact(counter.functions.deposit(), sender=owner, value=5)
    chain.save(tmp_path / "chain.jsonl")
    replayed = EmbeddedChain.replay(tmp_path / "chain.jsonl")
    assert _state(replayed, counter) == _state(chain, counter)
    assert chain.call(counter.functions.count()) == 0


def test_embedded_events_match_web3_get_logs(counter_artifact: tuple[Any, str]) -> None:
    chain = EmbeddedChain()
    counter = _scripted_run(chain, counter_artifact)
    last = chain.block_number()
    for event in (counter.events.Bumped, counter.events.Deposited):
        assert chain.events(event, from_block=0, window=3) == list(
            event.get_logs(from_block=0, to_block=last)
        )


def test_elapsed_pace_advances_one_second_per_block_and_with_idle_time() -> None:
    ticks = iter([100.0, 100.0, 100.2, 100.3, 100.4, 103.6, 103.7, 103.8])
    now = [100.0]

    def clock() -> float:
        value = next(ticks, now[0])
        now[0] = value
        return value

    chain = EmbeddedChain(clock=clock, pace="elapsed")
    genesis = chain.block_timestamp(0)
    assert genesis == DEFAULT_GENESIS_TIMESTAMP
    sender, other = chain.accounts()[:2]
    chain.transfer(other.address, 1, sender=sender)
    first = chain.block_timestamp(chain.block_number())
    assert first == genesis + 1  # busy: one second per block
    before_idle = chain.now()
    assert before_idle >= first + 1
    chain.transfer(other.address, 1, sender=sender)
    second = chain.block_timestamp(chain.block_number())
    assert second >= first + 1
    assert chain.now() >= second + 1


def test_raw_logs_of_an_address_across_windows(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    other = deploy_counter(chain, counter_artifact, owner)
    first = chain.block_number()
    for i in range(6):
        if i % 2:
            chain.transact(counter.functions.deposit(), sender=owner, value=i)
        else:
            chain.transact(counter.functions.bump(), sender=owner)
        chain.transact(other.functions.bump(), sender=owner)

    logs = chain.logs(counter.address, from_block=first)
    assert logs == chain.logs(counter.address, from_block=first, window=2)
    assert [log["address"] for log in logs] == [counter.address] * 6
    bumped, deposited = counter.events.Bumped(), counter.events.Deposited()
    kinds = [
        "bump" if HexBytes(log["topics"][0]) == HexBytes(bumped.topic) else "deposit"
        for log in logs
    ]
    assert kinds == ["bump", "deposit"] * 3
    assert [bumped.process_log(log)["args"]["count"] for log in logs[::2]] == [1, 2, 3]
    assert [deposited.process_log(log)["args"]["amount"] for log in logs[1::2]] == [1, 3, 5]
    assert [log["blockNumber"] for log in logs] == sorted(log["blockNumber"] for log in logs)
    assert chain.logs(counter.address, from_block=0, to_block=first - 1) == []


def test_block_timestamps_and_now(chain: AnyChain, counter_artifact: tuple[Any, str]) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    receipt = chain.transact(counter.functions.record_time(), sender=owner)
    stamped = chain.call(counter.functions.stamp())
    assert chain.block_timestamp(receipt.block) == stamped
    assert chain.now() >= stamped
    later = chain.transact(counter.functions.record_time(), sender=owner)
    assert chain.call(counter.functions.stamp()) >= stamped
    assert chain.block_timestamp(later.block) == chain.call(counter.functions.stamp())


def test_block_hashes_are_the_mined_blocks(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner = chain.accounts()[0]
    counter = deploy_counter(chain, counter_artifact, owner)
    first = chain.transact(counter.functions.bump(), sender=owner)
    second = chain.transact(counter.functions.bump(), sender=owner)
    a, b = chain.block_hash(first.block), chain.block_hash(second.block)
    assert len(a) == len(b) == 32
    assert a != b
    assert chain.block_hash(first.block) == a  # what was mined stays


def test_raw_transactions_recover_their_sender_and_calldata(
    chain: AnyChain, counter_artifact: tuple[Any, str]
) -> None:
    owner, other = chain.accounts()[:2]
    counter = deploy_counter(chain, counter_artifact, owner)
    receipt = chain.transact(counter.functions.bump(), sender=other)
    raw = chain.raw_transaction(receipt.tx_hash)
    assert Account.recover_transaction(raw) == other.address
    fn, args = counter.decode_function_input(chain.transaction_input(receipt.tx_hash))
    assert fn.fn_name == "bump"
    assert args == {}
    assert len(chain.code(counter.address)) > 0
    assert chain.code(other.address) == b""
    with pytest.raises(LedgerError):
        chain.raw_transaction("0x" + "ab" * 32)


def test_a_committee_seed_is_recomputed_from_the_block_that_drew_it(chain: AnyChain) -> None:
    """A Task with a committee of 3 among 5 members: each `CommitteeSampled` seed is
    keccak256(prevrandao, the parent's hash, task, round) of the block that drew it, read back
    through `block_randomness`, and its members are `sample_committee`'s (what the audit
    checks)."""
    from dataclasses import replace

    from fedledger.config import TaskConfig
    from fedledger.ledger.contract_ledger import ContractLedger, deploy_task
    from fedledger.ledger.records import CommitteeSampled
    from fedledger.ledger.rules import committee_seed, sample_committee

    base = TaskConfig()
    task_cfg = replace(base, nodes=5, ledger=replace(base.ledger, committee=3,
                                                     max_participants=8))  # fmt: skip
    accounts = chain.accounts()
    task, _ = deploy_task(chain, task_cfg, owner=accounts[0])
    members = [ContractLedger(chain, task, a) for a in accounts[1:6]]
    for m in members:
        m.join(f"127.0.0.1:{m.account[-4:]}", task_cfg.ledger.min_stake)
    owner = ContractLedger(chain, task, accounts[0])
    order = owner.member_array()
    owner.start()
    drawn = [e for e in owner.events(-1) if isinstance(e, CommitteeSampled)]
    assert [e.round for e in drawn] == [1, 2]
    for e in drawn:
        randao, parent = chain.block_randomness(e.block)
        assert e.seed == committee_seed(prevrandao=randao, parent_hash=parent, task=task,
                                        round=e.round)  # fmt: skip
        assert e.members == sample_committee(e.seed, order, 3)
        assert e.stake == 3 * task_cfg.ledger.min_stake
