"""Secure aggregation's keys: a member's secrets, and the key blob it publishes ahead.

Every secret of a member comes from its node key by HKDF-SHA256, bound to the task's *scope*
(``"<chain id>:<task address>"``, so two deployments of one configuration never share a key):

* its **channel key** (X25519), which seals the shares sent to it;
* for each round ``r``, a **mask key** (X25519: its pairwise seeds with the other members)
  and a **self seed** ``b`` (32 bytes: its own mask).

A restarted node derives them again; nothing secret is stored. Before the rounds it covers, a
member publishes a **key blob** (:class:`KeyBlob`, canonical JSON) and registers its digest on
chain (``set_keys``): its channel key, and for each round of ``[first, last]`` its public mask
key, a commitment to ``b``, and for each recipient (the members it knew then) a sealed Shamir
share of the mask key and one of ``b`` (threshold :func:`threshold_for`). A round's masked
update names no key: everything it is unmasked with was fixed before it was made.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedledger.errors import PrivacyError
from fedledger.privacy.secagg import (
    MAX_MEMBERS,
    SEED_BYTES,
    commitment,
    open_sealed,
    seal,
    split_secret,
)

FORMAT = "fedledger.secagg.keys.v1"
MIN_MEMBERS = 3
"""The smallest masking set: with fewer, one other member's shares would rebuild a secret."""
MAX_ROUNDS_PER_BLOB = 100
MAX_KEY_BLOB_BYTES = 64 << 20
_RAW = serialization.Encoding.Raw
_PUB = serialization.PublicFormat.Raw


