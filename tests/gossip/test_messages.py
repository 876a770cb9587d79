"""Signed messages: envelope, frame, strict parser, and fuzzing of the parser."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedledger.commit.cid import cid_of
from fedledger.errors import MessageError
from fedledger.gossip.identity import Identity, checksum_address
from fedledger.gossip.messages import (
    HEADER_BYTES,
    KINDS,
    MAGIC,
    MAX_IDS,
    MAX_INCLUDED,
    Message,
    SignedMessage,
    canonical_json,
    decode_frame,
    encode_frame,
    make_message,
    parse_payload,
)

ME = Identity.from_seed(11, 0)
OTHER = Identity.from_seed(11, 1)
TASK = hashlib.sha256(b"task").hexdigest()
OTHER_TASK = hashlib.sha256(b"other task").hexdigest()
CID_A, CID_B, CID_C = cid_of(b"a"), cid_of(b"b"), cid_of(b"c")
PEERS = sorted(Identity.from_seed(11, i).address for i in range(2, 6))
ID_1, ID_2 = hashlib.sha256(b"1").hexdigest(), hashlib.sha256(b"2").hexdigest()
# A CIDv1 with the dag-pb codec (0x70) instead of raw: well-formed, but not ours.
DAG_PB_CID = "b" + base64.b32encode(bytes([1, 0x70, 0x12, 0x20]) + b"\x00" * 32).decode().lower()
DAG_PB_CID = DAG_PB_CID.rstrip("=")
CIDV0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"

DELETE = object()
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_body(kind: str) -> dict[str, Any]:
    bodies: dict[str, dict[str, Any]] = {
        "hello": {"endpoint": "127.0.0.1:7001"},
        "update": {"cid": CID_A, "num_examples": 120, "base": CID_B},
        "model": {"cid": CID_C, "included": [[p, cid_of(p.encode())] for p in PEERS]},
        "ihave": {"ids": [ID_1, ID_2]},
        "want": {"ids": [ID_2]},
        "fetch": {"cid": CID_A},
        "done": {"cid": CID_C},
        "stats": {"count": 40, "mean": [(0.5).hex(), (-1.25).hex()],
                  "m2": [(3.0).hex(), (0.0).hex()], "reply": False},
        "signed": {"message": "ab" * 276},
        "reveal": {"seeds": [[p, i + 1, ID_1] for i, p in enumerate(PEERS[:3])],
                   "keys": [[PEERS[3], 4, ID_2]], "own": ID_2},
    }  # fmt: skip
    return bodies[kind]


def valid_obj(kind: str = "update", sender: Identity = ME) -> dict[str, Any]:
    return {
        "v": 1,
        "kind": kind,
        "from": sender.address,
        "task": TASK,
        "round": 5,
        "body": valid_body(kind),
    }


def make(kind: str = "update", **kw: Any) -> SignedMessage:
    args: dict[str, Any] = {
        "kind": kind,
        "identity": ME,
        "task": TASK,
        "round": 5,
        "body": valid_body(kind),
    }
    args.update(kw)
    return make_message(**args)


def dumps(obj: Any) -> bytes:
    """Canonical JSON, but also for values canonical_json refuses (NaN)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def frame_of(payload: bytes, *, signer: Identity = ME, ttl: int = 3) -> bytes:
    return MAGIC + bytes((ttl,)) + signer.sign(payload) + payload


