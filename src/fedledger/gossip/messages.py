"""Signed gossip messages: the envelope, its frame, and a strict parser.

Every message a node sends is a canonical JSON *payload* signed by the node's key
(:mod:`fedledger.gossip.identity`, EIP-191 ``personal_sign`` of ``keccak256(payload)``), so a
contract (``ecrecover``) or an audit can check it later from the payload and signature alone.

Frame
-----

::

    offset  size  field
    0       4     magic      b"FLG1"
    4       1     ttl        hops left, 0..255; NOT signed: relays decrement it
    5       65    signature  r || s || v  (v in {27, 28}, low s)
    70      n     payload    canonical JSON, ASCII

A frame is at most ``max_bytes`` long (1 MiB by default, the transport's frame limit).

Payload
-------

One JSON object with exactly these fields::

    {"v": 1, "kind": KIND, "from": ADDRESS, "task": TASK, "round": ROUND, "body": {...}}

* ``v``: the format version, 1;
* ``kind``: one of :data:`KINDS`;
* ``from``: the sender's address, EIP-55 checksummed (any other casing is rejected); it must be
  the address that signed the payload;
* ``task``: the task id, 64 lowercase hex digits;
* ``round``: an integer, ``0 <= round < 2**32``.

The payload must be *canonical*: byte-for-byte equal to
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``. So a message has
exactly one encoding, and its id, ``sha256(payload).hex()``, names its content: gossip
deduplicates by id. JSON numbers are integers only: every value in the schema has a type, none
of them a float, so a float is rejected at its field (and ``NaN`` or ``Infinity`` anywhere);
so is a boolean where an integer is expected.

Bodies
------

Exact keys, no others. ``CID`` is a CIDv1 raw sha2-256 base32 string
(:func:`fedledger.commit.cid.digest_from_cid`); ``ADDRESS`` a checksummed address; ``ID`` a message
id (64 lowercase hex digits).

==========  ==================================================================================
kind        body
==========  ==================================================================================
``hello``   ``{"endpoint": str}``: ``host:port`` as
            :func:`fedledger.gossip.endpoints.parse_endpoint` accepts it, in its canonical
            form (a hostname lowercased, an IPv6 address compressed): never ``unix:...``;
            or a bare lowercase host name (an in-memory network's endpoint, ``node-3``)
``update``  ``{"cid": CID, "num_examples": int in [0, 2**40], "base": CID}``: a local update,
            trained from the model ``base``
``model``   ``{"cid": CID, "included": [[ADDRESS, CID], ...]}``: an aggregated model and the
            updates it includes, at most 10000 pairs, sorted by address in plain string order
            of the checksummed form (what ``sorted()`` gives), addresses unique
``ihave``   ``{"ids": [ID, ...]}``: at most 4096 ids, unique (the list may be empty)
``want``    ``{"ids": [ID, ...]}``: as for ``ihave``
``fetch``   ``{"cid": CID, "to": ADDRESS, "chain": int in [0, 2**64), "contract": ADDRESS,
            "expires": int in [0, 2**40], "nonce": NONCE}``: a request for a blob, bound to
            the node asked (``to``), the chain and task contract (``0`` and
            :data:`ZERO_ADDRESS` without a ledger) and valid until ``expires`` (unix
            seconds); ``NONCE`` is 32 lowercase hex digits. Build it with
            :func:`make_fetch_request`, check it with :func:`check_fetch_request`. (The
            legacy unbound body ``{"cid": CID}`` still parses, until the node sends bound
            requests; :func:`check_fetch_request` refuses it.)
``done``    ``{"cid": CID}``: the sender finished round ``round`` (consensus mode: the last one)
            with the model ``cid``, and serves it
``stats``   ``{"count": int in [1, 2**40], "mean": [HEX, ...], "m2": [HEX, ...],
            "reply": bool}``: a site's feature statistics for pooled standardization
            (:mod:`fedledger.data.site`), at most 4096 features, the same number in both
            lists; ``HEX`` is a finite float64 as ``float.hex()`` writes it (floats are never
            JSON numbers here). ``reply``: sent back to a member that asked (a reply is not
            answered). Point to point, round 0.
``reveal``  ``{"seeds": [SHARE, ...], "keys": [SHARE, ...], "own": HEX64 or ""}``: secure
            aggregation, once round ``round`` closed: the sender's share of each survivor's
            self seed (``seeds``) and of each dropout's mask key (``keys``), at most 256
            each, sorted by address, addresses unique; ``SHARE`` is ``[ADDRESS, index in
            [1, 255], HEX64]``; ``own``: the sender's own self seed if it survived
            (:mod:`fedledger.privacy.secagg_round`)
==========  ==================================================================================

A ``model`` message with many included updates is large (about 110 bytes per pair): with the
default 1 MiB frame limit, at most about 9400 pairs fit.

Parsing
-------

:func:`decode_frame` accepts a message or raises :class:`fedledger.errors.MessageError` whose text
names the offending field (``"body.included[3][1]: not a CID ..."``); it never raises anything
else, whatever the input (the parser is fuzzed). Decoded bodies are read-only: a mapping whose
lists are tuples (``body["ids"]`` is a ``tuple[str, ...]``, ``body["included"]`` a tuple of
``(address, cid)`` tuples).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from fedledger.commit.cid import digest_from_cid
from fedledger.errors import CodecError, MessageError
from fedledger.gossip.endpoints import InvalidEndpoint, parse_endpoint, parse_hostname
from fedledger.gossip.identity import (
    SIGNATURE_BYTES,
    Identity,
    checksum_address,
    is_checksum_address,
    recover_signer,
)

if TYPE_CHECKING:
    from fedledger.gossip.limits import TtlCache

__all__ = [
    "HEADER_BYTES",
    "KINDS",
    "MAGIC",
    "MAX_ENDPOINT_CHARS",
    "MAX_IDS",
    "MAX_INCLUDED",
    "MAX_NUM_EXAMPLES",
    "MAX_ROUND",
    "MAX_TTL",
    "VERSION",
    "ZERO_ADDRESS",
    "Message",
    "SignedMessage",
    "canonical_json",
    "check_fetch_request",
    "decode_frame",
    "encode_frame",
    "make_fetch_request",
    "make_message",
    "parse_payload",
]

KINDS: Final = (
    "hello", "update", "model", "ihave", "want", "fetch", "done", "stats", "signed", "reveal",
)  # fmt: skip
"""The message kinds."""

MAGIC: Final = b"FLG1"
"""The first four bytes of every frame."""
VERSION: Final = 1
"""The payload format version (``"v"``)."""
HEADER_BYTES: Final = len(MAGIC) + 1 + SIGNATURE_BYTES
"""Bytes before the payload: magic, ttl, signature."""
MAX_TTL: Final = 255
MAX_ROUND: Final = 2**32
"""Rounds are in ``[0, MAX_ROUND)``."""
MAX_ENDPOINT_CHARS: Final = 256
MAX_NUM_EXAMPLES: Final = 2**40
MAX_INCLUDED: Final = 10_000
MAX_IDS: Final = 4096
MAX_CHAIN_ID: Final = 2**64 - 1
MAX_EXPIRES: Final = 2**40
ZERO_ADDRESS: Final = "0x" + "0" * 40
"""The ``contract`` of a fetch request when there is no ledger."""
FETCH_REQUEST_TTL: Final = 30
"""Seconds a fetch request made by :func:`make_fetch_request` stays valid by default."""
MAX_FETCH_REQUEST_AHEAD: Final = 60
"""A server refuses a fetch request that expires more than this many seconds ahead."""
MAX_FETCH_REQUEST_BYTES: Final = 1024
"""A bound fetch request frame is about 420 bytes; a server parses nothing longer."""

_FIELDS: Final = frozenset({"v", "kind", "from", "task", "round", "body"})
_BODY_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "hello": frozenset({"endpoint"}),
    "update": frozenset({"cid", "num_examples", "base"}),
    "model": frozenset({"cid", "included"}),
    "ihave": frozenset({"ids"}),
    "want": frozenset({"ids"}),
    "fetch": frozenset({"cid", "to", "chain", "contract", "expires", "nonce"}),
    "done": frozenset({"cid"}),
    "stats": frozenset({"count", "mean", "m2", "reply"}),
    "signed": frozenset({"message"}),
    "reveal": frozenset({"seeds", "keys", "own"}),
}
MAX_SHARES: Final = 256
SIGNED_MESSAGE_HEX: Final = 552
"""A ledger round message (:class:`~fedledger.ledger.messages.SignedRound`, 276 bytes) in
lowercase hex."""
MAX_STATS_FEATURES: Final = 4096
_LEGACY_FETCH_FIELDS: Final = frozenset({"cid"})
_LOWER_HEX: Final = frozenset("0123456789abcdef")
_CID_MAX_CHARS: Final = 128  # a CIDv1 raw sha2-256 base32 string has 59; bound before decoding
_MIN_PAYLOAD_BYTES: Final = 2  # "{}"
_MAX_DEPTH: Final = 4  # payload {} > body {} > included [] > pair []
_NOT_BRACKETS: Final = bytes(sorted(set(range(256)) - set(b"[]{}")))


# -- the records -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Message:
    """The content of a message (the signed payload, parsed).

    A plain record: only :func:`make_message` and :func:`decode_frame` guarantee that it is
    valid. ``body`` is read-only when built by them (lists become tuples).
    """

    kind: str
    sender: str
    """The checksummed address of the signer (``"from"`` on the wire)."""
    task: str
    """The task id: 64 lowercase hex digits."""
    round: int
    body: Mapping[str, Any] = field(hash=False)


@dataclass(frozen=True, kw_only=True)
class SignedMessage:
    """A message, its canonical payload and the sender's signature over it.

    Two signed messages are equal when payload and signature are; :attr:`id` depends on the
    payload only.
    """

    message: Message = field(compare=False)
    payload: bytes
    """The canonical JSON bytes that were signed."""
    signature: bytes
    """65 bytes ``r || s || v``."""

    @functools.cached_property
    def id(self) -> str:
        """``sha256(payload).hex()``: the content digest gossip deduplicates by (computed once:
        gossip asks for it at every hop)."""
        return hashlib.sha256(self.payload).hexdigest()


# -- canonical JSON --------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The canonical encoding: sorted keys, no whitespace, ASCII only."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


class _ConstantRejectedError(Exception):
    pass


def _reject_constant(text: str) -> Any:
    raise _ConstantRejectedError(text)


def _nested_too_deeply(payload: bytes) -> bool:
    """Whether ``payload``'s brackets are unbalanced or nest deeper than ``_MAX_DEPTH`` (or 2x).

    Checked before ``json.loads``, whose C parser recurses once per level: py-evm (imported
    by the ledger) raises the recursion limit to 100000, and a frame of nested brackets then
    overflows the C stack and kills the process instead of raising RecursionError.

    Strings are removed first (a bracket inside a string does not nest): escape pairs, taken
    from the left as JSON does (``\\\\`` then ``\\"``), then everything between a quote and
    the next (an unterminated string runs to the end). Up to the point where ``json.loads``
    would fail, this agrees with JSON's own reading, and a prefix that nests deeply is caught
    whatever follows it. Then each pass deletes every innermost ``[]`` and ``{}`` pair, so
    each removes at least one level (at most two). All steps are linear C loops (< 0.1 s for
    a hostile 1 MiB payload, about 10 µs for a message).
    """
    unescaped = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    for _ in range(_MAX_DEPTH):
        if not structure:
            return False
        structure = structure.replace(b"[]", b"").replace(b"{}", b"")
    return bool(structure)


def _load_json(payload: bytes) -> Any:
    if _nested_too_deeply(payload):
        raise MessageError(
            f"payload: not JSON, or not a message (brackets unbalanced or nested deeper than "
            f"{_MAX_DEPTH})"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(f"payload: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except _ConstantRejectedError as exc:
        raise MessageError(f"payload: {exc} is not allowed (floats never are)") from None
    except RecursionError:
        raise MessageError("payload: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise MessageError(f"payload: not JSON ({_short(str(exc), 120)})") from None


# -- validation ------------------------------------------------------------------------------


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: error texts never carry a huge input."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # do not repr a megabyte only to cut it
    elif isinstance(value, list | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value)
    except ValueError:  # an int with too many digits
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: object) -> str:
    return type(value).__name__


def _fail(path: str, reason: str) -> MessageError:
    return MessageError(f"{path}: {reason}")


def _check_int(value: object, path: str, lo: int, hi: int) -> int:
    # bool is an int subclass: `type(...) is int` rejects it, as floats and everything else.
    if type(value) is not int:
        raise _fail(path, f"expected an integer, got {_type_name(value)}")
    if not lo <= value <= hi:
        raise _fail(path, f"out of range [{lo}, {hi}]: {_short(value)}")
    return value


def _check_str(value: object, path: str, max_chars: int) -> str:
    if type(value) is not str:
        raise _fail(path, f"expected a string, got {_type_name(value)}")
    if len(value) > max_chars:
        raise _fail(path, f"longer than {max_chars} characters")
    return value


def _check_address(value: object, path: str) -> str:
    text = _check_str(value, path, 42)
    if not is_checksum_address(text):
        raise _fail(path, f"not a checksummed (EIP-55) address: {_short(text)}")
    return text


def _check_hex64(value: object, path: str) -> str:
    text = _check_str(value, path, 64)
    if len(text) != 64 or not _LOWER_HEX.issuperset(text):
        raise _fail(path, f"expected 64 lowercase hex digits: {_short(text)}")
    return text


def _check_cid(value: object, path: str) -> str:
    text = _check_str(value, path, _CID_MAX_CHARS)
    try:
        digest_from_cid(text)
    except (CodecError, ValueError):
        raise _fail(path, f"not a CIDv1 raw sha2-256 base32 string: {_short(text)}") from None
    return text


def _check_list(value: object, path: str, max_items: int) -> list[Any]:
    if type(value) is not list:
        raise _fail(path, f"expected a list, got {_type_name(value)}")
    if len(value) > max_items:
        raise _fail(path, f"more than {max_items} items ({len(value)})")
    return value


def _check_shares(value: object, path: str) -> tuple[tuple[str, int, str], ...]:
    """``[[ADDRESS, index, HEX64], ...]`` sorted by address, addresses unique."""
    items = _check_list(value, path, MAX_SHARES)
    out: list[tuple[str, int, str]] = []
    for i, item in enumerate(items):
        entry = _check_list(item, f"{path}[{i}]", 3)
        if len(entry) != 3:
            raise _fail(f"{path}[{i}]", "expected [address, index, share]")
        out.append((_check_address(entry[0], f"{path}[{i}][0]"),
                    _check_int(entry[1], f"{path}[{i}][1]", 1, 255),
                    _check_hex64(entry[2], f"{path}[{i}][2]")))  # fmt: skip
    addresses = [a for a, _, _ in out]
    if addresses != sorted(set(addresses)):
        raise _fail(path, "addresses not sorted and unique")
    return tuple(out)


def _check_floats(value: object, path: str) -> tuple[str, ...]:
    """Finite float64 values written by ``float.hex()``: kept as the strings (canonical)."""
    items = _check_list(value, path, MAX_STATS_FEATURES)
    for i, item in enumerate(items):
        text = _check_str(item, f"{path}[{i}]", 32)
        try:
            number = float.fromhex(text)
        except ValueError:
            raise _fail(f"{path}[{i}]", f"not a hex float: {_short(text)}") from None
        if not math.isfinite(number) or number.hex() != text:
            raise _fail(f"{path}[{i}]", f"not a finite float in canonical hex: {_short(text)}")
    return tuple(items)


def _check_keys(obj: object, path: str, expected: frozenset[str]) -> dict[str, Any]:
    if type(obj) is not dict:
        raise _fail(path, f"expected an object, got {_type_name(obj)}")
    keys = obj.keys()
    missing = sorted(expected - keys)
    if missing:
        raise _fail(path, f"missing field {_short(missing[0])}")
    extra = sorted(str(k) for k in keys - expected)
    if extra:
        raise _fail(path, f"unexpected field {_short(extra[0])}")
    return obj


def _check_ids(value: object, path: str) -> tuple[str, ...]:
    items = _check_list(value, path, MAX_IDS)
    ids = tuple(_check_hex64(item, f"{path}[{i}]") for i, item in enumerate(items))
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for i, item in enumerate(ids):
            if item in seen:
                raise _fail(f"{path}[{i}]", f"duplicate id {item}")
            seen.add(item)
    return ids


def _check_included(value: object, path: str) -> tuple[tuple[str, str], ...]:
    items = _check_list(value, path, MAX_INCLUDED)
    pairs: list[tuple[str, str]] = []
    previous: str | None = None
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        if type(item) is not list or len(item) != 2:
            raise _fail(item_path, "expected an [address, CID] pair")
        address = _check_address(item[0], f"{item_path}[0]")
        cid = _check_cid(item[1], f"{item_path}[1]")
        if previous is not None and address <= previous:
            reason = "duplicate address" if address == previous else "addresses not sorted"
            raise _fail(f"{item_path}[0]", f"{reason} ({address} after {previous})")
        previous = address
        pairs.append((address, cid))
    return tuple(pairs)


def _check_nonce(value: object, path: str) -> str:
    text = _check_str(value, path, 32)
    if len(text) != 32 or not _LOWER_HEX.issuperset(text):
        raise _fail(path, f"expected 32 lowercase hex digits: {_short(text)}")
    return text


def _check_body(kind: str, value: object) -> Mapping[str, Any]:
    """Validate a body against its kind's schema; return a read-only copy."""
    fields = _BODY_FIELDS[kind]
    if kind == "fetch" and type(value) is dict and "to" not in value:
        fields = _LEGACY_FETCH_FIELDS
    body = _check_keys(value, "body", fields)
    out: dict[str, Any]
    if kind == "hello":
        endpoint = _check_str(body["endpoint"], "body.endpoint", MAX_ENDPOINT_CHARS)
        try:
            # host:port; or a bare host name: an in-memory network's endpoint (GrpcTransport
            # never dials one, it needs host:port).
            canonical = (parse_endpoint if ":" in endpoint else parse_hostname)(endpoint)
        except InvalidEndpoint as exc:
            raise _fail("body.endpoint", str(exc).removeprefix("endpoint: ")) from None
        if canonical != endpoint:
            raise _fail("body.endpoint", f"not in canonical form (expected {canonical!r})")
        out = {"endpoint": endpoint}
    elif kind == "update":
        out = {
            "base": _check_cid(body["base"], "body.base"),
            "cid": _check_cid(body["cid"], "body.cid"),
            "num_examples": _check_int(
                body["num_examples"], "body.num_examples", 0, MAX_NUM_EXAMPLES
            ),
        }
    elif kind == "model":
        out = {
            "cid": _check_cid(body["cid"], "body.cid"),
            "included": _check_included(body["included"], "body.included"),
        }
    elif kind in ("ihave", "want"):
        out = {"ids": _check_ids(body["ids"], "body.ids")}
    elif kind == "fetch" and fields is not _LEGACY_FETCH_FIELDS:
        out = {
            "chain": _check_int(body["chain"], "body.chain", 0, MAX_CHAIN_ID),
            "cid": _check_cid(body["cid"], "body.cid"),
            "contract": _check_address(body["contract"], "body.contract"),
            "expires": _check_int(body["expires"], "body.expires", 0, MAX_EXPIRES),
            "nonce": _check_nonce(body["nonce"], "body.nonce"),
            "to": _check_address(body["to"], "body.to"),
        }
    elif kind == "stats":
        mean = _check_floats(body["mean"], "body.mean")
        m2 = _check_floats(body["m2"], "body.m2")
        if len(mean) != len(m2) or not mean:
            raise _fail("body.m2", "needs one entry per feature, as body.mean")
        if type(body["reply"]) is not bool:
            raise _fail("body.reply", f"expected a boolean, got {_type_name(body['reply'])}")
        out = {"count": _check_int(body["count"], "body.count", 1, MAX_NUM_EXAMPLES),
               "mean": mean, "m2": m2, "reply": body["reply"]}  # fmt: skip
    elif kind == "signed":
        text = _check_str(body["message"], "body.message", SIGNED_MESSAGE_HEX)
        if len(text) != SIGNED_MESSAGE_HEX or not _LOWER_HEX.issuperset(text):
            raise _fail("body.message", f"expected {SIGNED_MESSAGE_HEX} lowercase hex digits")
        out = {"message": text}
    elif kind == "reveal":
        own = _check_str(body["own"], "body.own", 64)
        if own:
            _check_hex64(own, "body.own")
        out = {"seeds": _check_shares(body["seeds"], "body.seeds"),
               "keys": _check_shares(body["keys"], "body.keys"), "own": own}  # fmt: skip
    else:  # fetch (legacy), done
        out = {"cid": _check_cid(body["cid"], "body.cid")}
    return MappingProxyType(out)


def _check_message(obj: object) -> Message:
    top = _check_keys(obj, "payload", _FIELDS)
    version = top["v"]
    if type(version) is not int or version != VERSION:
        raise _fail("v", f"unsupported version {_short(version)} (expected {VERSION})")
    kind = top["kind"]
    if type(kind) is not str or kind not in KINDS:
        raise _fail("kind", f"unknown kind {_short(kind)}")
    return Message(
        kind=kind,
        sender=_check_address(top["from"], "from"),
        task=_check_hex64(top["task"], "task"),
        round=_check_int(top["round"], "round", 0, MAX_ROUND - 1),
        body=_check_body(kind, top["body"]),
    )


def parse_payload(payload: bytes) -> Message:
    """Parse and validate a payload (not its signature); :class:`MessageError` otherwise."""
    obj = _load_json(payload)
    message = _check_message(obj)
    # Checked after the schema, so that a float or a bad field is reported by its name. A valid
    # message holds only strings, integers, lists and objects, at most four levels deep.
    if canonical_json(obj) != payload:
        raise MessageError(
            "payload: not canonical JSON (expected sorted keys, no whitespace, ASCII escapes)"
        )
    return message


# -- building --------------------------------------------------------------------------------


def _to_json(value: object, depth: int = 0) -> object:
    """Mappings to dicts and tuples to lists, so a caller may pass either; the rest as is."""
    if depth > 8:
        raise MessageError("body: nested too deeply")
    if isinstance(value, Mapping):
        return {k: _to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v, depth + 1) for v in value]
    return value