def threshold_for(members: int) -> int:
    """Shares that rebuild a secret of one member of a ``members``-member set (its
    ``members - 1`` others hold one each): ``members - 1 - members // 3``, at least 2. Fewer than
    that many colluders learn nothing; up to ``members // 3`` members may drop out (none with 3
    members)."""
    if members < MIN_MEMBERS:
        raise PrivacyError(f"secure aggregation needs at least {MIN_MEMBERS} members, "
                           f"got {members}")  # fmt: skip
    return max(2, members - 1 - members // 3)


def _derive(node_key: bytes, scope: str, label: str) -> bytes:
    if len(node_key) != 32:
        raise PrivacyError(f"a node key is 32 bytes, got {len(node_key)}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None,
                info=f"fedledger/secagg/{label}/v1|{scope}".encode())  # fmt: skip
    return hkdf.derive(node_key)


def channel_private(node_key: bytes, scope: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(_derive(node_key, scope, "channel"))


def mask_private(node_key: bytes, scope: str, rnd: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(_derive(node_key, scope, f"mask|{rnd}"))


def self_seed(node_key: bytes, scope: str, rnd: int) -> bytes:
    return _derive(node_key, scope, f"self|{rnd}")


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(_RAW, _PUB)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())  # fmt: skip


def share_context(scope: str, owner: str, recipient: str, rnd: int) -> bytes:
    return f"{scope}|{owner.lower()}|{recipient.lower()}|{rnd}".encode()


@dataclass(frozen=True, kw_only=True)
class RoundKeys:
    round: int
    mask_key: bytes
    """The member's public X25519 mask key of the round."""
    commitment: bytes
    """:func:`~fedledger.privacy.secagg.commitment` of its self seed."""
    shares: tuple[bytes, ...]
    """Sealed ``mask-key share || seed share`` for each recipient, in recipient order."""


@dataclass(frozen=True, kw_only=True)
class KeyBlob:
    scope: str
    member: str
    channel_key: bytes
    first_round: int
    last_round: int
    recipients: tuple[str, ...]
    """The members holding shares, sorted by address (share ``i`` is index ``i + 1``)."""
    threshold: int
    rounds: tuple[RoundKeys, ...]

    def covers(self, rnd: int) -> bool:
        return self.first_round <= rnd <= self.last_round

    def keys_of(self, rnd: int) -> RoundKeys:
        if not self.covers(rnd):
            raise PrivacyError(f"the key blob of {self.member} does not cover round {rnd}")
        return self.rounds[rnd - self.first_round]

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT, "scope": self.scope, "member": self.member,
            "channel_key": self.channel_key.hex(), "first_round": self.first_round,
            "last_round": self.last_round, "recipients": list(self.recipients),
            "threshold": self.threshold,
            "rounds": [{"round": k.round, "mask_key": k.mask_key.hex(),
                        "commitment": k.commitment.hex(),
                        "shares": [s.hex() for s in k.shares]} for k in self.rounds],
        }  # fmt: skip
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyBlob:
        """A key blob, checked strictly: the canonical encoding only."""
        if len(data) > MAX_KEY_BLOB_BYTES:
            raise PrivacyError("a key blob is too large")
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise PrivacyError(f"not a {FORMAT} document")
            recipients = tuple(str(a) for a in doc["recipients"])
            rounds = tuple(
                RoundKeys(round=int(k["round"]), mask_key=_hex(k["mask_key"], 32),
                          commitment=_hex(k["commitment"], 32),
                          shares=tuple(_hex(s, 2 * SEED_BYTES + 28) for s in k["shares"]))
                for k in doc["rounds"]
            )  # fmt: skip
            blob = cls(scope=str(doc["scope"]), member=str(doc["member"]),
                       channel_key=_hex(doc["channel_key"], 32),
                       first_round=int(doc["first_round"]), last_round=int(doc["last_round"]),
                       recipients=recipients, threshold=int(doc["threshold"]),
                       rounds=rounds)  # fmt: skip
        except PrivacyError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise PrivacyError(f"not a key blob: {exc}") from exc
        blob._check()
        if blob.to_bytes() != bytes(data):
            raise PrivacyError("a key blob is not in its canonical form")
        return blob

    def _check(self) -> None:
        if not 1 <= self.first_round <= self.last_round:
            raise PrivacyError("a key blob's rounds are not 1 <= first <= last")
        if self.last_round - self.first_round + 1 > MAX_ROUNDS_PER_BLOB:
            raise PrivacyError(f"a key blob covers at most {MAX_ROUNDS_PER_BLOB} rounds")
        if len(self.rounds) != self.last_round - self.first_round + 1 or any(
            k.round != self.first_round + i for i, k in enumerate(self.rounds)
        ):
            raise PrivacyError("a key blob's rounds are not its range, in order")
        keys = [a.lower() for a in self.recipients]
        if keys != sorted(set(keys)) or self.member.lower() in keys:
            raise PrivacyError("a key blob's recipients are not distinct, sorted, and others")
        if len(self.recipients) + 1 > MAX_MEMBERS:
            raise PrivacyError(f"more than {MAX_MEMBERS} members")
        if self.threshold != threshold_for(len(self.recipients) + 1):
            raise PrivacyError("a key blob's threshold is not the rule's")
        if any(len(k.shares) != len(self.recipients) for k in self.rounds):
            raise PrivacyError("a key blob's round does not hold one share per recipient")


def _hex(value: object, size: int) -> bytes:
    if not isinstance(value, str):
        raise PrivacyError("a key blob field is not a hex string")
    raw = bytes.fromhex(value)
    if len(raw) != size or raw.hex() != value:
        raise PrivacyError(f"a key blob field is not {size} bytes of lowercase hex")
    return raw


def make_key_blob(node_key: bytes, *, scope: str, member: str, first_round: int,
                  last_round: int, recipients: Mapping[str, bytes]) -> KeyBlob:  # fmt: skip
    """``member``'s key blob for rounds ``[first_round, last_round]``, shared among
    ``recipients`` (address -> public channel key)."""
    order = sorted((a for a in recipients if a.lower() != member.lower()), key=str.lower)
    threshold = threshold_for(len(order) + 1)
    channel = channel_private(node_key, scope)
    theirs = [X25519PublicKey.from_public_bytes(recipients[a]) for a in order]
    rounds: list[RoundKeys] = []
    if not 1 <= first_round <= last_round or last_round - first_round >= MAX_ROUNDS_PER_BLOB:
        raise PrivacyError(f"a key blob covers 1 to {MAX_ROUNDS_PER_BLOB} rounds from round 1")
    for rnd in range(first_round, last_round + 1):
        mask = mask_private(node_key, scope, rnd)
        seed = self_seed(node_key, scope, rnd)
        parties = len(order)
        mask_shares = split_secret(private_bytes(mask), threshold=threshold, parties=parties)
        seed_shares = split_secret(seed, threshold=threshold, parties=parties)
        sealed = tuple(
            seal(channel, pub, context=share_context(scope, member, addr, rnd),
                 plaintext=ms + ss)
            for addr, pub, (_, ms), (_, ss) in zip(order, theirs, mask_shares, seed_shares,
                                                   strict=True)
        )  # fmt: skip
        rounds.append(RoundKeys(round=rnd, mask_key=public_bytes(mask),
                                commitment=commitment(seed), shares=sealed))  # fmt: skip
    blob = KeyBlob(scope=scope, member=member, channel_key=public_bytes(channel),
                   first_round=first_round, last_round=last_round, recipients=tuple(order),
                   threshold=threshold, rounds=tuple(rounds))  # fmt: skip
    blob._check()
    return blob


@dataclass(frozen=True, kw_only=True)
class Share:
    index: int
    mask_key: bytes
    seed: bytes


def open_share(node_key: bytes, blob: KeyBlob, *, me: str, rnd: int) -> Share | None:
    """``me``'s share of ``blob``'s owner's round ``rnd`` secrets, or None if ``me`` is not
    among its recipients; :class:`PrivacyError` if the sealed share does not open."""
    order = [a.lower() for a in blob.recipients]
    if me.lower() not in order:
        return None
    i = order.index(me.lower())
    plain = open_sealed(channel_private(node_key, blob.scope),
                        X25519PublicKey.from_public_bytes(blob.channel_key),
                        context=share_context(blob.scope, blob.member, me, rnd),
                        sealed=blob.keys_of(rnd).shares[i])  # fmt: skip
    if len(plain) != 2 * SEED_BYTES:
        raise PrivacyError("a sealed share is not two 32-byte shares")
    return Share(index=i + 1, mask_key=plain[:SEED_BYTES], seed=plain[SEED_BYTES:])


def check_mask_key(blob: KeyBlob, rnd: int, private: bytes) -> bool:
    """Whether ``private`` is the X25519 key behind ``blob``'s public mask key of ``rnd``."""
    try:
        key = X25519PrivateKey.from_private_bytes(private)
    except ValueError:
        return False
    return public_bytes(key) == blob.keys_of(rnd).mask_key