def mutate(obj: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


def decode_or_reject(frame: bytes, **kw: Any) -> tuple[SignedMessage, int] | None:
    """The fuzzing oracle: a message, or a MessageError; any other exception fails the test."""
    try:
        return decode_frame(frame, **kw)
    except MessageError:
        return None


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_each_kind(kind: str) -> None:
    signed = make(kind)
    assert signed.payload == canonical_json(valid_obj(kind))
    decoded, ttl = decode_frame(encode_frame(signed, ttl=9), task=TASK, known={ME.address})
    assert ttl == 9
    assert decoded == signed
    assert decoded.message == signed.message
    assert decoded.id == signed.id
    message = decoded.message
    assert (message.kind, message.sender, message.task, message.round) == (
        kind,
        ME.address,
        TASK,
        5,
    )
    # Bodies are read-only; lists come back as tuples.
    expected = json.loads(json.dumps(valid_body(kind)))
    assert json.loads(json.dumps(dict(message.body))) == expected
    with pytest.raises(TypeError):
        message.body["x"] = 1  # type: ignore[index]


def test_decoded_body_shapes() -> None:
    model = decode_frame(encode_frame(make("model"), ttl=0))[0].message.body
    assert model["included"] == tuple((p, cid_of(p.encode())) for p in PEERS)
    ihave = decode_frame(encode_frame(make("ihave"), ttl=0))[0].message.body
    assert ihave["ids"] == (ID_1, ID_2)


def test_tuples_and_mappings_are_accepted_by_make_message() -> None:
    from types import MappingProxyType

    body = {"cid": CID_C, "included": tuple((p, cid_of(p.encode())) for p in PEERS)}
    assert make("model", body=MappingProxyType(body)) == make("model")
    # A decoded body can be passed back in: same payload.
    decoded = decode_frame(encode_frame(make("model"), ttl=0))[0]
    assert make("model", body=decoded.message.body).payload == decoded.payload


def test_frame_layout() -> None:
    signed = make("fetch")
    frame = encode_frame(signed, ttl=200)
    assert frame[:4] == b"FLG1"
    assert frame[4] == 200
    assert frame[5:HEADER_BYTES] == signed.signature
    assert frame[HEADER_BYTES:] == signed.payload
    assert len(signed.signature) == 65


def test_decode_accepts_bytearray_and_memoryview() -> None:
    frame = encode_frame(make(), ttl=1)
    assert decode_frame(bytearray(frame))[0] == make()
    assert decode_frame(memoryview(frame))[0] == make()


def test_parse_payload_checks_content_but_not_signature() -> None:
    assert parse_payload(make().payload) == make().message
    with pytest.raises(MessageError, match=r"^kind:"):
        parse_payload(dumps(mutate(valid_obj(), ("kind",), "nope")))


# -- ids -------------------------------------------------------------------------------------


def test_id_is_the_payload_digest_and_stable() -> None:
    a, b = make(), make()
    assert a.id == b.id == hashlib.sha256(a.payload).hexdigest()
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert len(a.id) == 64


def test_id_changes_with_any_content_change() -> None:
    variants = [
        make(),
        make(kind="fetch", body={"cid": CID_A}),
        make(identity=OTHER),
        make(task=OTHER_TASK),
        make(round=6),
        make(body={"cid": CID_B, "num_examples": 120, "base": CID_B}),
        make(body={"cid": CID_A, "num_examples": 121, "base": CID_B}),
        make(body={"cid": CID_A, "num_examples": 120, "base": CID_C}),
    ]
    assert len({v.id for v in variants}) == len(variants)


@given(st.integers(0, 255), st.integers(0, 255))
@settings(max_examples=50, deadline=None)
def test_ttl_is_not_signed(ttl: int, other_ttl: int) -> None:
    signed = make("model")
    frame = bytearray(encode_frame(signed, ttl=ttl))
    frame[4] = other_ttl  # a relay rewrites the TTL
    decoded, got_ttl = decode_frame(bytes(frame))
    assert got_ttl == other_ttl
    assert decoded == signed
    assert decoded.id == signed.id


@pytest.mark.parametrize("ttl", [-1, 256, 1000, True, 1.0, "1"])
def test_encode_frame_rejects_bad_ttl(ttl: Any) -> None:
    with pytest.raises(MessageError, match="ttl"):
        encode_frame(make(), ttl=ttl)


# -- tampering -------------------------------------------------------------------------------


@given(st.sampled_from(KINDS), st.data())
@settings(max_examples=300, deadline=None)
def test_tampering_with_any_signed_byte_is_rejected(kind: str, data: st.DataObject) -> None:
    frame = bytearray(encode_frame(make(kind), ttl=4))
    positions = [i for i in range(len(frame)) if i != 4]  # every byte but the TTL
    position = data.draw(st.sampled_from(positions), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    frame[position] ^= flip
    with pytest.raises(MessageError):
        decode_frame(bytes(frame))


@given(st.sampled_from(KINDS), st.data())
@settings(max_examples=200, deadline=None)
def test_splicing_bytes_into_a_frame_is_rejected(kind: str, data: st.DataObject) -> None:
    frame = encode_frame(make(kind), ttl=4)
    start = data.draw(st.integers(0, len(frame)), label="start")
    end = data.draw(st.integers(start, len(frame)), label="end")
    junk = data.draw(st.binary(max_size=40), label="junk")
    spliced = frame[:start] + junk + frame[end:]
    # Only a splice that leaves the frame as it was, or touches the TTL alone, may pass.
    result = decode_or_reject(spliced)
    if result is not None:
        assert spliced[:4] + spliced[5:] == frame[:4] + frame[5:]


def test_signature_by_another_key_is_rejected() -> None:
    payload = canonical_json(valid_obj())
    with pytest.raises(MessageError, match=r"^signature: signed by"):
        decode_frame(frame_of(payload, signer=OTHER))


def test_malformed_signature_is_rejected() -> None:
    payload = canonical_json(valid_obj())
    for signature in (b"\x00" * 65, b"\xff" * 65, ME.sign(payload)[:64] + b"\x1d"):
        with pytest.raises(MessageError, match=r"^signature:"):
            decode_frame(MAGIC + b"\x03" + signature + payload)


# -- task and sender filters -----------------------------------------------------------------


def test_wrong_task_is_rejected() -> None:
    frame = encode_frame(make(), ttl=1)
    assert decode_frame(frame, task=TASK)[0] == make()
    with pytest.raises(MessageError, match=r"^task:"):
        decode_frame(frame, task=OTHER_TASK)


def test_unknown_sender_is_rejected() -> None:
    frame = encode_frame(make(), ttl=1)
    assert decode_frame(frame, known=[OTHER.address, ME.address])[0] == make()
    assert decode_frame(frame, known={ME.address.lower()})[0] == make()  # compared checksummed
    for known in (set(), {OTHER.address}, [OTHER.address.lower()], {1, None}):
        with pytest.raises(MessageError, match=r"^from: unknown sender"):
            decode_frame(frame, known=known)  # type: ignore[arg-type]


# -- frame-level rejections ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "too short"),
        (MAGIC, "too short"),
        (MAGIC + b"\x00" * 67, "too short"),
        (b"FLG2" + b"\x00" * 80, "bad magic"),
        (b"flg1" + b"\x00" * 80, "bad magic"),
        (MAGIC + b"\x00" * 66 + b"\xff\xfe", "not UTF-8"),
        (MAGIC + b"\x00" * 66 + b"{x", "not JSON"),
        (MAGIC + b"\x00" * 66 + b"[]", r"payload: expected an object"),
        (MAGIC + b"\x00" * 66 + b"17", r"payload: expected an object"),
        (MAGIC + b"\x00" * 66 + b"[" * 100_000, "nested too deeply|not JSON"),
        (MAGIC + b"\x00" * 66 + b'{"round":' + b"9" * 5000 + b"}", "not JSON"),
    ],
)
def test_frame_rejections(frame: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_frame(frame)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 200_000,
        b"[" * 200_000 + b"]" * 200_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        # Brackets hidden in strings must not hide the real nesting, and vice versa.
        b'["]",' * 100_000,
        b'["\\"]",' * 100_000,
        b"[" * 100_000 + b'"' + b"]" * 100_000,
        b"[" * 100_000 + b"\\" + b"]" * 100_000,
        b'{"body":{"endpoint":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
)
def test_deep_nesting_is_rejected_without_crashing(payload: bytes) -> None:
    # py-evm raises the recursion limit to 100000 on import; json.loads would then overflow
    # the C stack (a segfault, not a RecursionError) without the parser's depth check.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 100_000))
    try:
        with pytest.raises(MessageError, match=r"^payload: not JSON"):
            decode_frame(frame_of(payload), max_bytes=4 << 20)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("endpoint", ["]]]][[[[", "[[[[[[[[[[", '\\"[[[[[[', '"]]]]]]]\\'])