def make_message(
    *, kind: str, identity: Identity, task: str, round: int, body: Mapping[str, Any]
) -> SignedMessage:
    """Validate a message, encode its canonical payload and sign it as ``identity``.

    ``body`` may use tuples for lists and any mapping for objects. Raises
    :class:`MessageError` (naming the field) for anything :func:`decode_frame` would reject.
    """
    obj = {
        "v": VERSION,
        "kind": kind,
        "from": identity.address,
        "task": task,
        "round": round,
        "body": _to_json(body),
    }
    message = _check_message(obj)
    payload = canonical_json(obj)
    return SignedMessage(message=message, payload=payload, signature=identity.sign(payload))


def encode_frame(signed: SignedMessage, *, ttl: int) -> bytes:
    """``MAGIC | ttl | signature | payload``; ``ttl`` in ``[0, 255]``."""
    if type(ttl) is not int or not 0 <= ttl <= MAX_TTL:
        raise MessageError(f"ttl: expected an integer in [0, {MAX_TTL}], got {_short(ttl)}")
    if len(signed.signature) != SIGNATURE_BYTES:
        raise MessageError(f"signature: expected {SIGNATURE_BYTES} bytes")
    return MAGIC + bytes((ttl,)) + signed.signature + signed.payload


# -- parsing ---------------------------------------------------------------------------------


