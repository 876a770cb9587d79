"""One behavioural suite for every BlobStore implementation, plus file-store specifics."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from fedledger.commit.cid import cid_from_digest, cid_of
from fedledger.errors import BlobError, BlobMismatch, BlobNotFound, CodecError, ConfigError
from fedledger.gossip.blobs import BlobStore, FileBlobStore, MemoryBlobStore

EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
UNKNOWN_CID = cid_of(b"never stored")
MiB = 1 << 20

AnyStore = MemoryBlobStore | FileBlobStore


def test_both_implement_the_protocol(tmp_path: Path) -> None:
    stores: list[BlobStore] = [MemoryBlobStore(), FileBlobStore(tmp_path)]  # checked by mypy
    assert len(stores) == 2


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> AnyStore:
    if request.param == "memory":
        return MemoryBlobStore()
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
def file_store(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def _temp_files(store: FileBlobStore) -> list[Path]:
    return list((store.root / "tmp").iterdir())


def _files_named(store: FileBlobStore, cid: str) -> list[Path]:
    return list(store.root.rglob(cid))


# ---------------------------------------------------------------------------------------------
# the shared suite


@pytest.mark.parametrize("data", [b"x", b"hello world", bytes(range(256)) * 40, os.urandom(5000)])
def test_round_trip(store: AnyStore, data: bytes) -> None:
    cid = store.put(data)
    assert cid == cid_of(data)
    assert store.has(cid)
    assert store.get(cid) == data
    assert store.size(cid) == len(data)
    assert store.cids() == [cid]
    store.delete(cid)
    assert not store.has(cid)
    assert store.cids() == []
    with pytest.raises(BlobNotFound):
        store.get(cid)
    store.delete(cid)  # absent: no error


def test_cids_are_sorted(store: AnyStore) -> None:
    cids = [store.put(f"blob {i}".encode()) for i in range(20)]
    assert store.cids() == sorted(cids)


def test_put_is_idempotent(store: AnyStore) -> None:
    first = store.put(b"same")
    second = store.put(b"same")
    assert first == second
    assert store.cids() == [first]
    assert store.get(first) == b"same"


def test_put_accepts_buffers(store: AnyStore) -> None:
    data = b"buffer contents"
    assert store.put(bytearray(data)) == cid_of(data)
    assert store.put(memoryview(data)) == cid_of(data)
    assert store.get(cid_of(data)) == data


def test_empty_blob(store: AnyStore) -> None:
    cid = store.put(b"")
    assert cid == EMPTY_CID
    assert store.has(cid)
    assert store.get(cid) == b""
    assert store.size(cid) == 0
    assert list(store.read_chunks(cid)) == []
    store.delete(cid)
    with store.writer(EMPTY_CID, max_bytes=0) as w:
        assert w.commit() == EMPTY_CID
    assert store.get(EMPTY_CID) == b""


def test_writer_in_chunks(store: AnyStore) -> None:
    chunks = [b"first chunk, ", b"", b"second, ", os.urandom(3000), b"end"]
    data = b"".join(chunks)
    cid = cid_of(data)
    w = store.writer(cid, max_bytes=len(data))
    assert not store.has(cid)
    for c in chunks:
        w.write(c)
    assert w.received == len(data)
    assert not store.has(cid)  # nothing visible before commit
    assert w.commit() == cid
    assert store.get(cid) == data
    assert w.commit() == cid  # committing again is harmless
    w.abort()  # a no-op after commit
    assert store.get(cid) == data


def test_writer_rejects_wrong_digest(store: AnyStore) -> None:
    cid = cid_of(b"expected")
    w = store.writer(cid, max_bytes=100)
    w.write(b"something else")
    with pytest.raises(BlobMismatch):
        w.commit()
    assert not store.has(cid)
    assert store.cids() == []
    with pytest.raises(BlobError):
        w.write(b"more")
    with pytest.raises(BlobError):
        w.commit()


def test_writer_rejects_oversize_as_soon_as_it_passes(store: AnyStore) -> None:
    data = b"0123456789"
    cid = cid_of(data + b"!")
    w = store.writer(cid, max_bytes=len(data))
    w.write(data[:6])
    w.write(data[6:])  # exactly max_bytes: fine
    with pytest.raises(BlobMismatch, match="limit"):
        w.write(b"!")
    assert not store.has(cid)
    with pytest.raises(BlobError):
        w.commit()


def test_writer_rejects_a_single_oversize_chunk(store: AnyStore) -> None:
    w = store.writer(UNKNOWN_CID, max_bytes=4)
    with pytest.raises(BlobMismatch):
        w.write(b"12345")
    assert w.received == 0


def test_abort_is_idempotent_and_final(store: AnyStore) -> None:
    data = b"to be aborted"
    cid = cid_of(data)
    w = store.writer(cid, max_bytes=100)
    w.write(data)
    w.abort()
    w.abort()
    assert not store.has(cid)
    with pytest.raises(BlobError):
        w.write(b"x")
    with pytest.raises(BlobError):
        w.commit()


def test_context_manager_commits_only_explicitly(store: AnyStore) -> None:
    data = b"context managed"
    cid = cid_of(data)
    with store.writer(cid, max_bytes=100) as w:
        w.write(data)
    assert not store.has(cid)  # left without commit: aborted

    class BoomError(Exception):
        pass

    def receive_and_fail() -> None:
        with store.writer(cid, max_bytes=100) as w:
            w.write(data)
            raise BoomError

    with pytest.raises(BoomError):
        receive_and_fail()
    assert not store.has(cid)

    with store.writer(cid, max_bytes=100) as w:
        w.write(data)
        assert w.commit() == cid
    assert store.get(cid) == data


def test_writer_for_content_already_present(store: AnyStore) -> None:
    cid = store.put(b"present")
    with store.writer(cid, max_bytes=100) as w:
        w.write(b"present")
        assert w.commit() == cid
    assert store.cids() == [cid]
    assert store.get(cid) == b"present"


@pytest.mark.parametrize("chunk_bytes", [1, 2, 7, 64, 1000, 4999, 5000, 5001, MiB])
def test_read_chunks(store: AnyStore, chunk_bytes: int) -> None:
    data = os.urandom(5000)
    cid = store.put(data)
    chunks = list(store.read_chunks(cid, chunk_bytes))
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= chunk_bytes for c in chunks)
    assert len(chunks) == -(-len(data) // chunk_bytes)


def test_read_chunks_default_size(store: AnyStore) -> None:
    data = os.urandom(100)
    cid = store.put(data)
    assert list(store.read_chunks(cid)) == [data]


def test_read_chunks_rejects_bad_chunk_size(store: AnyStore) -> None:
    cid = store.put(b"abc")
    with pytest.raises(ConfigError, match="chunk_bytes"):
        store.read_chunks(cid, 0)


def test_writer_rejects_bad_max_bytes(store: AnyStore) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        store.writer(UNKNOWN_CID, max_bytes=-1)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get(UNKNOWN_CID),
        lambda s: s.size(UNKNOWN_CID),
        lambda s: s.read_chunks(UNKNOWN_CID),  # raised by the call, before iterating
        lambda s: s.verify(UNKNOWN_CID),
    ],
    ids=["get", "size", "read_chunks", "verify"],
)
def test_unknown_cid_is_not_found(store: AnyStore, call: Callable[[AnyStore], object]) -> None:
    store.put(b"something else")
    with pytest.raises(BlobNotFound) as info:
        call(store)
    assert isinstance(info.value, KeyError)
    assert not store.has(UNKNOWN_CID)


@pytest.mark.parametrize("bad", ["", "Qm123", "bafkreinotacid", EMPTY_CID.upper(), "b../../etc"])
def test_invalid_cid_is_a_codec_error(store: AnyStore, bad: str) -> None:
    for call in (store.has, store.get, store.size, store.read_chunks, store.delete):
        with pytest.raises(CodecError):
            call(bad)
    with pytest.raises(CodecError):
        store.writer(bad, max_bytes=10)


def test_verify_accepts_intact_blobs(store: AnyStore) -> None:
    cid = store.put(b"intact")
    store.verify(cid)
    assert store.has(cid)


# ---------------------------------------------------------------------------------------------
# file store only


def test_file_layout(file_store: FileBlobStore) -> None:
    data = b"where does it go"
    cid = file_store.put(data)
    h = hashlib.sha256(data).hexdigest()
    path = file_store.root / h[:2] / h[2:4] / cid
    assert path.read_bytes() == data
    assert _temp_files(file_store) == []


def test_cids_ignore_foreign_files(file_store: FileBlobStore) -> None:
    cid = file_store.put(b"real")
    (file_store.root / "README").write_text("not a blob")
    h = hashlib.sha256(b"real").hexdigest()
    (file_store.root / h[:2] / h[2:4] / "junk").write_text("not a blob")
    (file_store.root / h[:2] / h[2:4] / UNKNOWN_CID).write_text("a CID in the wrong directory")
    assert file_store.cids() == [cid]


def test_small_writers_in_flight_hold_no_file(file_store: FileBlobStore) -> None:
    """Hundreds of fetches in flight (many nodes in one process) must not each hold a
    descriptor: a writer spills to a temporary file only past 1 MiB."""
    blobs = [os.urandom(40_000) for _ in range(50)]
    writers = [file_store.writer(cid_of(b), max_bytes=len(b)) for b in blobs]
    for w, b in zip(writers, blobs, strict=True):
        w.write(b[:20_000])
    assert _temp_files(file_store) == []
    assert all(w.temp_path is None for w in writers)
    for w, b in zip(writers, blobs, strict=True):
        w.write(b[20_000:])
        w.commit()
    assert file_store.cids() == sorted(cid_of(b) for b in blobs)
    assert all(file_store.get(cid_of(b)) == b for b in blobs)
    assert _temp_files(file_store) == []


def test_aborted_writer_leaves_nothing(file_store: FileBlobStore) -> None:
    data = os.urandom(3 << 20)  # past the in-memory buffer: spilled to a temporary file
    cid = cid_of(data)
    w = file_store.writer(cid, max_bytes=len(data))
    w.write(data[: 2 << 20])
    assert w.temp_path is not None
    assert w.temp_path.parent == file_store.root / "tmp"
    assert w.temp_path.exists()
    assert _files_named(file_store, cid) == []
    w.abort()
    assert _temp_files(file_store) == []
    assert _files_named(file_store, cid) == []
    assert not file_store.has(cid)


def test_failed_writers_leave_no_temp_files(file_store: FileBlobStore) -> None:
    w = file_store.writer(cid_of(b"a"), max_bytes=100)
    w.write(b"b")
    with pytest.raises(BlobMismatch):
        w.commit()
    w = file_store.writer(cid_of(b"a"), max_bytes=1)
    with pytest.raises(BlobMismatch):
        w.write(b"ab")
    with file_store.writer(cid_of(b"a"), max_bytes=1) as w:
        w.write(b"a")
    assert _temp_files(file_store) == []
    assert file_store.cids() == []


def test_reopen_removes_stale_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = FileBlobStore(root)
    data = os.urandom(3 << 20)
    cid = cid_of(data)
    # A crash mid-receive: a half-written temp file stays behind, plus some other debris.
    w = store.writer(cid, max_bytes=len(data))
    w.write(data[: 2 << 20])
    (root / "tmp" / "leftover.part").write_bytes(b"partial")
    assert len(_temp_files(store)) == 2

    reopened = FileBlobStore(root)
    assert _temp_files(reopened) == []
    assert not reopened.has(cid)
    assert reopened.cids() == []
    # The orphaned writer cannot make a partial blob appear either.
    w.write(data[2 << 20 :])
    with pytest.raises(BlobError):
        w.commit()
    assert not reopened.has(cid)


def test_persists_across_instances(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    first = FileBlobStore(root)
    cids = sorted(first.put(f"persistent {i}".encode()) for i in range(5))
    second = FileBlobStore(str(root))
    assert second.cids() == cids
    for cid in cids:
        assert cid_of(second.get(cid)) == cid


def test_verify_detects_and_deletes_corruption(file_store: FileBlobStore) -> None:
    data = os.urandom(3000)
    cid = file_store.put(data)
    file_store.verify(cid)
    (path,) = _files_named(file_store, cid)
    corrupted = bytearray(data)
    corrupted[1234] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    assert file_store.get(cid) == bytes(corrupted)  # reads trust the disk
    with pytest.raises(BlobMismatch, match="corrupted"):
        file_store.verify(cid)
    assert not file_store.has(cid)
    assert not path.exists()


def test_memory_verify_detects_corruption() -> None:
    store = MemoryBlobStore()
    cid = store.put(b"fine")
    store._blobs[cid] = b"broken"
    with pytest.raises(BlobMismatch):
        store.verify(cid)
    assert not store.has(cid)


def test_large_blob_streams_in_bounded_memory(file_store: FileBlobStore) -> None:
    n_chunks = 50
    base = os.urandom(MiB)

    def chunk(i: int) -> bytes:
        return i.to_bytes(8, "big") + base[8:]

    h = hashlib.sha256()
    for i in range(n_chunks):
        h.update(chunk(i))
    cid = cid_from_digest(h.digest())

    tracemalloc.start()
    try:
        with file_store.writer(cid, max_bytes=n_chunks * MiB) as w:
            for i in range(n_chunks):
                w.write(chunk(i))
            w.commit()
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()

        total = 0
        for i, c in enumerate(file_store.read_chunks(cid)):
            assert c == chunk(i)
            total += len(c)
        file_store.verify(cid)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert total == n_chunks * MiB
    assert file_store.size(cid) == n_chunks * MiB
    assert write_peak < 8 * MiB, write_peak
    assert read_peak < 8 * MiB, read_peak
