"""One round of secure aggregation, as pure functions: mask, reveal, rebuild, unmask.

With ``S`` the round's masking set (fixed by the chain before anyone masks), ``U`` its
survivors (the members of ``S`` whose message for the round is on chain with an update) and
``D = S - U``:

1. each member of ``S`` masks its fixed-point model, weighted by its example count (capped
   below ``2**16``), with its self seed and a pairwise seed with every other member of ``S``
   (:func:`mask_update`); the masked vector is the update blob it commits
   (:func:`encode_masked`);
2. once the round closed, each member publishes a :class:`Reveal`: its share of every
   survivor's self seed, of every dropout's mask key, never both for one member, and its own
   seed if it survived (:func:`make_reveal`);
3. anyone holding enough reveals rebuilds the secrets, checked against the key blobs'
   commitments and public keys (:func:`rebuild`): the round's :class:`Transcript`, canonical,
   so every honest node makes the same bytes, and :func:`unmask_sum` gives the survivors'
   weighted sum exactly; :func:`secagg_model` divides it like FedAvg.

The transcript holds the survivors' self seeds and the dropouts' mask keys, no individual
update: its digest goes into the round's result digest, and ``fedledger audit`` recomputes
the sum from it and the masked blobs.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedledger.aggregation import fixedpoint as fx
from fedledger.aggregation.validation import ParamSpec, unflatten
from fedledger.errors import PrivacyError
from fedledger.privacy.secagg import (
    ELEMENT_BYTES,
    WEIGHT_BITS,
    Ring,
    SecAggAbort,
    combine_secret,
    commitment,
    decode_sum,
    encode_input,
    from_bytes,
    mask,
    pair_context,
    pair_seed,
    to_bytes,
    unmask,
)
from fedledger.privacy.secagg_keys import (
    KeyBlob,
    check_mask_key,
    mask_private,
    open_share,
    self_seed,
    threshold_for,
)

MASKED_MAGIC = b"FLSECAGG1\n"
TRANSCRIPT_FORMAT = "fedledger.secagg.transcript.v1"
MAX_WEIGHT = (1 << WEIGHT_BITS) - 1


def weight_of(examples: int) -> int:
    """The weight a member's masked input carries: its example count on chain, 1 to
    ``2**16 - 1``."""
    return min(max(int(examples), 1), MAX_WEIGHT)


def input_weight(examples: int, *, noised: bool) -> int:
    """A member's weight in the masked sum: its example count (:func:`weight_of`), or 1 for
    every member when the task adds differential-privacy noise (the sum's sensitivity to one
    member is then the clip, as the accountant assumes)."""
    return 1 if noised else weight_of(examples)


def member_noise_multiplier(noise_multiplier: float, members: int) -> float:
    """Distributed noise: each member's share of the noise multiplier, so that the sum of any
    threshold's worth of members' inputs (:func:`~fedledger.privacy.secagg_keys.threshold_for`,
    the fewest a round unmasks with) carries noise of std ``noise_multiplier * clip``."""
    return noise_multiplier / math.sqrt(threshold_for(members))


def flatten_q(params: Sequence[np.ndarray]) -> np.ndarray:
    """A parameter list as one fixed-point int64 vector (the aggregation rules' quantization)."""
    try:
        return fx.quantize_params(params)
    except ValueError as exc:
        raise PrivacyError(f"a model to mask: {exc}") from exc


# -- masking ---------------------------------------------------------------------------------


def mask_update(node_key: bytes, *, scope: str, rnd: int, me: str, params: Sequence[np.ndarray],
                weight: int, peers: Mapping[str, bytes]) -> Ring:  # fmt: skip
    """``me``'s masked input of round ``rnd``: its model ``params`` times ``weight``, plus its
    self seed's mask and one pairwise mask per member of ``peers`` (the rest of the masking
    set: address -> public mask key of the round)."""
    x = encode_input(flatten_q(params), weight)
    mine = mask_private(node_key, scope, rnd)
    seeds = {
        peer: pair_seed(mine, X25519PublicKey.from_public_bytes(pub),
                        context=pair_context(scope, rnd, me, peer))
        for peer, pub in peers.items()
        if peer.lower() != me.lower()
    }  # fmt: skip
    return mask(x, me=me.lower(), self_seed=self_seed(node_key, scope, rnd),
                pair_seeds={p.lower(): s for p, s in seeds.items()})  # fmt: skip


def encode_masked(*, rnd: int, member: str, weight: int, masked: Ring) -> bytes:
    """The update blob of a masked input: a magic line, a 4-byte header length, a canonical
    JSON header, then 7 bytes a coordinate."""
    fields = {"member": member.lower(), "round": rnd, "size": int(masked.size), "weight": weight}
    header = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return MASKED_MAGIC + struct.pack("<I", len(header)) + header + to_bytes(masked)


def masked_size(coordinates: int) -> int:
    """An upper bound on a masked blob's size for a model of ``coordinates`` values."""
    return len(MASKED_MAGIC) + 4 + 256 + ELEMENT_BYTES * coordinates


def decode_masked(data: bytes, *, rnd: int, member: str, size: int) -> tuple[int, Ring]:
    """``(weight, masked vector)`` of a masked update blob, checked against the round, author
    and model size it must have."""
    n = len(MASKED_MAGIC)
    if bytes(data[:n]) != MASKED_MAGIC or len(data) < n + 4:
        raise PrivacyError("not a masked update blob")
    (length,) = struct.unpack("<I", data[n : n + 4])
    body = bytes(data[n + 4 : n + 4 + length])
    try:
        header = json.loads(body)
        weight = int(header["weight"])
        ok = header == {"member": member.lower(), "round": rnd, "size": size, "weight": weight}
    except (ValueError, KeyError, TypeError) as exc:
        raise PrivacyError(f"a masked update's header is not valid: {exc}") from exc
    if not ok or json.dumps(header, sort_keys=True, separators=(",", ":")).encode() != body:
        raise PrivacyError(f"a masked update's header is not round {rnd}'s of {member} "
                           f"with {size} coordinates")  # fmt: skip
    payload = bytes(data[n + 4 + length :])
    if len(payload) != size * ELEMENT_BYTES:
        raise PrivacyError(f"a masked update holds {len(payload)} bytes, not {size} coordinates")
    return weight, from_bytes(payload)


# -- reveals ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Reveal:
    """What one member discloses once round ``round`` closed."""

    round: int
    member: str
    seeds: Mapping[str, tuple[int, bytes]]
    """Its share (index, 32 bytes) of each survivor's self seed."""
    keys: Mapping[str, tuple[int, bytes]]
    """Its share of each dropout's mask key."""
    own: bytes | None = None
    """Its own self seed, if it survived."""

    def to_body(self) -> dict[str, object]:
        """The gossip body (``reveal`` in :mod:`fedledger.gossip.messages`): the member and
        round are the message's signer and round."""
        from eth_utils.address import to_checksum_address

        def shares(m: Mapping[str, tuple[int, bytes]]) -> list[list[object]]:
            rows = [[to_checksum_address(a), i, s.hex()] for a, (i, s) in m.items()]
            return sorted(rows, key=lambda r: str(r[0]))

        return {"seeds": shares(self.seeds), "keys": shares(self.keys),
                "own": "" if self.own is None else self.own.hex()}  # fmt: skip

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, member: str, rnd: int) -> Reveal:
        """A reveal from a gossip body already checked by the message schema."""
        try:
            seeds = {str(a).lower(): (int(i), bytes.fromhex(str(h))) for a, i, h in body["seeds"]}
            keys = {str(a).lower(): (int(i), bytes.fromhex(str(h))) for a, i, h in body["keys"]}
            own = bytes.fromhex(str(body["own"])) if body["own"] else None
        except (ValueError, KeyError, TypeError) as exc:
            raise PrivacyError(f"not a reveal: {exc}") from exc
        return cls(round=rnd, member=member.lower(), seeds=seeds, keys=keys, own=own)