def _is_known(sender: str, known: Collection[str]) -> bool:
    if sender in known:
        return True
    # Tolerate a caller's set of lowercase or otherwise non-checksummed addresses.
    lowered = sender.lower()
    return any(isinstance(k, str) and k.lower() == lowered for k in known)


def decode_frame(
    frame: bytes | bytearray | memoryview,
    *,
    max_bytes: int = 1 << 20,
    task: str | None = None,
    known: Collection[str] | None = None,
) -> tuple[SignedMessage, int]:
    """Parse and verify a frame: ``(message, ttl)``, or :class:`MessageError` saying why not.

    Checks, in order: length (``HEADER_BYTES + 2 <= len <= max_bytes``), magic, payload
    (UTF-8, JSON, canonical), fields and body schema, ``task`` (when given), ``known``
    senders (when given), then the signature, which must recover the ``from`` address.
    """
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise MessageError(f"frame: expected bytes, got {_type_name(frame)}")
    size = frame.nbytes if isinstance(frame, memoryview) else len(frame)
    if size < HEADER_BYTES + _MIN_PAYLOAD_BYTES:
        raise MessageError(f"frame: too short ({size} bytes)")
    if size > max_bytes:
        raise MessageError(f"frame: too long ({size} bytes > {max_bytes})")
    data = bytes(frame)
    if data[:4] != MAGIC:
        raise MessageError(f"frame: bad magic {data[:4]!r}")
    ttl = data[4]
    signature = data[5:HEADER_BYTES]
    payload = data[HEADER_BYTES:]
    message = parse_payload(payload)
    if task is not None and message.task != task:
        raise MessageError(f"task: message is for task {message.task}, not {_short(task)}")
    if known is not None and not _is_known(message.sender, known):
        raise MessageError(f"from: unknown sender {message.sender}")
    signer = recover_signer(payload, signature)
    if signer != message.sender:
        raise MessageError(f"signature: signed by {signer}, not by from={message.sender}")
    return SignedMessage(message=message, payload=payload, signature=signature), ttl