def test_brackets_and_escapes_in_strings_are_fine(endpoint: str) -> None:
    # Brackets inside a string do not nest: the frame is refused at its field (not a host:port
    # endpoint), not by the depth check as "not JSON".
    obj = mutate(valid_obj("hello"), ("body", "endpoint"), endpoint)
    with pytest.raises(MessageError, match=r"^body\.endpoint: "):
        decode_frame(frame_of(canonical_json(obj)))


def test_too_long_is_rejected() -> None:
    frame = encode_frame(make(), ttl=1)
    assert decode_frame(frame, max_bytes=len(frame))[0] == make()
    with pytest.raises(MessageError, match="too long"):
        decode_frame(frame, max_bytes=len(frame) - 1)
    with pytest.raises(MessageError, match="too long"):
        decode_frame(MAGIC + b"\x00" * (1 << 20))


def test_non_bytes_frame_is_rejected() -> None:
    with pytest.raises(MessageError, match="expected bytes"):
        decode_frame("FLG1...")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b'"round":5', b'"round":5.0', "^round: expected an integer, got float"),
        (b'"round":5', b'"round":5e0', "^round: expected an integer, got float"),
        (b'"round":5', b'"round":NaN', "NaN is not allowed"),
        (b'"round":5', b'"round":Infinity', "Infinity is not allowed"),
        (b'"round":5', b'"round":-Infinity', "Infinity is not allowed"),
        (b'"v":1', b'"v":1.0', "^v: unsupported version"),
        (b'"num_examples":120', b'"num_examples":1.2e2', "^body.num_examples: expected an int"),
        (b'"round":5', b'"round":-0', "not canonical"),
        (b'"round":5', b'"round": 5', "not canonical"),
        (b'"round":5', b'"round":5,"round":5', "not canonical"),
        (b'"v":1}', b'"v":1}\n', "not canonical"),
        (b'"kind":"update"', b'"kind":"\\u0075pdate"', "not canonical"),
        (b'{"body"', b'{"v":1,"body"', "not canonical"),
    ],
)
def test_json_level_rejections(old: bytes, new: bytes, reason: str) -> None:
    payload = canonical_json(valid_obj())
    assert old in payload
    tampered = payload.replace(old, new, 1)
    with pytest.raises(MessageError, match=reason):
        decode_frame(frame_of(tampered))