def make_reveal(node_key: bytes, *, scope: str, rnd: int, me: str,
                survivors: Sequence[str], dropouts: Sequence[str],
                blobs: Mapping[str, KeyBlob]) -> Reveal:  # fmt: skip
    """``me``'s reveal of round ``rnd``: survivors' seed shares and dropouts' mask-key shares
    from their key blobs (``blobs``, by member), and its own seed if it survived. A member in
    both lists is refused: nobody ever reveals both secrets of one member."""
    surv = {a.lower() for a in survivors}
    drop = {a.lower() for a in dropouts}
    if surv & drop:
        raise PrivacyError("a member cannot be both a survivor and a dropout")
    by = {a.lower(): b for a, b in blobs.items()}
    seeds: dict[str, tuple[int, bytes]] = {}
    keys: dict[str, tuple[int, bytes]] = {}
    for who in sorted(surv | drop):
        blob = by.get(who)
        if who == me.lower() or blob is None or not blob.covers(rnd):
            continue
        share = open_share(node_key, blob, me=me, rnd=rnd)
        if share is None:
            continue
        if who in surv:
            seeds[who] = (share.index, share.seed)
        else:
            keys[who] = (share.index, share.mask_key)
    own = self_seed(node_key, scope, rnd) if me.lower() in surv else None
    return Reveal(round=rnd, member=me.lower(), seeds=seeds, keys=keys, own=own)


