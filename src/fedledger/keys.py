"""Which keys fedledger uses, where their passwords come from, and who deploys a task.

Key choice (``fedledger run``; docs/keys.md):

* **Seeded keys** (:meth:`Identity.from_seed`, derived from the task's *public* seed) only where
  nothing of value is at stake: no chain, the embedded chain, or a JSON-RPC chain that is a
  *local development chain* (:func:`is_dev_chain`: chain id 31337, anvil's and hardhat's, or
  1337, ganache's and ``geth --dev``'s, at a loopback address). They make simulations
  reproducible, address for address.
* **Random keys** (:meth:`Identity.generate`) on any other chain: anyone holding task.toml could
  otherwise sign for the nodes and take their stakes.

Passwords of encrypted keystores never come from the command line (it shows in ``ps`` and in
shell histories): a password file (``--password-file``, mode 0600), or else the environment
variable ``FEDLEDGER_KEY_PASSWORD``. The key that deploys a task on a JSON-RPC chain comes
from ``--deployer-keyfile`` (hex or keystore) or ``FEDLEDGER_DEPLOYER_KEY`` (hex); anvil's
first development account is the default on a development chain only.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from fedledger.errors import ConfigError
from fedledger.gossip.identity import Identity, read_private_file

__all__ = [
    "DEPLOYER_KEY_ENV",
    "DEV_CHAIN_IDS",
    "PASSWORD_ENV",
    "deployer_identity",
    "dev_deployer_key",
    "is_dev_chain",
    "key_password",
    "load_key",
    "node_identities",
]

DEV_CHAIN_IDS = frozenset({31337, 1337})
"""Chain ids of local development chains: 31337 (anvil, hardhat), 1337 (ganache, geth --dev)."""
PASSWORD_ENV = "FEDLEDGER_KEY_PASSWORD"
"""The environment variable holding the password of an encrypted keystore."""
DEPLOYER_KEY_ENV = "FEDLEDGER_DEPLOYER_KEY"
"""The environment variable holding the deployer's key (hex) for ``fedledger run --chain URL``."""


def _is_loopback(url: str) -> bool:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_dev_chain(chain_id: int, url: str) -> bool:
    """Whether the chain at ``url`` is a local development chain: a chain id in
    :data:`DEV_CHAIN_IDS` *and* a loopback host. A private network that happens to use 1337,
    reached over the network, is not one."""
    return chain_id in DEV_CHAIN_IDS and _is_loopback(url)


def node_identities(seed: int, n: int, *, seeded: bool) -> list[Identity]:
    """Keys for the ``n`` nodes of a run: derived from ``seed`` (reproducible, public: local
    simulations and development chains only) or fresh random keys."""
    if seeded:
        return [Identity.from_seed(seed, i) for i in range(n)]
    return [Identity.generate() for _ in range(n)]


def key_password(
    password_file: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> str | None:
    """The keystore password: the first line of ``password_file`` (which must be private, mode
    0600, like a key), or else ``$FEDLEDGER_KEY_PASSWORD``; None when neither is set."""
    if password_file is not None:
        raw = read_private_file(password_file, what="password file")
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise ConfigError(f"password file {os.fspath(password_file)!r} is not UTF-8") from None
        if not lines or not lines[0]:
            raise ConfigError(f"password file {os.fspath(password_file)!r} is empty")
        return lines[0]
    env = os.environ if environ is None else environ
    return env.get(PASSWORD_ENV) or None


def load_key(path: Path, *, password_file: Path | None = None) -> Identity:
    """A key file (hex or keystore), its password from :func:`key_password` if needed."""
    return Identity.load(path, password=key_password(password_file))


def deployer_identity(
    *,
    keyfile: Path | None = None,
    password_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Identity | None:
    """The deployer's key from ``keyfile`` (hex or keystore) or ``$FEDLEDGER_DEPLOYER_KEY``
    (hex); None if neither is given. Both at once is an error."""
    env = os.environ if environ is None else environ
    text = env.get(DEPLOYER_KEY_ENV) or None
    if keyfile is not None and text is not None:
        raise ConfigError(
            f"give the deployer's key once: {DEPLOYER_KEY_ENV} or --deployer-keyfile, not both",
            field="deployer",
        )
    if keyfile is not None:
        return Identity.load(keyfile, password=key_password(password_file, environ=env))
    if text is not None:
        try:
            return Identity.from_hex(text)
        except ConfigError as exc:
            raise ConfigError(f"{DEPLOYER_KEY_ENV}: {exc}") from None
    return None


def dev_deployer_key() -> bytes:
    """The key of anvil's (and hardhat's) first development account: public, so for
    development chains only."""
    from fedledger.ledger.chain.anvil import mnemonic_accounts

    return bytes(mnemonic_accounts(1)[0].key)
