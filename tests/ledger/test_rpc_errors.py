"""A JSON-RPC chain that is not there, stops, never answers or never mines raises fedledger's
errors (ChainUnavailable, with the transport's error as its cause), never web3's or requests'.

The cases that apply to both backends (reverts, malformed addresses, no contract, unknown
blocks) are in the shared suite, tests/ledger/test_chain_suite.py.
"""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Callable

import pytest
import requests

from fedledger.errors import ChainUnavailable, ConfigError
from fedledger.gossip.identity import Identity
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import RpcChain
from fedledger.ledger.chain.anvil import start_anvil
from fedledger.ledger.contract_ledger import ContractLedger, deploy_task
from fedledger.ledger.messages import RoundMessage
from tests.support import refusing_port, wait_until

from .test_chain_suite import anvil_binary, raised_by
from .test_ledger_suite import task_config


def assert_unavailable(error: BaseException) -> None:
    assert type(error) is ChainUnavailable, repr(error)
    assert error.__cause__ is not None
    assert not type(error.__cause__).__module__.startswith(("fedledger", "web3"))


def test_nothing_listening_is_chain_unavailable() -> None:
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}"
        error = raised_by(lambda: RpcChain(url, request_timeout=1.0))
    assert_unavailable(error)
    assert isinstance(error.__cause__, requests.ConnectionError)
    assert url in str(error)


def test_a_node_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        error = raised_by(lambda: RpcChain(f"http://127.0.0.1:{port}", request_timeout=0.2))
    assert_unavailable(error)
    assert isinstance(error.__cause__, requests.Timeout)


@pytest.mark.parametrize("url", ["127.0.0.1:8545", "ftp://127.0.0.1:8545", "http://", ""])
def test_a_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RpcChain(url)
    assert caught.value.field == "url"


def test_a_malformed_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        RpcChain("http://127.0.0.1:8545", private_key="0x1234")
    assert caught.value.field == "private_key"


def test_every_method_of_a_stopped_chain_is_chain_unavailable() -> None:
    node = start_anvil(anvil=anvil_binary())
    try:
        chain = node.chain(request_timeout=2.0)
        owner, other = chain.accounts()[:2]
        address, _ = deploy_task(chain, task_config(), owner=owner)
        ledger = ContractLedger(chain, address, owner)
        task = ledger.contract
        receipt = chain.transact(task.functions.start(), sender=owner)
        assert ledger.current_round() == 1
        chain_id = ledger.chain_id
        abi = task.abi
    finally:
        node.stop()
    token = load_artifact("RewardToken")
    # A member's signed round message (signing needs no chain; submitting it does).
    member = Identity.from_hex("0x" + bytes(other.key).hex())
    message = RoundMessage(round=1, update=b"\x01" * 32, examples=1).sign(member, chain_id, address)
    calls: dict[str, Callable[[], object]] = {
        "block_number": chain.block_number,
        "block_timestamp": lambda: chain.block_timestamp(receipt.block),
        "now": chain.now,
        "balance": lambda: chain.balance(other.address),
        "code": lambda: chain.code(address),
        "call": lambda: chain.call(task.functions.current_round()),
        "events": lambda: chain.events(task.events.RoundStarted(), from_block=0),
        "logs": lambda: chain.logs(address, from_block=0),
        "transact": lambda: chain.transact(task.functions.start(), sender=owner, gas=100_000),
        "transfer": lambda: chain.transfer(other.address, 1, sender=owner),
        "deploy": lambda: chain.deploy(
            token["abi"], token["bytecode"], "t", "T", 18, "t", "1", sender=owner, gas=5_000_000
        ),
        "raw_transaction": lambda: chain.raw_transaction(receipt.tx_hash),
        "transaction_input": lambda: chain.transaction_input(receipt.tx_hash),
        "time_travel": lambda: chain.time_travel(1),
        "ledger.rules": ContractLedger(chain, address, None).rules,
        "ledger.events": lambda: ledger.events(0),
        "ledger.members": ledger.members,
        "ledger.phase": lambda: ledger.phase(1),
        "ledger.submit": lambda: ledger.submit(1, [message]),
        "ledger.claim": lambda: ledger.claim(other.address),
    }
    raised = {name: raised_by(call) for name, call in calls.items()}
    assert {name: type(e) for name, e in raised.items()} == dict.fromkeys(calls, ChainUnavailable)
    for error in raised.values():
        assert_unavailable(error)
    # What needs no request still works.
    assert chain.contract(address, abi).address == address
    assert len(chain.accounts()) == 10


def test_anvil_stopped_while_a_transaction_waits_for_its_receipt() -> None:
    with start_anvil(anvil=anvil_binary(), extra_args=["--no-mining"]) as node:
        chain = node.chain(request_timeout=2.0)
        sender, receiver = chain.accounts()[:2]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(chain.transfer, receiver.address, 1, sender=sender, timeout=60)
            wait_until(
                lambda: chain.w3.eth.get_transaction_count(sender.address, "pending") == 1,
                timeout=60,
                what="the transfer to be pending",
            )
            node.stop()
            error = waiting.exception(timeout=60)
    assert error is not None
    assert_unavailable(error)
    assert "lost while waiting" in str(error)


def test_no_receipt_in_time_is_chain_unavailable() -> None:
    with start_anvil(anvil=anvil_binary(), extra_args=["--no-mining"]) as node:
        chain = node.chain()
        sender, receiver = chain.accounts()[:2]
        before = chain.balance(receiver.address)
        with pytest.raises(ChainUnavailable, match="no receipt"):
            chain.transfer(receiver.address, 1, sender=sender, timeout=0.2)
        chain.time_travel(1)  # mines the pending transfer: the chain is fine, only slow
        assert chain.balance(receiver.address) == before + 1