# -- the transcript --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Survivor:
    member: str
    update: str
    """Its masked blob's CID."""
    weight: int
    seed: bytes


@dataclass(frozen=True, kw_only=True)
class Dropout:
    member: str
    key: bytes
    """Its rebuilt private mask key of the round."""


@dataclass(frozen=True, kw_only=True)
class Transcript:
    scope: str
    round: int
    survivors: tuple[Survivor, ...]
    dropouts: tuple[Dropout, ...]

    def to_bytes(self) -> bytes:
        doc = {
            "format": TRANSCRIPT_FORMAT, "scope": self.scope, "round": self.round,
            "survivors": [{"member": s.member, "update": s.update, "weight": s.weight,
                           "seed": s.seed.hex()} for s in self.survivors],
            "dropouts": [{"member": d.member, "key": d.key.hex()} for d in self.dropouts],
        }  # fmt: skip
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Transcript:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != TRANSCRIPT_FORMAT:
                raise PrivacyError(f"not a {TRANSCRIPT_FORMAT} document")
            out = cls(
                scope=str(doc["scope"]), round=int(doc["round"]),
                survivors=tuple(Survivor(member=str(s["member"]), update=str(s["update"]),
                                         weight=int(s["weight"]), seed=bytes.fromhex(s["seed"]))
                                for s in doc["survivors"]),
                dropouts=tuple(Dropout(member=str(d["member"]), key=bytes.fromhex(d["key"]))
                               for d in doc["dropouts"]),
            )  # fmt: skip
        except PrivacyError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise PrivacyError(f"not a transcript: {exc}") from exc
        if out.to_bytes() != bytes(data):
            raise PrivacyError("a transcript is not in its canonical form")
        return out


def rebuild(*, scope: str, rnd: int, survivors: Mapping[str, tuple[str, int]],
            dropouts: Sequence[str], blobs: Mapping[str, KeyBlob],
            reveals: Sequence[Reveal]) -> Transcript:  # fmt: skip
    """The round's transcript from the reveals received: ``survivors`` maps each survivor to
    ``(masked blob CID, weight)``. Each secret is rebuilt from its owner's key-blob threshold
    of shares (or taken from the survivor's own reveal) and checked against the key blob;
    :class:`SecAggAbort` if one cannot be."""
    by = {a.lower(): b for a, b in blobs.items()}
    mine = [r for r in reveals if r.round == rnd]
    surv: list[Survivor] = []
    for who in sorted((a.lower() for a in survivors), key=str):
        cid, weight = next(v for a, v in survivors.items() if a.lower() == who)
        blob = _blob(by, who, rnd)
        expect = blob.keys_of(rnd).commitment
        seed = next((r.own for r in mine if r.member == who and r.own is not None
                     and commitment(r.own) == expect), None)  # fmt: skip
        if seed is None:
            shares = [r.seeds[who] for r in mine if who in r.seeds]
            seed = combine_secret(shares, threshold=blob.threshold, expect=expect)
        surv.append(Survivor(member=who, update=cid, weight=weight, seed=seed))
    drops: list[Dropout] = []
    for who in sorted(a.lower() for a in dropouts):
        blob = _blob(by, who, rnd)
        shares = [r.keys[who] for r in mine if who in r.keys]
        key = combine_secret(shares, threshold=blob.threshold,
                             valid=functools.partial(check_mask_key, blob, rnd))  # fmt: skip
        drops.append(Dropout(member=who, key=key))
    return Transcript(scope=scope, round=rnd, survivors=tuple(surv), dropouts=tuple(drops))