# -- fetch requests --------------------------------------------------------------------------


def make_fetch_request(
    *,
    identity: Identity,
    task: str,
    cid: str,
    to: str,
    now: float,
    chain_id: int = 0,
    contract: str = ZERO_ADDRESS,
    ttl: int = FETCH_REQUEST_TTL,
    nonce: str | None = None,
) -> bytes:
    """The frame asking the node ``to`` for blob ``cid``, valid for ``ttl`` seconds from
    ``now`` (unix seconds). ``chain_id`` and ``contract``: the ledger's (``0`` and
    :data:`ZERO_ADDRESS` without one). ``nonce``: 32 lowercase hex digits, random by default.

    Send it with ``transport.fetch(endpoint, frame, ...)``; make a new one per source and per
    attempt (a server may refuse a request it has already served).
    """
    if type(ttl) is not int or not 1 <= ttl <= MAX_FETCH_REQUEST_AHEAD:
        raise MessageError(f"ttl: expected an integer in [1, {MAX_FETCH_REQUEST_AHEAD}]")
    body = {
        "cid": cid,
        "to": _checksummed(to, "to"),
        "chain": chain_id,
        "contract": _checksummed(contract, "contract"),
        "expires": int(now) + ttl,
        "nonce": nonce if nonce is not None else os.urandom(16).hex(),
    }
    signed = make_message(kind="fetch", identity=identity, task=task, round=0, body=body)
    return encode_frame(signed, ttl=0)


