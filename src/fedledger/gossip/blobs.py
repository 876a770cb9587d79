"""Content-addressed blob stores: bytes kept under their CID (:mod:`fedledger.commit.cid`).

A node keeps the model blobs it has produced or fetched in a :class:`BlobStore`; peers fetch
them by CID over the transport. Two implementations share one test suite
(tests/gossip/test_blob_store_suite.py):

* :class:`MemoryBlobStore`: a dict, for simulations and tests;
* :class:`FileBlobStore`: a directory on local disk, crash-safe (a blob appears under its CID
  atomically and complete, or not at all) and streaming (a blob being received or read is never
  held whole in memory).

Blobs arrive from untrusted peers through :meth:`BlobStore.writer`: the writer counts and hashes
the bytes as they come, refuses them as soon as they pass the size limit, and stores nothing
unless their sha256 equals the digest inside the CID asked for. :meth:`BlobStore.put` is for
local content, whose CID it computes.

Every method that takes a CID first parses it with :func:`fedledger.commit.cid.digest_from_cid`,
so a string that is not a canonical CIDv1 (raw, sha2-256, base32) raises
:class:`fedledger.errors.CodecError`, in every store and every method (``has`` and ``delete``
included): a malformed CID is a bug or a hostile peer, never "absent".

The stores are meant for one thread (an asyncio event loop): they are not thread-safe. A
:class:`FileBlobStore` directory belongs to one store object at a time, because opening a store
removes the temporary files left in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self

from fedledger.commit.cid import cid_from_digest, cid_of, digest_from_cid
from fedledger.errors import BlobError, BlobMismatch, BlobNotFound, ConfigError

__all__ = [
    "DEFAULT_READ_CHUNK_BYTES",
    "BlobStore",
    "BlobWriter",
    "FileBlobStore",
    "MemoryBlobStore",
]

DEFAULT_READ_CHUNK_BYTES = 1 << 20
"""Default chunk size of :meth:`BlobStore.read_chunks` (1 MiB, the transport's chunk size)."""

_Bytes = bytes | bytearray | memoryview


class BlobWriter(Protocol):
    """Incremental receive of one blob whose CID is known in advance.

    Use it as a context manager: leaving the ``with`` block without :meth:`commit` (normally or
    by an exception) aborts it, so nothing half-received ever stays behind::

        with store.writer(cid, max_bytes=limit) as w:
            async for chunk in transport.fetch(...):
                w.write(chunk)
            w.commit()
    """

    @property
    def cid(self) -> str:
        """The CID the received bytes must hash to."""
        ...

    @property
    def received(self) -> int:
        """Bytes written so far."""
        ...

    def write(self, chunk: _Bytes) -> None:
        """Append ``chunk``.

        Raises :class:`BlobMismatch` (and aborts the writer) as soon as the total passes
        ``max_bytes``; :class:`BlobError` if the writer is already committed or aborted.
        """

    def commit(self) -> str:
        """Check the bytes against the CID, store them atomically and return the CID.

        Raises :class:`BlobMismatch` (and aborts, storing nothing) when their sha256 differs
        from the digest in the CID. Committing again returns the CID; committing an aborted
        writer raises :class:`BlobError`.
        """
        ...

    def abort(self) -> None:
        """Discard what was written. Idempotent; a no-op after a successful commit."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BlobStore(Protocol):
    """Bytes stored under their CID. Every ``cid`` argument must be a valid CID (CodecError)."""

    def has(self, cid: str) -> bool:
        """Whether the store holds the blob."""
        ...

    def get(self, cid: str) -> bytes:
        """The whole blob; :class:`BlobNotFound` if absent."""
        ...

    def put(self, data: _Bytes) -> str:
        """Store ``data`` and return its CID. Storing content already present is a no-op."""
        ...

    def size(self, cid: str) -> int:
        """The blob's length in bytes; :class:`BlobNotFound` if absent."""
        ...

    def read_chunks(self, cid: str, chunk_bytes: int = DEFAULT_READ_CHUNK_BYTES) -> Iterator[bytes]:
        """The blob as consecutive non-empty chunks of at most ``chunk_bytes`` bytes.

        :class:`BlobNotFound` is raised by this call itself (not on the first ``next``) when the
        blob is absent. An empty blob yields no chunks.
        """
        ...

    def writer(self, cid: str, *, max_bytes: int) -> BlobWriter:
        """A writer that receives the blob named ``cid``, at most ``max_bytes`` long."""
        ...

    def cids(self) -> list[str]:
        """The CIDs of all stored blobs, sorted."""
        ...

    def delete(self, cid: str) -> None:
        """Remove the blob; no error if it is absent."""


# --------------------------------------------------------------------------------------------
# shared writer logic


class _WriterBase:
    """Counting, hashing, the state machine and the context manager; sinks are subclasses."""

    def __init__(self, cid: str, max_bytes: int) -> None:
        self._digest = digest_from_cid(cid)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigError(f"must be an int >= 0, got {max_bytes!r}", field="max_bytes")
        self._cid = cid
        self._max_bytes = max_bytes
        self._received = 0
        self._hash = hashlib.sha256()
        self._state = "open"  # "open" | "committed" | "aborted"

    @property
    def cid(self) -> str:
        return self._cid

    @property
    def received(self) -> int:
        return self._received

    def write(self, chunk: _Bytes) -> None:
        if self._state != "open":
            raise BlobError(f"writer for {self._cid} is already {self._state}")
        n = memoryview(chunk).nbytes
        if self._received + n > self._max_bytes:
            self.abort()
            raise BlobMismatch(
                f"blob {self._cid} exceeds the limit of {self._max_bytes} bytes "
                f"({self._received + n} bytes received)"
            )
        self._received += n
        self._hash.update(chunk)
        try:
            self._sink_write(chunk)
        except OSError as exc:
            self.abort()
            raise BlobError(f"cannot write blob {self._cid}: {exc}") from exc

    def commit(self) -> str:
        if self._state == "committed":
            return self._cid
        if self._state == "aborted":
            raise BlobError(f"writer for {self._cid} was aborted")
        got = self._hash.digest()
        if got != self._digest:
            self.abort()
            raise BlobMismatch(
                f"received {self._received} bytes hash to {cid_from_digest(got)}, "
                f"not to {self._cid}"
            )
        try:
            self._sink_commit()
        except OSError as exc:
            self.abort()
            raise BlobError(f"cannot store blob {self._cid}: {exc}") from exc
        self._state = "committed"
        return self._cid

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        self._sink_abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    # sinks
    def _sink_write(self, chunk: _Bytes) -> None:
        raise NotImplementedError

    def _sink_commit(self) -> None:
        raise NotImplementedError

    def _sink_abort(self) -> None:
        raise NotImplementedError


def _check_chunk_bytes(chunk_bytes: int) -> None:
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ConfigError(f"must be an int >= 1, got {chunk_bytes!r}", field="chunk_bytes")


# --------------------------------------------------------------------------------------------
# memory


class _MemoryWriter(_WriterBase):
    def __init__(self, store: MemoryBlobStore, cid: str, max_bytes: int) -> None:
        super().__init__(cid, max_bytes)
        self._store = store
        self._chunks: list[bytes] = []

    def _sink_write(self, chunk: _Bytes) -> None:
        self._chunks.append(bytes(chunk))

    def _sink_commit(self) -> None:
        data = b"".join(self._chunks)
        self._chunks = []
        self._store._blobs.setdefault(self._cid, data)

    def _sink_abort(self) -> None:
        self._chunks = []


class MemoryBlobStore:
    """A :class:`BlobStore` in a dict: nothing survives the process."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def has(self, cid: str) -> bool:
        digest_from_cid(cid)
        return cid in self._blobs

    def get(self, cid: str) -> bytes:
        digest_from_cid(cid)
        try:
            return self._blobs[cid]
        except KeyError:
            raise BlobNotFound(f"no blob {cid}") from None

    def put(self, data: _Bytes) -> str:
        cid = cid_of(data)
        if cid in self._blobs:
            return cid
        with self.writer(cid, max_bytes=memoryview(data).nbytes) as w:
            w.write(data)
            return w.commit()

    def size(self, cid: str) -> int:
        return len(self.get(cid))

    def read_chunks(self, cid: str, chunk_bytes: int = DEFAULT_READ_CHUNK_BYTES) -> Iterator[bytes]:
        _check_chunk_bytes(chunk_bytes)
        data = self.get(cid)
        return (data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes))

    def writer(self, cid: str, *, max_bytes: int) -> _MemoryWriter:
        return _MemoryWriter(self, cid, max_bytes)

    def cids(self) -> list[str]:
        return sorted(self._blobs)

    def delete(self, cid: str) -> None:
        digest_from_cid(cid)
        self._blobs.pop(cid, None)

    def verify(self, cid: str) -> None:
        """Re-hash the blob; on a mismatch delete it and raise :class:`BlobMismatch`."""
        if hashlib.sha256(self.get(cid)).digest() != digest_from_cid(cid):
            del self._blobs[cid]
            raise BlobMismatch(f"stored blob {cid} is corrupted; deleted")


# --------------------------------------------------------------------------------------------
# files


_TMP_DIR = "tmp"
_BUFFER_BYTES = 1 << 20
"""A file writer keeps up to this many bytes in memory before it opens its temporary file."""
_TMP_SUFFIX = ".part"


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every platform can open a dir)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _FileWriter(_WriterBase):
    """Buffers up to ``_BUFFER_BYTES`` in memory and opens its temporary file only past that,
    or at commit: a node fetching from many peers at once (hundreds of nodes in one process)
    holds no descriptor per fetch in flight."""

    def __init__(self, store: FileBlobStore, cid: str, max_bytes: int) -> None:
        super().__init__(cid, max_bytes)
        self._store = store
        self._final = store._path(cid)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._tmp_path: Path | None = None
        self._file: BinaryIO | None = None

    def __del__(self) -> None:
        # A writer dropped without commit or abort must not leak its descriptor or temp file.
        with contextlib.suppress(Exception):
            self.abort()

    @property
    def temp_path(self) -> Path | None:
        """Where the bytes are being written, once spilled to disk (tests, diagnostics)."""
        return self._tmp_path

    def _open(self) -> BinaryIO:
        if self._file is None:
            store = self._store
            try:
                fd, name = tempfile.mkstemp(dir=store._tmp, prefix=self._cid[-12:] + ".",
                                            suffix=_TMP_SUFFIX)  # fmt: skip
            except OSError as exc:
                raise BlobError(f"cannot create a temporary file in {store._tmp}: {exc}") from exc
            self._tmp_path = Path(name)
            self._file = os.fdopen(fd, "wb")
        return self._file

    def _sink_write(self, chunk: _Bytes) -> None:
        if self._file is None and self._buffered + len(chunk) <= _BUFFER_BYTES:
            self._buffer.append(bytes(chunk))
            self._buffered += len(chunk)
            return
        f = self._open()
        for part in self._buffer:
            f.write(part)
        self._buffer, self._buffered = [], 0
        f.write(chunk)

    def _sink_commit(self) -> None:
        if self._final.exists():  # same content already stored: keep the old file
            self._sink_abort()
            return
        f = self._open()
        for part in self._buffer:
            f.write(part)
        self._buffer, self._buffered = [], 0
        f.flush()
        if self._store.durable:
            os.fsync(f.fileno())
        f.close()
        self._file = None
        assert self._tmp_path is not None
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp_path, self._final)
        if self._store.durable:
            _fsync_dir(self._final.parent)

    def _sink_abort(self) -> None:
        self._buffer, self._buffered = [], 0
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._tmp_path is not None:
            with contextlib.suppress(OSError):
                self._tmp_path.unlink(missing_ok=True)


class FileBlobStore:
    """A :class:`BlobStore` in a directory.

    Layout: ``root/<h[0:2]>/<h[2:4]>/<cid>`` where ``h`` is the hex sha256 digest (a two-level
    fan-out, so no directory grows huge), and ``root/tmp/`` for blobs being written. A writer
    streams into a temporary file in ``root/tmp/`` (same file system), hashing as it goes; on
    commit the file is fsynced and renamed into place with :func:`os.replace`, so a crash never
    leaves a partial blob under a CID. Opening a store deletes the temporary files a crash left
    behind, so one directory must be used by one store object at a time.

    Reads trust the local disk and do not re-hash; :meth:`verify` re-hashes on demand.

    ``durable=False`` skips the fsyncs: the rename still makes a blob appear whole or not at
    all if the *process* dies, but after an operating-system crash a recent blob may be missing
    or truncated, so a caller that relies on one after a reboot must :meth:`verify` it. Nodes
    use this for blobs they can fetch again.
    """

    def __init__(self, root: str | Path, *, durable: bool = True) -> None:
        self.durable = durable
        self._root = Path(root)
        self._tmp = self._root / _TMP_DIR
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobError(f"cannot create blob store at {self._root}: {exc}") from exc
        self._remove_stale_temp_files()

    @property
    def root(self) -> Path:
        return self._root

    def _remove_stale_temp_files(self) -> None:
        for entry in os.scandir(self._tmp):
            if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def _path(self, cid: str) -> Path:
        h = digest_from_cid(cid).hex()
        return self._root / h[0:2] / h[2:4] / cid

    def has(self, cid: str) -> bool:
        return self._path(cid).is_file()

    def get(self, cid: str) -> bytes:
        path = self._path(cid)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {cid}") from None
        except OSError as exc:
            raise BlobError(f"cannot read blob {cid}: {exc}") from exc

    def put(self, data: _Bytes) -> str:
        view = memoryview(data).cast("B")
        cid = cid_of(view)
        if self.has(cid):
            return cid
        with self.writer(cid, max_bytes=view.nbytes) as w:
            for i in range(0, view.nbytes, DEFAULT_READ_CHUNK_BYTES):
                w.write(view[i : i + DEFAULT_READ_CHUNK_BYTES])
            return w.commit()

    def sync(self, cid: str) -> None:
        """Make blob ``cid`` durable now (fsync it and its directory), whatever ``durable``
        says: a ledger node does so for an update it is about to commit to."""
        path = self._path(cid)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path.parent)

    def size(self, cid: str) -> int:
        try:
            return self._path(cid).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {cid}") from None

    def read_chunks(self, cid: str, chunk_bytes: int = DEFAULT_READ_CHUNK_BYTES) -> Iterator[bytes]:
        _check_chunk_bytes(chunk_bytes)
        path = self._path(cid)
        if not path.is_file():
            raise BlobNotFound(f"no blob {cid}")
        return self._iter_file(cid, path, chunk_bytes)

    @staticmethod
    def _iter_file(cid: str, path: Path, chunk_bytes: int) -> Iterator[bytes]:
        try:
            f = path.open("rb")
        except FileNotFoundError:  # deleted between the check and the first next()
            raise BlobNotFound(f"no blob {cid}") from None
        with f:
            while chunk := f.read(chunk_bytes):
                yield chunk

    def writer(self, cid: str, *, max_bytes: int) -> _FileWriter:
        return _FileWriter(self, cid, max_bytes)

    def cids(self) -> list[str]:
        found: list[str] = []
        for d1 in _subdirs(self._root):
            for d2 in _subdirs(d1):
                prefix = d1.name + d2.name
                for entry in os.scandir(d2):
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        ok = digest_from_cid(entry.name).hex().startswith(prefix)
                    except ValueError:  # CodecError: not ours
                        continue
                    if ok:
                        found.append(entry.name)
        return sorted(found)

    def delete(self, cid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(cid).unlink()

    def verify(self, cid: str) -> None:
        """Re-hash the blob from disk.

        Raises :class:`BlobNotFound` if absent; if the bytes no longer match the CID (disk
        corruption, tampering), deletes the file and raises :class:`BlobMismatch`.
        """
        h = hashlib.sha256()
        for chunk in self.read_chunks(cid):
            h.update(chunk)
        if h.digest() != digest_from_cid(cid):
            self.delete(cid)
            raise BlobMismatch(f"stored blob {cid} is corrupted; deleted")


def _subdirs(path: Path) -> Iterator[Path]:
    """Fan-out directories (two lowercase hex digits) under ``path``."""
    for entry in os.scandir(path):
        name = entry.name
        is_hex = len(name) == 2 and all(c in "0123456789abcdef" for c in name)
        if is_hex and entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)