def test_non_canonical_key_order_is_rejected() -> None:
    payload = json.dumps(valid_obj(), separators=(",", ":")).encode()  # insertion order
    assert payload != canonical_json(valid_obj())
    with pytest.raises(MessageError, match="not canonical"):
        decode_frame(frame_of(payload))


# -- schema violations: every reason names the field -----------------------------------------

TOP_CASES: list[tuple[tuple[Any, ...], Any, str]] = [
    (("v",), 2, "^v: "),
    (("v",), 0, "^v: "),
    (("v",), True, "^v: "),
    (("v",), "1", "^v: "),
    (("v",), DELETE, "^payload: missing field 'v'"),
    (("kind",), "nope", "^kind: "),
    (("kind",), "UPDATE", "^kind: "),
    (("kind",), 1, "^kind: "),
    (("kind",), ["update"], "^kind: "),
    (("kind",), DELETE, "^payload: missing field 'kind'"),
    (("from",), ME.address.lower(), "^from: "),
    (("from",), "0x" + ME.address[2:].upper(), "^from: "),
    (("from",), ME.address[2:], "^from: "),
    (("from",), ME.address[:-1], "^from: "),
    (("from",), ME.address + "0", "^from: "),
    (("from",), 1, "^from: "),
    (("from",), None, "^from: "),
    (("from",), DELETE, "^payload: missing field 'from'"),
    (("task",), TASK.upper(), "^task: "),
    (("task",), TASK[:-1], "^task: "),
    (("task",), TASK + "0", "^task: "),
    (("task",), "g" * 64, "^task: "),
    (("task",), 12, "^task: "),
    (("task",), DELETE, "^payload: missing field 'task'"),
    (("round",), -1, "^round: "),
    (("round",), 2**32, "^round: "),
    (("round",), 2**64, "^round: "),
    (("round",), True, "^round: "),
    (("round",), "5", "^round: "),
    (("round",), None, "^round: "),
    (("round",), [5], "^round: "),
    (("round",), DELETE, "^payload: missing field 'round'"),
    (("body",), [], "^body: "),
    (("body",), None, "^body: "),
    (("body",), "x", "^body: "),
    (("body",), DELETE, "^payload: missing field 'body'"),
    (("extra",), 1, "^payload: unexpected field 'extra'"),
    (("V",), 1, "^payload: unexpected field 'V'"),
]

