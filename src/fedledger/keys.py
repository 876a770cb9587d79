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

Key files for real deployments (``fedledger keys``; docs/keys.md): :func:`new_key_file` writes
a fresh random key, :func:`import_key_file` an existing one (from a private file or
``$FEDLEDGER_IMPORT_KEY``), both as encrypted keystores unless asked for plain hex, never over
an existing file; :func:`fund` sends ETH from the deployer's key (:func:`funding_identity`) to
the addresses of such keys, so that they can stake and pay for gas.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from urllib.parse import urlsplit

from fedledger.errors import ConfigError, LedgerError
from fedledger.gossip.identity import (
    Identity,
    checksum_address,
    is_checksum_address,
    read_private_file,
)

__all__ = [
    "DEPLOYER_KEY_ENV",
    "DEV_CHAIN_IDS",
    "IMPORT_KEY_ENV",
    "LIGHT_SCRYPT_N",
    "PASSWORD_ENV",
    "WEI_PER_ETH",
    "Transfer",
    "balance",
    "deployer_identity",
    "dev_deployer_key",
    "format_eth",
    "fund",
    "funding_identity",
    "import_key_file",
    "imported_key",
    "is_dev_chain",
    "key_password",
    "load_key",
    "new_key_file",
    "node_identities",
    "parse_address",
    "parse_addresses",
    "parse_eth",
]

