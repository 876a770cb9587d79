"""The local anvil: find/install, start, stop, loopback only, several at once."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from fedledger.errors import ChainUnavailable, ConfigError, LedgerError
from fedledger.ledger.chain import RpcChain
from fedledger.ledger.chain.anvil import (
    ANVIL_CHAIN_ID,
    ENV_ANVIL,
    find_anvil,
    install_anvil,
    mnemonic_accounts,
    project_root,
    start_anvil,
)
from tests.support import refusing_port, wait_until

from .test_chain_suite import REPO_ROOT, anvil_binary


def rpc(url: str, method: str, params: list[object] | None = None) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["result"]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (no packet is sent), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 1))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_repository_pins_anvil() -> None:
    assert project_root() == REPO_ROOT
    manifest = json.loads((REPO_ROOT / "package.json").read_text())
    assert manifest["devDependencies"] == {"@foundry-rs/anvil": "1.7.1"}
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@foundry-rs/anvil"]["version"] == "1.7.1"


def test_find_prefers_the_native_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_ANVIL, raising=False)
    binary = anvil_binary()
    found = find_anvil(REPO_ROOT)
    assert found == binary
    if REPO_ROOT in found.parents:  # installed by npm: the platform package, not the wrapper
        assert ".bin" not in found.parts
    monkeypatch.setenv(ENV_ANVIL, "/opt/elsewhere/anvil")
    assert find_anvil(REPO_ROOT) == Path("/opt/elsewhere/anvil")


def test_install_is_a_no_op_when_installed() -> None:
    binary = anvil_binary()
    if REPO_ROOT not in binary.parents:
        pytest.skip("anvil comes from PATH here, not from the repository's node_modules")
    assert install_anvil(REPO_ROOT) == binary


def test_install_without_npm_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "package.json").write_text('{"devDependencies": {"@foundry-rs/anvil": "1.7.1"}}')
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(LedgerError, match="npm not found"):
        install_anvil(tmp_path)
    with pytest.raises(LedgerError, match=r"no package\.json"):
        install_anvil(tmp_path / "nowhere")


def test_start_answers_and_stop_ends_it() -> None:
    with start_anvil(anvil=anvil_binary()) as node:
        assert node.running
        assert node.url == f"http://127.0.0.1:{node.port}"
        assert int(str(rpc(node.url, "eth_chainId")), 16) == ANVIL_CHAIN_ID
        assert node.log_path.is_file()
        assert "Listening on" in node.log_tail()
        # Its accounts are those of the default mnemonic, with their keys.
        node_accounts = [str(a).lower() for a in rpc(node.url, "eth_accounts")]  # type: ignore[attr-defined]
        assert [a.address.lower() for a in node.accounts()] == node_accounts
        assert mnemonic_accounts(2)[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert node.process.poll() is not None
    assert not node.log_path.exists()  # a temporary log is removed
    node.stop()  # idempotent


def test_binds_loopback_only() -> None:
    with start_anvil(anvil=anvil_binary()) as node:
        listening = listening_addresses(node.port)
        if listening:  # Linux: the listening socket is 127.0.0.1 only
            assert listening == {"0100007F"}
        outside = non_loopback_address()
        if outside is not None:
            with (
                pytest.raises((ConnectionRefusedError, TimeoutError)),
                socket.create_connection((outside, node.port), 1),
            ):
                pass
    with pytest.raises(ConfigError):
        start_anvil(host="0.0.0.0", anvil=anvil_binary())


def test_two_anvils_at_once() -> None:
    with (
        start_anvil(anvil=anvil_binary()) as first,
        start_anvil(anvil=anvil_binary(), chain_id=4242) as second,
    ):
        assert first.port != second.port
        one, two = first.chain(), second.chain()
        assert (one.chain_id, two.chain_id) == (ANVIL_CHAIN_ID, 4242)
        sender = one.accounts()[0]
        one.transfer(one.accounts()[1].address, 1, sender=sender)
        assert one.block_number() == 1
        assert two.block_number() == 0  # separate chains


def test_stop_frees_the_port(tmp_path: Path) -> None:
    log = tmp_path / "anvil.log"
    node = start_anvil(anvil=anvil_binary(), log_path=log)
    port = node.port
    chain = node.chain()
    assert chain.block_number() == 0
    node.stop()
    assert not node.running
    assert log.is_file()  # a log the caller chose is kept
    with pytest.raises(ChainUnavailable):
        chain.block_number()
    with pytest.raises(ChainUnavailable):
        chain.transfer(chain.accounts()[1].address, 1, sender=chain.accounts()[0])
    with start_anvil(anvil=anvil_binary(), port=port) as again:
        assert again.port == port
        assert int(str(rpc(again.url, "eth_chainId")), 16) == ANVIL_CHAIN_ID


def test_block_time_mines_on_an_interval() -> None:
    with start_anvil(anvil=anvil_binary(), block_time=0.2) as node:
        chain = node.chain()
        receipt = chain.transfer(chain.accounts()[1].address, 1, sender=chain.accounts()[0])
        assert receipt.status == 1
        # Blocks come on the interval, transactions or not (mining on demand would stay put).
        mined = chain.block_number()
        wait_until(
            lambda: chain.block_number() >= mined + 2,
            timeout=60,
            what="anvil to mine empty blocks on its interval",
        )


def test_unreachable_url_is_chain_unavailable() -> None:
    with refusing_port() as port, pytest.raises(ChainUnavailable):
        RpcChain(f"http://127.0.0.1:{port}", request_timeout=1.0)


def test_missing_or_broken_binary(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cannot run anvil"):
        start_anvil(anvil=tmp_path / "no-such-anvil")
    broken = tmp_path / "anvil"
    broken.write_text("#!/bin/sh\necho 'not really anvil'\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(ChainUnavailable, match="exited with status 3"):
        start_anvil(anvil=broken)