BODY_CASES: list[tuple[str, tuple[Any, ...], Any, str]] = [
    ("hello", ("endpoint",), "", r"^body\.endpoint: "),
    ("hello", ("endpoint",), "x" * 257, r"^body\.endpoint: "),
    ("hello", ("endpoint",), "a\nb", r"^body\.endpoint: "),
    ("hello", ("endpoint",), "\x7f", r"^body\.endpoint: "),
    ("hello", ("endpoint",), "hôte:1", r"^body\.endpoint: "),
    ("hello", ("endpoint",), "unix:/run/docker.sock", r"^body\.endpoint: bad port"),
    ("hello", ("endpoint",), "unix:///tmp/s:80", r"^body\.endpoint: scheme"),
    ("hello", ("endpoint",), "grpc://[::1]:7001", r"^body\.endpoint: "),
    ("hello", ("endpoint",), "127.0.0.1:0", r"^body\.endpoint: "),
    ("hello", ("endpoint",), "LocalHost:1", r"^body\.endpoint: not in canonical form"),
    ("hello", ("endpoint",), "[0::1]:1", r"^body\.endpoint: not in canonical form"),
    ("hello", ("endpoint",), "Node-7", r"^body\.endpoint: not in canonical form"),
    ("hello", ("endpoint",), "127.0.0.1", r"^body\.endpoint: "),
    ("hello", ("endpoint",), "/tmp/sock", r"^body\.endpoint: "),
    ("hello", ("endpoint",), 7001, r"^body\.endpoint: "),
    ("hello", ("endpoint",), None, r"^body\.endpoint: "),
    ("hello", ("endpoint",), DELETE, r"^body: missing field 'endpoint'"),
    ("hello", ("port",), 1, r"^body: unexpected field 'port'"),
    ("update", ("cid",), "bafy", r"^body\.cid: "),
    ("update", ("cid",), CID_A.upper(), r"^body\.cid: "),
    ("update", ("cid",), CID_A[:-1], r"^body\.cid: "),
    ("update", ("cid",), CID_A + "a", r"^body\.cid: "),
    ("update", ("cid",), DAG_PB_CID, r"^body\.cid: "),
    ("update", ("cid",), CIDV0, r"^body\.cid: "),
    ("update", ("cid",), "b" + "a" * 10_000, r"^body\.cid: "),
    ("update", ("cid",), "", r"^body\.cid: "),
    ("update", ("cid",), 5, r"^body\.cid: "),
    ("update", ("cid",), DELETE, r"^body: missing field 'cid'"),
    ("update", ("base",), "x", r"^body\.base: "),
    ("update", ("base",), None, r"^body\.base: "),
    ("update", ("base",), DELETE, r"^body: missing field 'base'"),
    ("update", ("num_examples",), -1, r"^body\.num_examples: "),
    ("update", ("num_examples",), 2**40 + 1, r"^body\.num_examples: "),
    ("update", ("num_examples",), True, r"^body\.num_examples: "),
    ("update", ("num_examples",), "3", r"^body\.num_examples: "),
    ("update", ("num_examples",), None, r"^body\.num_examples: "),
    ("update", ("num_examples",), DELETE, r"^body: missing field 'num_examples'"),
    ("update", ("weight",), 1, r"^body: unexpected field 'weight'"),
    ("model", ("cid",), "x", r"^body\.cid: "),
    ("model", ("cid",), DELETE, r"^body: missing field 'cid'"),
    ("model", ("included",), "x", r"^body\.included: "),
    ("model", ("included",), {}, r"^body\.included: "),
    ("model", ("included",), None, r"^body\.included: "),
    ("model", ("included",), DELETE, r"^body: missing field 'included'"),
    ("model", ("included", 0), "x", r"^body\.included\[0\]: "),
    ("model", ("included", 1), [PEERS[1]], r"^body\.included\[1\]: "),
    ("model", ("included", 1), [PEERS[1], CID_A, CID_A], r"^body\.included\[1\]: "),
    ("model", ("included", 1), {"a": PEERS[1]}, r"^body\.included\[1\]: "),
    ("model", ("included", 2, 0), PEERS[2].lower(), r"^body\.included\[2\]\[0\]: "),
    ("model", ("included", 2, 0), 5, r"^body\.included\[2\]\[0\]: "),
    ("model", ("included", 2, 1), "bafy", r"^body\.included\[2\]\[1\]: "),
    ("model", ("included", 2, 1), None, r"^body\.included\[2\]\[1\]: "),
    ("model", ("included", 1, 0), PEERS[0], r"^body\.included\[1\]\[0\]: duplicate address"),
    ("model", ("included", 1, 0), PEERS[3], r"^body\.included\[2\]\[0\]: addresses not sorted"),
    ("model", ("extra",), [], r"^body: unexpected field 'extra'"),
    ("ihave", ("ids",), "x", r"^body\.ids: "),
    ("ihave", ("ids",), None, r"^body\.ids: "),
    ("ihave", ("ids",), [ID_1] * 2, r"^body\.ids\[1\]: duplicate"),
    ("ihave", ("ids", 1), ID_2.upper(), r"^body\.ids\[1\]: "),
    ("ihave", ("ids", 1), ID_2[:-1], r"^body\.ids\[1\]: "),
    ("ihave", ("ids", 1), 7, r"^body\.ids\[1\]: "),
    ("ihave", ("ids",), DELETE, r"^body: missing field 'ids'"),
    ("want", ("ids",), {}, r"^body\.ids: "),
    ("want", ("ids", 0), "0x" + ID_1[2:], r"^body\.ids\[0\]: "),
    ("want", ("cid",), CID_A, r"^body: unexpected field 'cid'"),
    ("fetch", ("cid",), "x", r"^body\.cid: "),
    ("fetch", ("cid",), [CID_A], r"^body\.cid: "),
    ("fetch", ("cid",), DELETE, r"^body: missing field 'cid'"),
    ("fetch", ("ids",), [], r"^body: unexpected field 'ids'"),
    ("done", ("cid",), "x", r"^body\.cid: "),
    ("done", ("cid",), DELETE, r"^body: missing field 'cid'"),
    ("done", ("included",), [], r"^body: unexpected field 'included'"),
    ("stats", ("count",), 0, r"^body\.count: "),
    ("stats", ("mean", 0), "0x1p-1", r"^body\.mean\[0\]: not a finite float in canonical hex"),
    ("stats", ("mean", 1), "nan", r"^body\.mean\[1\]: "),
    ("stats", ("m2",), [(1.0).hex()], r"^body\.m2: needs one entry per feature"),
    ("stats", ("reply",), 1, r"^body\.reply: expected a boolean"),
    ("reveal", ("own",), "ab", r"^body\.own: expected 64 lowercase hex"),
    ("reveal", ("own",), None, r"^body\.own: expected a string"),
    ("reveal", ("seeds", 0, 1), 0, r"^body\.seeds\[0\]\[1\]: out of range"),
    ("reveal", ("seeds", 0, 1), 256, r"^body\.seeds\[0\]\[1\]: out of range"),
    ("reveal", ("seeds", 0, 2), ID_1.upper(), r"^body\.seeds\[0\]\[2\]: "),
    ("reveal", ("seeds", 0, 0), PEERS[0].lower(), r"^body\.seeds\[0\]\[0\]: not a checksummed"),
    ("reveal", ("seeds", 1, 0), PEERS[0], r"^body\.seeds: addresses not sorted and unique"),
    ("reveal", ("seeds", 0), [PEERS[0], 1], r"^body\.seeds\[0\]: expected \[address"),
    ("reveal", ("keys",), DELETE, r"^body: missing field 'keys'"),
]


