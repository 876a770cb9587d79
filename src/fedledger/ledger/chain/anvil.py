"""A local anvil (Foundry's dev node) for :class:`~fedledger.ledger.chain.rpc.RpcChain`.

anvil comes from npm: the repository's ``package.json`` / ``package-lock.json`` pin
``@foundry-rs/anvil`` as a dev dependency, so ``npm ci`` (or :func:`install_anvil`) in the
repository root puts it under ``node_modules/``. That package's ``.bin/anvil`` is a Node wrapper
around a native binary shipped in a per-platform optional package
(``@foundry-rs/anvil-linux-amd64``, ...); :func:`find_anvil` prefers the native binary, so that
stopping the process stops anvil itself.

:func:`start_anvil` runs one on the loopback interface, waits until its JSON-RPC answers and
returns an :class:`AnvilProcess` (a context manager). Several can run at once (port 0 lets
anvil pick a free port). By default its chain lives in memory and ends with it; with
``state=PATH`` anvil loads the chain from PATH if the file exists, dumps it there every
``state_interval`` seconds and on exit (SIGTERM or SIGINT, which :meth:`AnvilProcess.stop`
sends before waiting), so that the next start goes on where the last one stopped. Its
accounts are the well-known test accounts of anvil's default mnemonic
(:func:`mnemonic_accounts`): never use them for anything of value.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from eth_account.signers.local import LocalAccount

from fedledger.errors import ChainUnavailable, ConfigError, LedgerError
from fedledger.ledger.chain.rpc import RpcChain

__all__ = [
    "ANVIL_MNEMONIC",
    "ANVIL_PACKAGE",
    "AnvilProcess",
    "find_anvil",
    "install_anvil",
    "mnemonic_accounts",
    "project_root",
    "start_anvil",
]

ANVIL_PACKAGE: Final = "@foundry-rs/anvil"
ANVIL_MNEMONIC: Final = "test test test test test test test test test test test junk"
"""anvil's default mnemonic: its funded accounts' keys are public knowledge."""
ANVIL_CHAIN_ID: Final = 31337
ENV_ANVIL: Final = "FEDLEDGER_ANVIL"
"""Environment variable: path of an anvil binary to use before looking anywhere else."""

_NPM_TIMEOUT: Final = 600.0
_LOG_TAIL: Final = 2000
_STOP_TIMEOUT: Final = 5.0
_DUMP_TIMEOUT: Final = 120.0
"""Seconds a stopping anvil has to dump its state before it is killed."""
STATE_INTERVAL: Final = 5
"""Default seconds between two dumps of a persisted anvil's state (what a crash may lose)."""