def _blob(by: Mapping[str, KeyBlob], who: str, rnd: int) -> KeyBlob:
    blob = by.get(who)
    if blob is None or not blob.covers(rnd):
        raise SecAggAbort(f"no key blob of {who} covering round {rnd}")
    return blob


def check_transcript(t: Transcript, *, blobs: Mapping[str, KeyBlob],
                     masking_set: Sequence[str]) -> None:  # fmt: skip
    """:class:`PrivacyError` unless every secret in ``t`` is the one its owner's key blob
    commits to, and survivors and dropouts split ``masking_set`` exactly."""
    by = {a.lower(): b for a, b in blobs.items()}
    names = [s.member for s in t.survivors] + [d.member for d in t.dropouts]
    if sorted(names) != sorted(a.lower() for a in masking_set) or len(set(names)) != len(names):
        raise PrivacyError(f"round {t.round}: the transcript's members are not the masking set")
    for s in t.survivors:
        if commitment(s.seed) != _blob(by, s.member, t.round).keys_of(t.round).commitment:
            raise PrivacyError(f"round {t.round}: {s.member}'s seed is not the committed one")
        if s.weight != weight_of(s.weight):
            raise PrivacyError(f"round {t.round}: {s.member}'s weight is out of range")
    for d in t.dropouts:
        if not check_mask_key(_blob(by, d.member, t.round), t.round, d.key):
            raise PrivacyError(f"round {t.round}: {d.member}'s mask key is not its public one")


def unmask_sum(t: Transcript, *, masked: Mapping[str, Ring],
               blobs: Mapping[str, KeyBlob]) -> tuple[np.ndarray, int]:  # fmt: skip
    """``(sum of w_i * q_i as int64, total weight)`` of the survivors, from their masked
    vectors (by member) and a checked transcript."""
    by = {a.lower(): b for a, b in blobs.items()}
    vectors = {a.lower(): v for a, v in masked.items()}
    if sorted(vectors) != sorted(s.member for s in t.survivors):
        raise SecAggAbort(f"round {t.round}: the masked inputs are not the survivors'")
    pairs: dict[tuple[str, str], bytes] = {}
    for d in t.dropouts:
        key = X25519PrivateKey.from_private_bytes(d.key)
        for s in t.survivors:
            pub = X25519PublicKey.from_public_bytes(_blob(by, s.member, t.round)
                                                    .keys_of(t.round).mask_key)  # fmt: skip
            pairs[(d.member, s.member)] = pair_seed(
                key, pub, context=pair_context(t.scope, t.round, d.member, s.member)
            )
    total = unmask(vectors, self_seeds={s.member: s.seed for s in t.survivors},
                   dropped_pair_seeds=pairs)  # fmt: skip
    return decode_sum(total), sum(s.weight for s in t.survivors)


def secagg_model(total: np.ndarray, weight: int, spec: ParamSpec) -> list[np.ndarray]:
    """FedAvg's model from the survivors' weighted sum: ``floor((S + W // 2) / W)`` per
    coordinate (the plain rule's rounding), back to floats of the model's shapes."""
    if weight < 1:
        raise SecAggAbort("no survivor's weight")
    q = np.floor_divide(total + np.int64(weight // 2), np.int64(weight))
    return unflatten(fx.dequantize(q, np.float64), spec)