def _case_id(value: Any) -> str:
    return "DELETE" if value is DELETE else repr(value)[:24]


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    TOP_CASES,
    ids=[f"{'.'.join(map(str, p))}={_case_id(v)}" for p, v, _ in TOP_CASES],
)
def test_top_level_violations_name_the_field(
    path: tuple[Any, ...], value: Any, reason: str
) -> None:
    obj = mutate(valid_obj(), path, value)
    with pytest.raises(MessageError, match=reason):
        decode_frame(frame_of(dumps(obj)))


@pytest.mark.parametrize(
    ("kind", "path", "value", "reason"),
    BODY_CASES,
    ids=[f"{k}:{'.'.join(map(str, p))}={_case_id(v)}" for k, p, v, _ in BODY_CASES],
)
def test_body_violations_name_the_field(
    kind: str, path: tuple[Any, ...], value: Any, reason: str
) -> None:
    obj = mutate(valid_obj(kind), ("body", *path), value)
    with pytest.raises(MessageError, match=reason):
        decode_frame(frame_of(dumps(obj)))
    # make_message refuses to sign what the parser would reject, with the same reason.
    with pytest.raises(MessageError, match=reason):
        make(kind, body=obj["body"])


@pytest.mark.parametrize(
    ("arg", "value", "reason"),
    [
        ("task", TASK.upper(), "^task: "),
        ("round", -1, "^round: "),
        ("round", 2**32, "^round: "),
        ("round", True, "^round: "),
        ("round", 1.0, "^round: "),
        ("body", None, "^body: "),
        ("body", {"cid": CID_A, "num_examples": 1.0, "base": CID_B}, r"^body\.num_examples: "),
        ("body", {"cid": b"bytes", "num_examples": 1, "base": CID_B}, r"^body\.cid: "),
    ],
)
def test_make_message_validates(arg: str, value: Any, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        make(**{arg: value})


def test_make_message_rejects_unknown_kind() -> None:
    with pytest.raises(MessageError, match=r"^kind: unknown kind 'nope'"):
        make_message(kind="nope", identity=ME, task=TASK, round=0, body={"cid": CID_A})


def test_too_many_ids_and_pairs_are_rejected() -> None:
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(MAX_IDS + 1)]
    assert decode_frame(encode_frame(make("ihave", body={"ids": ids[:-1]}), ttl=0))
    with pytest.raises(MessageError, match=r"^body\.ids: more than 4096"):
        make("want", body={"ids": ids})
    obj = mutate(valid_obj("want"), ("body", "ids"), ids)
    with pytest.raises(MessageError, match=r"^body\.ids: more than 4096"):
        decode_frame(frame_of(dumps(obj)))

    addresses = sorted(
        checksum_address(hashlib.sha256(str(i).encode()).digest()[:20])
        for i in range(MAX_INCLUDED + 1)
    )
    pairs = [[a, CID_A] for a in addresses]
    signed = make("model", body={"cid": CID_A, "included": pairs[:-1]})
    assert decode_frame(encode_frame(signed, ttl=0), max_bytes=4 << 20)[0] == signed
    with pytest.raises(MessageError, match=r"^body\.included: more than 10000"):
        make("model", body={"cid": CID_A, "included": pairs})
    obj = mutate(valid_obj("model"), ("body", "included"), pairs)
    with pytest.raises(MessageError, match=r"^body\.included: more than 10000"):
        decode_frame(frame_of(dumps(obj)), max_bytes=4 << 20)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("update", ("round",), 0),
        ("update", ("round",), 2**32 - 1),
        ("update", ("body", "num_examples"), 0),
        ("update", ("body", "num_examples"), 2**40),
        ("update", ("body", "base"), CID_A),  # cid == base is allowed
        ("hello", ("body", "endpoint"), ".".join(["a" * 63] * 3 + ["b" * 58]) + ":65535"),
        ("hello", ("body", "endpoint"), "[::1]:1"),
        ("hello", ("body", "endpoint"), "node-7.example:7001"),
        ("hello", ("body", "endpoint"), "node-7"),  # an in-memory network's endpoint
        ("ihave", ("body", "ids"), []),
        ("want", ("body", "ids"), [ID_1]),
        ("model", ("body", "included"), []),
        ("model", ("body", "included"), [[PEERS[0], CID_A], [PEERS[1], CID_A]]),
    ],
)
def test_boundary_values_are_accepted(kind: str, path: tuple[Any, ...], value: Any) -> None:
    obj = mutate(valid_obj(kind), path, value)
    signed, _ = decode_frame(frame_of(canonical_json(obj)))
    assert signed.payload == canonical_json(obj)
    assert make(kind, round=obj["round"], body=obj["body"]).payload == signed.payload