def project_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` (default: this file, then the working
    directory) whose package.json depends on anvil; None outside a source checkout."""
    starts = [start] if start is not None else [Path(__file__).resolve(), Path.cwd()]
    for origin in starts:
        for directory in [origin, *origin.parents]:
            manifest = directory / "package.json"
            if manifest.is_file() and _depends_on_anvil(manifest):
                return directory
    return None


def _depends_on_anvil(manifest: Path) -> bool:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(
        ANVIL_PACKAGE in (data.get(key) or {}) for key in ("dependencies", "devDependencies")
    )


def _platform_package() -> tuple[str, str] | None:
    """(npm package, binary name) of anvil's native build for this machine."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    system = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform)
    if arch is None or system is None:
        return None
    binary = "anvil.exe" if system == "win32" else "anvil"
    return f"{ANVIL_PACKAGE}-{system}-{arch}", binary


def _in_node_modules(root: Path) -> Path | None:
    modules = root / "node_modules"
    native = _platform_package()
    candidates = []
    if native is not None:
        package, binary = native
        candidates.append(modules / package / "bin" / binary)
    candidates.append(modules / ".bin" / ("anvil.cmd" if sys.platform == "win32" else "anvil"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_anvil(repo_root: Path | None = None) -> Path | None:
    """An anvil binary: ``$FEDLEDGER_ANVIL``, then the repository's node_modules (the native
    binary, then ``.bin/anvil``), then ``anvil`` on PATH; None if there is none."""
    override = os.environ.get(ENV_ANVIL)
    if override:
        return Path(override)
    root = repo_root if repo_root is not None else project_root()
    if root is not None:
        found = _in_node_modules(root)
        if found is not None:
            return found
    on_path = shutil.which("anvil")
    return Path(on_path) if on_path else None


@contextlib.contextmanager
def _install_lock(repo_root: Path) -> Iterator[None]:
    """Serialize concurrent installs into one repository (e.g. pytest-xdist workers)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    digest = hashlib.sha256(str(repo_root.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"fedledger-npm-{digest}.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install_anvil(repo_root: Path) -> Path:
    """Install the pinned anvil with ``npm install --no-audit --no-fund`` in ``repo_root``
    (which holds package.json and package-lock.json); return the binary."""
    if not (repo_root / "package.json").is_file():
        raise LedgerError(f"no package.json in {repo_root}: cannot install anvil there")
    npm = shutil.which("npm")
    if npm is None:
        raise LedgerError(
            "npm not found: install Node.js >= 20 with npm (then `npm ci` in the repository "
            "root installs anvil), or put an anvil binary on PATH or in $FEDLEDGER_ANVIL"
        )
    with _install_lock(repo_root):
        found = _in_node_modules(repo_root)
        if found is not None:
            return found
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund"],
                cwd=repo_root,
                capture_output=True,
                text=True,
                timeout=_NPM_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LedgerError(f"npm install failed in {repo_root}: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout)[-_LOG_TAIL:]
            raise LedgerError(f"npm install failed in {repo_root} ({done.returncode}):\n{tail}")
        found = _in_node_modules(repo_root)
        if found is None:
            raise LedgerError(
                f"npm install succeeded but {repo_root}/node_modules has no anvil binary for "
                f"this platform ({sys.platform} {platform.machine()})"
            )
        return found


@lru_cache(maxsize=8)
def _derive(mnemonic: str, count: int) -> tuple[LocalAccount, ...]:
    seed = seed_from_mnemonic(mnemonic, "")
    return tuple(
        Account.from_key(key_from_seed(seed, f"m/44'/60'/0'/0/{index}")) for index in range(count)
    )


def mnemonic_accounts(count: int = 10, mnemonic: str = ANVIL_MNEMONIC) -> list[LocalAccount]:
    """The first ``count`` accounts of ``mnemonic`` on anvil's path m/44'/60'/0'/0/i."""
    return list(_derive(mnemonic, count))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _rpc(url: str, method: str, params: Sequence[object] = (), timeout: float = 2.0) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise LedgerError(f"{method}: {answer['error']}")
    return answer["result"]


class AnvilProcess:
    """A running anvil. Use as a context manager, or call :meth:`stop`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        host: str,
        port: int,
        log_path: Path,
        log_file: IO[bytes],
        owns_log: bool,
        accounts: int,
        mnemonic: str,
        state: Path | None = None,
        state_loaded: bool = False,
    ) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        self.log_path = log_path
        self._log_file = log_file
        self._owns_log = owns_log
        self._accounts = accounts
        self._mnemonic = mnemonic
        self.state = state
        """The file anvil keeps its chain in (loaded on start, dumped on exit); None: memory."""
        self.state_loaded = state_loaded
        """Whether the chain was reloaded from :attr:`state` (False: a new chain)."""
        # Do not leave an orphan anvil behind if the caller forgets to stop it.
        grace = _STOP_TIMEOUT if state is None else _DUMP_TIMEOUT
        self._finalizer = weakref.finalize(self, _terminate, process, log_file, grace)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def accounts(self) -> list[LocalAccount]:
        """The node's funded accounts (with keys)."""
        return mnemonic_accounts(self._accounts, self._mnemonic)

    def chain(self, *, request_timeout: float = 10.0) -> RpcChain:
        """An :class:`RpcChain` on this node, signing with its funded accounts."""
        return RpcChain(self.url, accounts=self.accounts(), request_timeout=request_timeout)

    def log_tail(self, size: int = _LOG_TAIL) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float | None = None) -> None:
        """Stop anvil (SIGTERM, then SIGKILL after ``timeout`` seconds: 5 by default, 120
        with a :attr:`state` file, which anvil writes on its way out) and free its port.
        Idempotent."""
        if not self._finalizer.alive:
            return
        self._finalizer.detach()
        if timeout is None:
            timeout = _STOP_TIMEOUT if self.state is None else _DUMP_TIMEOUT
        _terminate(self.process, self._log_file, timeout)
        if self._owns_log:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def __enter__(self) -> AnvilProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"AnvilProcess(url={self.url!r}, pid={self.pid}, {state})"


def _terminate(process: subprocess.Popen[bytes], log_file: IO[bytes], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log_file.close()


def _listening_port(log_path: Path) -> int | None:
    """The port from anvil's "Listening on 127.0.0.1:8545" line, once it is printed."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Listening on "):
            try:
                return int(line.rsplit(":", 1)[1])
            except (IndexError, ValueError):
                return None
    return None


def start_anvil(
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    block_time: float | None = None,
    accounts: int = 10,
    chain_id: int | None = None,
    gas_limit: int | None = None,
    extra_args: Sequence[str] = (),
    anvil: Path | None = None,
    log_path: Path | None = None,
    startup_timeout: float = 20.0,
    state: Path | None = None,
    state_interval: int = STATE_INTERVAL,
) -> AnvilProcess:
    """Start anvil on ``host:port`` (``port=0``: a free port) and wait until it answers.

    ``host`` must be a loopback address: anvil's accounts are unlocked and their keys public.
    ``block_time`` (seconds) switches from mining each transaction at once to interval mining.
    stdout and stderr go to ``log_path`` (default: a temporary file, removed on stop).

    ``state``: the file that keeps the chain across restarts (anvil's ``--state``): loaded if
    it exists, dumped every ``state_interval`` seconds and when anvil stops (its directory is
    created if missing). None (the default): the chain lives in memory only. A state file
    anvil cannot load is a :class:`LedgerError` naming it.
    """
    if not _is_loopback(host):
        raise ConfigError(f"anvil binds loopback addresses only, not {host!r}", field="host")
    if not 0 <= port <= 65535:
        raise ConfigError(f"not a port: {port}", field="port")
    if block_time is not None and block_time <= 0:
        raise ConfigError(f"must be positive, got {block_time}", field="block_time")
    if state is not None and not (isinstance(state_interval, int) and state_interval > 0):
        raise ConfigError(f"must be a positive number of seconds, got {state_interval!r}",
                          field="state_interval")  # fmt: skip
    binary = anvil if anvil is not None else find_anvil()
    if binary is None:
        raise LedgerError(
            "anvil not found: run `npm ci` in the repository root (see package.json), "
            "call fedledger.ledger.chain.anvil.install_anvil(), or set $FEDLEDGER_ANVIL"
        )
    owns_log = log_path is None
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="fedledger-anvil-")) / "anvil.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(binary),
        "--host",
        host,
        "--port",
        str(port),
        "--accounts",
        str(accounts),
        "--mnemonic",
        ANVIL_MNEMONIC,
        "--color",
        "never",
    ]
    if block_time is not None:
        command += ["--block-time", f"{block_time:g}"]
    if chain_id is not None:
        command += ["--chain-id", str(chain_id)]
    if gas_limit is not None:
        command += ["--gas-limit", str(gas_limit)]
    state_loaded = False
    if state is not None:
        state_loaded = _check_state(state)
        command += ["--state", str(state), "--state-interval", str(state_interval)]
    command += list(extra_args)
    log_file = log_path.open("wb")
    try:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        log_file.close()
        raise LedgerError(f"cannot run anvil ({binary}): {exc}") from exc
    deadline = time.monotonic() + startup_timeout
    try:
        bound = _wait_until_serving(process, log_path, host, port, deadline)
    except BaseException as exc:
        _terminate(process, log_file)
        tail = log_path.read_bytes()[-_LOG_TAIL:].decode(errors="replace")
        if owns_log:
            shutil.rmtree(log_path.parent, ignore_errors=True)
        if isinstance(exc, ChainUnavailable) and state is not None and "--state" in tail:
            line = next((line for line in tail.splitlines() if "--state" in line), "")
            reason = line.split("<PATH>':", 1)[-1].strip()  # "error: invalid value ... <PATH>':"
            raise LedgerError(
                f"anvil cannot load the chain state {str(state)!r} ({reason}): move "
                "the file away to start a new chain"
            ) from None
        if isinstance(exc, ChainUnavailable):
            raise ChainUnavailable(f"{exc}\n--- anvil log (tail) ---\n{tail}") from None
        raise
    return AnvilProcess(
        process,
        host=host,
        port=bound,
        log_path=log_path,
        log_file=log_file,
        owns_log=owns_log,
        accounts=accounts,
        mnemonic=ANVIL_MNEMONIC,
        state=state,
        state_loaded=state_loaded,
    )


def _check_state(state: Path) -> bool:
    """Make ``state``'s directory; whether the state file exists (and will be loaded)."""
    try:
        state.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory of {str(state)!r}: "
                          f"{exc.strerror or exc}", field="state") from exc  # fmt: skip
    if state.is_dir():
        raise ConfigError(f"{str(state)!r} is a directory, not a state file", field="state")
    return state.is_file()


def _wait_until_serving(
    process: subprocess.Popen[bytes], log_path: Path, host: str, port: int, deadline: float
) -> int:
    delay = 0.01
    bound = port or None
    while True:
        if process.poll() is not None:
            raise ChainUnavailable(f"anvil exited with status {process.returncode} on start")
        if bound is None:
            bound = _listening_port(log_path)
        if bound is not None:
            url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
            try:
                _rpc(url, "eth_chainId", timeout=1.0)
                return bound
            except (OSError, urllib.error.URLError, ValueError):
                pass
        if time.monotonic() > deadline:
            raise ChainUnavailable(f"anvil did not answer on {host}:{port or '?'} in time")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