def _checksummed(address: object, path: str) -> str:
    """A caller's address in checksummed form (any casing accepted from local callers)."""
    if type(address) is not str or len(address) != 42 or not address.startswith("0x"):
        raise MessageError(f"{path}: expected an address, got {_short(address)}")
    return checksum_address(bytes.fromhex(address[2:]))


def check_fetch_request(
    frame: bytes | bytearray | memoryview,
    *,
    task: str,
    me: str,
    now: float,
    chain_id: int = 0,
    contract: str = ZERO_ADDRESS,
    known: Collection[str] | None = None,
    max_ahead: float = MAX_FETCH_REQUEST_AHEAD,
    seen: TtlCache[str, bool] | None = None,
) -> tuple[str, str]:
    """Verify a fetch request sent to this node (``me``): ``(sender, cid)``.

    Raises :class:`MessageError` saying why if the frame is not a valid signed ``fetch``
    message of ``task`` from a ``known`` sender (when given; at most
    :data:`MAX_FETCH_REQUEST_BYTES`), or is bound to another recipient, chain or contract,
    has expired (``expires <= now``), expires more than ``max_ahead`` seconds after ``now``,
    or (with ``seen``, a :class:`~fedledger.gossip.limits.TtlCache` the node keeps) was
    already presented: a request is good once, and only until it expires, so a captured one
    cannot be replayed, and ``seen`` never needs to remember a request past its expiry.
    """
    signed, _ = decode_frame(frame, max_bytes=MAX_FETCH_REQUEST_BYTES, task=task, known=known)
    m = signed.message
    if m.kind != "fetch":
        raise MessageError(f"kind: expected a fetch request, got {m.kind!r}")
    if m.round != 0:
        raise MessageError(f"round: a fetch request has round 0, got {m.round}")
    body = m.body
    if "to" not in body:
        raise MessageError("body: an unbound fetch request (no recipient, chain or expiry)")
    if body["to"] != _checksummed(me, "me"):
        raise MessageError(f"body.to: the request is for {body['to']}, not for this node")
    if body["chain"] != chain_id:
        raise MessageError(f"body.chain: the request is for chain {body['chain']}")
    if body["contract"] != _checksummed(contract, "contract"):
        raise MessageError(f"body.contract: the request is for contract {body['contract']}")
    expires = body["expires"]
    if expires <= now:
        raise MessageError(f"body.expires: the request expired at {expires} (now {int(now)})")
    if expires > now + max_ahead:
        raise MessageError(
            f"body.expires: {expires} is more than {max_ahead} s ahead (now {int(now)})"
        )
    if seen is not None:
        if seen.get(signed.id, now=now) is not None:
            raise MessageError("fetch request replayed (already presented)")
        seen.put(signed.id, True, now=now, ttl=expires - now)
    return m.sender, str(body["cid"])