def test_included_order_is_plain_string_order_of_checksummed_addresses() -> None:
    # Checksummed addresses mix cases: the wire order is what sorted() gives on them.
    a = checksum_address(bytes.fromhex("a0" * 20))
    b = checksum_address(bytes.fromhex("ab" * 20))
    ordered = sorted([a, b])
    make("model", body={"cid": CID_A, "included": [[x, CID_A] for x in ordered]})
    with pytest.raises(MessageError, match="not sorted"):
        make("model", body={"cid": CID_A, "included": [[x, CID_A] for x in ordered[::-1]]})


def test_message_and_signed_message_are_frozen() -> None:
    signed = make()
    with pytest.raises(AttributeError):
        signed.payload = b""  # type: ignore[misc]
    with pytest.raises(AttributeError):
        signed.message.round = 1  # type: ignore[misc]
    assert isinstance(signed.message, Message)
    assert hash(signed.message) == hash(make().message)


# -- fuzzing: every malformed input gets a clean rejection -----------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
# Values close to valid ones, to push the parser past its first checks.
near_valid = st.sampled_from(
    [
        0,
        1,
        -1,
        2**32 - 1,
        2**32,
        2**40,
        2**40 + 1,
        True,
        False,
        None,
        0.0,
        1.5,
        "",
        "x" * 300,
        CID_A,
        CID_A[:-1] + "b",
        CID_A.upper(),
        DAG_PB_CID,
        ME.address,
        OTHER.address,
        ME.address.lower(),
        TASK,
        OTHER_TASK,
        TASK.upper(),
        ID_1,
        [ID_1, ID_1],
        [ID_1, ID_2],
        [[PEERS[0], CID_A]],
        [[PEERS[1], CID_A], [PEERS[0], CID_A]],
        [[PEERS[0], CID_A, CID_A]],
        [PEERS[0], CID_A],
        {"cid": CID_A},
        {},
        [],
        *KINDS,
    ]
)
replacements = st.one_of(near_valid, json_values)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(frame: bytes) -> None:
    assert decode_or_reject(frame) is None


