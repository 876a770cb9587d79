"""A chain behind a JSON-RPC HTTP URL: :class:`RpcChain` (tested against anvil)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint

from fedledger.errors import ConfigError
from fedledger.ledger.chain.base import translated
from fedledger.ledger.chain.web3 import READ_ATTEMPTS, Web3Chain

__all__ = ["RpcChain"]

_SCHEMES: Final = ("http", "https")


class RpcChain(Web3Chain):
    """A chain behind a JSON-RPC HTTP URL (anvil, a testnet node, ...).

    Give the keys that will sign, as ``private_key`` (one) or ``accounts`` (several; keys or
    ``LocalAccount``\\ s); :meth:`accounts` returns them. With neither the chain is read-only.
    A node that cannot be reached (nothing listening, stopped, timed out after
    ``request_timeout`` seconds) raises :class:`~fedledger.errors.ChainUnavailable`, already on
    construction (it reads the chain id); idempotent reads are retried a few times first.
    """

    _read_attempts = READ_ATTEMPTS

    def __init__(
        self,
        url: str,
        *,
        private_key: str | bytes | None = None,
        accounts: Sequence[LocalAccount | str | bytes] | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        if private_key is not None and accounts is not None:
            raise ConfigError("give private_key or accounts, not both", field="accounts")
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError(f"not an http(s) JSON-RPC URL: {url!r}", field="url")
        keys: list[LocalAccount | str | bytes] = (
            [private_key] if private_key is not None else list(accounts or [])
        )
        try:
            local = [k if isinstance(k, LocalAccount) else Account.from_key(k) for k in keys]
        except (ValueError, TypeError) as exc:
            field = "private_key" if private_key is not None else "accounts"
            raise ConfigError(f"not a private key: {exc}", field=field) from exc
        self.url = url
        provider = HTTPProvider(
            url,
            request_kwargs={"timeout": request_timeout},
            exception_retry_configuration=None,  # retries are ours, for idempotent calls only
        )
        super().__init__(Web3(provider), local)

    def _where(self) -> str:
        return f"chain at {self.url}"

    @translated
    def time_travel(self, seconds: int) -> None:
        if seconds < 0:
            raise ConfigError(f"cannot travel back in time ({seconds} s)", field="seconds")
        manager = self.w3.manager
        self._read(lambda: manager.request_blocking(RPCEndpoint("evm_increaseTime"), [seconds]))
        self._read(lambda: manager.request_blocking(RPCEndpoint("evm_mine"), []))