DEV_CHAIN_IDS = frozenset({31337, 1337})
"""Chain ids of local development chains: 31337 (anvil, hardhat), 1337 (ganache, geth --dev)."""
PASSWORD_ENV = "FEDLEDGER_KEY_PASSWORD"
"""The environment variable holding the password of an encrypted keystore."""
DEPLOYER_KEY_ENV = "FEDLEDGER_DEPLOYER_KEY"
"""The environment variable holding the deployer's key (hex) for ``fedledger run --chain URL``."""
IMPORT_KEY_ENV = "FEDLEDGER_IMPORT_KEY"
"""The environment variable holding a key (hex) for ``fedledger keys import``."""
WEI_PER_ETH = 10**18
LIGHT_SCRYPT_N = 2**12
"""scrypt's work factor for ``--light-kdf`` keystores (geth's ``--lightkdf``): 4 MiB and a few
milliseconds instead of 256 MiB and about a second, for small machines, at some expense of
strength against guessing the password."""


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
    option: str = "--deployer-keyfile",
) -> Identity | None:
    """The deployer's key from ``keyfile`` (hex or keystore) or ``$FEDLEDGER_DEPLOYER_KEY``
    (hex); None if neither is given. Both at once is an error (naming ``option``, the
    command line's name for ``keyfile``)."""
    env = os.environ if environ is None else environ
    text = env.get(DEPLOYER_KEY_ENV) or None
    if keyfile is not None and text is not None:
        raise ConfigError(
            f"give the deployer's key once: {DEPLOYER_KEY_ENV} or {option}, not both",
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


# --------------------------------------------------------------------------------------------
# Key files for real deployments: fedledger keys new / import / address / fund
# --------------------------------------------------------------------------------------------

_NO_PASSWORD = (
    "no password for the keystore: put it on the first line of a file only you can read "
    "(chmod 600) and give --password-file FILE, or set " + PASSWORD_ENV
)


def _check_new(out: Path) -> None:
    """Refuse, before any work, to write a key over an existing file."""
    if os.path.lexists(out):
        raise ConfigError(
            f"{os.fspath(out)!r} already exists: a key file is never overwritten (move it "
            "away or choose another --out)",
            field="out",
        )


def new_key_file(
    out: Path, *, password: str | None, plain: bool = False, light_kdf: bool = False
) -> Identity:
    """A fresh random key, written to ``out`` (mode 0600 from the start, never over an
    existing file): an encrypted keystore with ``password`` (scrypt n = 2**18, or
    :data:`LIGHT_SCRYPT_N` with ``light_kdf``), or with ``plain`` hex (for local development
    chains only). No password and not ``plain`` is a :class:`ConfigError` saying how to give
    one."""
    _check_new(out)
    if not plain and not password:
        raise ConfigError(f"{_NO_PASSWORD}; or --plain for an unencrypted hex key file (local "
                          "development chains only)")  # fmt: skip
    identity = Identity.generate()
    _save(identity, out, None if plain else password, light_kdf=light_kdf)
    return identity


def _save(identity: Identity, out: Path, password: str | None, *, light_kdf: bool) -> None:
    if password is None:
        identity.save(out, overwrite=False)
    else:
        n = LIGHT_SCRYPT_N if light_kdf else None
        identity.save_keystore(out, password, iterations=n, overwrite=False)


def imported_key(
    hex_file: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Identity:
    """An existing key in hex, from ``hex_file`` (which must be private, mode 0600) or
    ``$FEDLEDGER_IMPORT_KEY``: exactly one of them. The key is never quoted in an error."""
    env = os.environ if environ is None else environ
    text = env.get(IMPORT_KEY_ENV) or None
    if hex_file is not None and text is not None:
        raise ConfigError(f"give the key once: --hex-file or {IMPORT_KEY_ENV}, not both")
    if hex_file is not None:
        raw = read_private_file(hex_file, what="hex key file")
        try:
            return Identity.from_hex(raw.decode("utf-8"))
        except (UnicodeDecodeError, ConfigError):
            raise ConfigError(f"hex key file {os.fspath(hex_file)!r}: a private key in hex is "
                              "64 hex digits (with an optional 0x)") from None  # fmt: skip
    if text is not None:
        try:
            return Identity.from_hex(text)
        except ConfigError as exc:
            raise ConfigError(f"{IMPORT_KEY_ENV}: {exc}") from None
    raise ConfigError(f"no key to import: give --hex-file FILE (mode 0600) or set "
                      f"{IMPORT_KEY_ENV} (never on the command line)")  # fmt: skip


def import_key_file(
    out: Path,
    *,
    password: str | None,
    hex_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    light_kdf: bool = False,
) -> Identity:
    """The key of :func:`imported_key`, saved to ``out`` as an encrypted keystore (mode 0600,
    never over an existing file; ``light_kdf`` as for :func:`new_key_file`)."""
    _check_new(out)
    if not password:
        raise ConfigError(_NO_PASSWORD)
    identity = imported_key(hex_file, environ=environ)
    _save(identity, out, password, light_kdf=light_kdf)
    return identity


def parse_address(text: str) -> str:
    """An Ethereum address, checksummed: ``0x`` and 40 hex digits, either all one case or in
    its exact EIP-55 form (a mixed-case address with a wrong checksum is a typo). The zero
    address is refused (what is sent there is lost)."""
    value = text.strip()
    body = value[2:] if value[:2] in ("0x", "0X") else ""
    try:
        raw = bytes.fromhex(body) if len(body) == 40 else b""
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise ConfigError(f"not an address (0x and 40 hex digits): {text!r}", field="address")
    if body not in (body.lower(), body.upper()) and not is_checksum_address("0x" + body):
        raise ConfigError(f"{text!r} fails its EIP-55 checksum: a typo?", field="address")
    if not any(raw):
        raise ConfigError("the zero address: what is sent there is lost", field="address")
    return checksum_address(raw)


def parse_addresses(texts: Sequence[str]) -> list[str]:
    """:func:`parse_address` of each; an address listed twice is refused (a copy-paste slip
    would otherwise pay it twice)."""
    if not texts:
        raise ConfigError("no address given", field="address")
    addresses = [parse_address(text) for text in texts]
    twice = sorted({a for a in addresses if addresses.count(a) > 1})
    if twice:
        raise ConfigError(f"listed more than once: {', '.join(twice)}", field="address")
    return addresses


def parse_eth(text: str) -> int:
    """An amount of ETH (a decimal number, e.g. ``0.5``) in wei: positive, finite, at most 18
    decimals."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(f"not an amount of ETH: {text!r}", field="eth") from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigError(f"an amount of ETH is a positive number, got {text!r}", field="eth")
    with localcontext() as exact:
        exact.prec = 200  # no rounding: 2**256 wei has 78 digits
        if amount >= Decimal(2**256) / WEI_PER_ETH:
            raise ConfigError(f"{text!r}: more ETH than can exist (2**256 wei)", field="eth")
        wei = amount.scaleb(18)
        if wei != wei.to_integral_value():
            raise ConfigError(f"{text!r}: at most 18 decimals (1 wei = 1e-18 ETH)", field="eth")
        return int(wei)


def format_eth(wei: int) -> str:
    """``wei`` in ETH, exactly, without an exponent: ``1.5``, ``10000``, ``0.000001``."""
    with localcontext() as exact:
        exact.prec = 200
        text = format(Decimal(wei).scaleb(-18), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def balance(url: str, address: str) -> int:
    """The balance of ``address`` on the chain at ``url``, in wei."""
    from fedledger.ledger.chain import RpcChain

    return RpcChain(url).balance(address)


def funding_identity(
    url: str,
    *,
    keyfile: Path | None = None,
    password_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Identity:
    """The key that funds: the deployer's (:func:`deployer_identity`, ``keyfile`` being
    ``--from-keyfile``), else anvil's first development account, on a local development chain
    (:func:`is_dev_chain`) only."""
    from fedledger.ledger.chain import RpcChain

    if password_file is not None and keyfile is None:
        raise ConfigError("--password-file unlocks the --from-keyfile keystore: give both",
                          field="password-file")  # fmt: skip
    identity = deployer_identity(keyfile=keyfile, password_file=password_file,
                                 environ=environ, option="--from-keyfile")  # fmt: skip
    if identity is not None:
        return identity
    chain_id = RpcChain(url).chain_id
    if not is_dev_chain(chain_id, url):
        raise ConfigError(f"the chain at {url} (chain id {chain_id}) is not a local "
                          "development chain: give the funding key with --from-keyfile FILE "
                          f"or {DEPLOYER_KEY_ENV}", field="deployer")  # fmt: skip
    return Identity.from_hex(dev_deployer_key().hex())


@dataclass(frozen=True)
class Transfer:
    """One transfer made by :func:`fund`."""

    to: str
    wei: int
    tx_hash: str
    block: int


def fund(
    url: str,
    addresses: Sequence[str],
    wei: int,
    *,
    sender: Identity,
    on_transfer: Callable[[Transfer], None] | None = None,
) -> list[Transfer]:
    """Send ``wei`` from ``sender`` to each of ``addresses`` (checked with
    :func:`parse_addresses`) on the chain at ``url``, one transaction each,
    waiting for each to be mined. Refused before anything is sent if ``sender``'s balance
    cannot cover them all; ``on_transfer`` hears of each as it is mined."""
    from fedledger.ledger.chain import RpcChain

    if wei <= 0:
        raise ConfigError(f"must be positive, got {wei} wei", field="eth")
    targets = parse_addresses(addresses)
    chain = RpcChain(url, private_key=sender.private_key)
    account = chain.accounts()[0]
    have = chain.balance(sender.address)
    need = wei * len(targets)
    if have < need:
        raise LedgerError(
            f"the funding account {sender.address} has {format_eth(have)} ETH on the chain at "
            f"{url}; {len(targets)} transfer(s) of {format_eth(wei)} ETH need "
            f"{format_eth(need)} ETH plus gas"
        )
    done: list[Transfer] = []
    for target in targets:
        receipt = chain.transfer(target, wei, sender=account)
        transfer = Transfer(to=target, wei=wei, tx_hash=receipt.tx_hash, block=receipt.block)
        done.append(transfer)
        if on_transfer is not None:
            on_transfer(transfer)
    return done