@FUZZ
@given(st.integers(0, 255), st.binary(min_size=65, max_size=65), st.binary(max_size=2048))
def test_fuzz_valid_magic_random_payload(ttl: int, signature: bytes, payload: bytes) -> None:
    assert decode_or_reject(MAGIC + bytes((ttl,)) + signature + payload) is None
    # The same payload with a valid signature over it: rejected all the same (not a message).
    assert decode_or_reject(frame_of(payload)) is None


@FUZZ
@given(
    json_values,
    st.sampled_from(["canonical", "spaced", "unsorted", "unicode"]),
    st.booleans(),
)
def test_fuzz_random_json_payload(value: Any, style: str, sign: bool) -> None:
    styles: dict[str, dict[str, Any]] = {
        "canonical": {"sort_keys": True, "separators": (",", ":")},
        "spaced": {"sort_keys": True},
        "unsorted": {"separators": (",", ":")},
        "unicode": {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False},
    }
    kwargs = styles[style]
    try:
        payload = json.dumps(value, **kwargs).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    frame = frame_of(payload) if sign else MAGIC + b"\x01" + b"\x1b" * 65 + payload
    assert decode_or_reject(frame) is None  # random JSON is never a valid message


@st.composite
def mutated_messages(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A valid message object with one value replaced, removed, or one key added."""
    obj = valid_obj(draw(st.sampled_from(KINDS)))
    paths = _paths(obj)
    body_paths = [p for p in paths if p[0] == "body" and len(p) > 1]
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(body_paths if draw(st.booleans()) else paths))
        action = draw(st.sampled_from(["replace"] * 6 + ["delete", "add"]))
        try:
            if action == "replace":
                obj = mutate(obj, path, draw(replacements))
            elif action == "delete":
                obj = mutate(obj, path, DELETE)
            else:
                key = draw(st.sampled_from(["x", "cid", "ids", "v", "body", *KINDS]))
                obj = mutate(obj, (*path[:-1], key), draw(replacements))
        except (KeyError, IndexError, TypeError):
            pass  # the path no longer exists after an earlier mutation
    try:
        dumps(obj)
    except TypeError:  # an int key added next to a str key: JSON cannot sort them
        assume(False)
    return obj, draw(st.booleans())


@FUZZ
@given(mutated_messages())
def test_fuzz_mutated_valid_messages(case: tuple[dict[str, Any], bool]) -> None:
    obj, by_sender = case
    payload = dumps(obj)
    signer = ME if by_sender else OTHER
    result = decode_or_reject(frame_of(payload, signer=signer), task=TASK)
    if result is not None:
        signed, _ = result
        # Accepted only when still valid: canonical, signed by its sender, for this task.
        assert signed.payload == payload
        assert signed.message.sender == signer.address == obj["from"]
        assert signed.message.task == TASK
        assert signed.message.kind in KINDS
        assert canonical_json(obj) == payload


@FUZZ
@given(
    st.sampled_from(KINDS),
    st.dictionaries(
        st.sampled_from(["cid", "base", "num_examples", "endpoint", "included", "ids", "x"]),
        replacements,
        max_size=4,
    ),
    st.integers(-2, 2**33),
)
def test_fuzz_make_message(kind: str, body: dict[str, Any], rnd: int) -> None:
    try:
        signed = make_message(kind=kind, identity=ME, task=TASK, round=rnd, body=body)
    except MessageError:
        return
    decoded, _ = decode_frame(encode_frame(signed, ttl=0))
    assert decoded == signed
    assert decoded.message == signed.message


def _mutators() -> list[Callable[[bytes], bytes]]:
    return [lambda b: b[:-1], lambda b: b + b" ", lambda b: b.replace(b":", b": ", 1)]


@pytest.mark.parametrize("mutator", _mutators())
def test_truncated_or_padded_payloads_are_rejected(mutator: Callable[[bytes], bytes]) -> None:
    for kind in KINDS:
        payload = mutator(make(kind).payload)
        assert decode_or_reject(frame_of(payload)) is None
