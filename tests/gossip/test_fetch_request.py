"""Fetch requests bound to a recipient, chain, contract and expiry: a replay gets nothing."""

from __future__ import annotations

import hashlib
import json

import pytest

from fedledger.commit.cid import cid_of
from fedledger.errors import MessageError
from fedledger.gossip.identity import Identity
from fedledger.gossip.limits import TtlCache
from fedledger.gossip.messages import (
    HEADER_BYTES,
    MAX_FETCH_REQUEST_BYTES,
    ZERO_ADDRESS,
    check_fetch_request,
    decode_frame,
    encode_frame,
    make_fetch_request,
    make_message,
)

TASK = hashlib.sha256(b"task").hexdigest()
CLIENT, SERVER, OTHER = (Identity.from_seed(31, i) for i in range(3))
CID = cid_of(b"blob")
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
NOW = 1_800_000_000.0


def request(**overrides: object) -> bytes:
    kwargs: dict[str, object] = {
        "identity": CLIENT, "task": TASK, "cid": CID, "to": SERVER.address, "now": NOW,
        "chain_id": 31337, "contract": CONTRACT,
    }  # fmt: skip
    kwargs.update(overrides)
    return make_fetch_request(**kwargs)  # type: ignore[arg-type]


def check(frame: bytes, **overrides: object) -> tuple[str, str]:
    kwargs: dict[str, object] = {
        "task": TASK, "me": SERVER.address, "chain_id": 31337, "contract": CONTRACT,
        "now": NOW + 1, "known": None,
    }  # fmt: skip
    kwargs.update(overrides)
    return check_fetch_request(frame, **kwargs)  # type: ignore[arg-type]


def test_a_valid_request_names_sender_and_cid() -> None:
    frame = request()
    assert len(frame) < MAX_FETCH_REQUEST_BYTES
    assert check(frame) == (CLIENT.address, CID)
    body = json.loads(frame[HEADER_BYTES:])["body"]
    assert body["expires"] == int(NOW) + 30
    assert len(body["nonce"]) == 32
    assert body["to"] == SERVER.address
    assert body["contract"] == CONTRACT
    # Any casing of the caller's own addresses is accepted (the wire is checksummed).
    assert check(frame, me=SERVER.address.lower(), contract=CONTRACT.lower())[1] == CID


def test_without_a_ledger_chain_and_contract_are_zero() -> None:
    frame = request(chain_id=0, contract=ZERO_ADDRESS)
    assert check(frame, chain_id=0, contract=ZERO_ADDRESS) == (CLIENT.address, CID)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"me": OTHER.address}, r"^body\.to: "),
        ({"chain_id": 1}, r"^body\.chain: "),
        ({"contract": ZERO_ADDRESS}, r"^body\.contract: "),
        ({"now": NOW + 30}, r"^body\.expires: the request expired"),
        ({"now": NOW + 3600}, r"^body\.expires: the request expired"),
        ({"now": NOW - 60}, r"^body\.expires: .* ahead"),
        ({"task": hashlib.sha256(b"other").hexdigest()}, r"^task: "),
        ({"known": [SERVER.address]}, r"^from: unknown sender"),
    ],
)
def test_a_request_for_another_context_is_refused(
    overrides: dict[str, object], reason: str
) -> None:
    with pytest.raises(MessageError, match=reason):
        check(request(), **overrides)


def test_a_replayed_request_is_refused_and_the_memory_of_it_expires() -> None:
    seen: TtlCache[str, bool] = TtlCache(ttl=60.0, max_keys=1000)
    frame = request()
    assert check(frame, seen=seen)[1] == CID
    for later in (NOW + 2, NOW + 29):
        with pytest.raises(MessageError, match="replayed"):
            check(frame, seen=seen, now=later)
    with pytest.raises(MessageError, match="expired"):
        check(frame, seen=seen, now=NOW + 30)
    assert seen.get(hashlib.sha256(frame[HEADER_BYTES:]).hexdigest(), now=NOW + 30) is None
    # A fresh request (new nonce) for the same blob is fine.
    assert check(request(), seen=seen)[1] == CID


def test_a_far_future_expiry_is_refused_even_when_signed() -> None:
    # A client cannot make a request that lives long by signing a late expiry itself.
    frame = request(now=NOW + 10_000)
    with pytest.raises(MessageError, match="ahead"):
        check(frame)
    with pytest.raises(MessageError, match="ttl"):
        request(ttl=3600)


def test_unbound_and_other_kinds_are_refused() -> None:
    legacy = make_message(kind="fetch", identity=CLIENT, task=TASK, round=0, body={"cid": CID})
    with pytest.raises(MessageError, match="unbound"):
        check(encode_frame(legacy, ttl=0))
    done = make_message(kind="done", identity=CLIENT, task=TASK, round=0, body={"cid": CID})
    with pytest.raises(MessageError, match=r"^kind: "):
        check(encode_frame(done, ttl=0))
    with pytest.raises(MessageError, match="too long"):
        check(request() + b" " * MAX_FETCH_REQUEST_BYTES)


def test_a_tampered_request_fails_the_signature() -> None:
    frame = request()
    tampered = frame.replace(SERVER.address.encode(), OTHER.address.encode())
    with pytest.raises(MessageError, match=r"^signature: "):
        check(tampered, me=OTHER.address)


def test_the_body_is_strict_and_canonical() -> None:
    signed, _ = decode_frame(request())
    body = dict(signed.message.body)
    for key, value, reason in [
        ("nonce", "AB" * 16, r"^body\.nonce: "),
        ("nonce", "ab", r"^body\.nonce: "),
        ("chain", -1, r"^body\.chain: "),
        ("chain", True, r"^body\.chain: "),
        ("expires", 2**40 + 1, r"^body\.expires: "),
        ("to", SERVER.address.lower(), r"^body\.to: "),
        ("contract", "0", r"^body\.contract: "),
    ]:
        with pytest.raises(MessageError, match=reason):
            make_message(kind="fetch", identity=CLIENT, task=TASK, round=0,
                         body={**body, key: value})  # fmt: skip
    with pytest.raises(MessageError, match=r"^body: missing field 'nonce'"):
        make_message(kind="fetch", identity=CLIENT, task=TASK, round=0,
                     body={k: v for k, v in body.items() if k != "nonce"})  # fmt: skip
    with pytest.raises(MessageError, match=r"^body: unexpected field 'x'"):
        make_message(kind="fetch", identity=CLIENT, task=TASK, round=0,
                     body={**body, "x": 1})  # fmt: skip
