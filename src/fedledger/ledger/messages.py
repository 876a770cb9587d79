"""The signed round message of ledger v2: one EIP-712 message per member and round.

In round ``r`` each member signs ``Round(r, update, examples, model, result)``: its update's
digest and example count (its commitment for round ``r``; zero for an attestation only) and
its attestation of round ``r - 1``'s outcome (the model digest and the result digest; zero for
none). The signing domain is ``EIP712Domain(name "fedledger", version "2", chainId,
verifyingContract)``, so a message is bound to one chain, one task contract, one round and,
through its signature, one member: it cannot be claimed in another task or round, or by
another member.

Members gossip their messages and anyone submits them to the contract in batches
(``Task.submit``); the contract recovers each signer with ``ecrecover`` (the compact EIP-2098
form ``r, vs`` travels). Two *different* messages signed by one member for one round are the
only evidence that slashes (``Task.slash``).

Pure: eth_abi and eth_utils hashing, coincurve signatures (through
:class:`~fedledger.gossip.identity.Identity`); no web3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak

from fedledger.errors import MessageError
from fedledger.gossip.identity import Identity, recover_digest

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "ROUND_TYPE",
    "ZERO32",
    "RoundMessage",
    "SignedRound",
    "domain_separator",
    "pair_hash",
]

DOMAIN_NAME: Final = "fedledger"
DOMAIN_VERSION: Final = "2"
ROUND_TYPE: Final = (
    "Round(uint256 round,bytes32 update,uint256 examples,bytes32 model,bytes32 result)"
)
_DOMAIN_TYPE: Final = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_ROUND_TYPEHASH: Final = keccak(ROUND_TYPE.encode())
_DOMAIN_TYPEHASH: Final = keccak(_DOMAIN_TYPE.encode())
ZERO32: Final = b"\x00" * 32
_MAX_EXAMPLES: Final = 2**64 - 1
_HALF_N: Final = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


def domain_separator(chain_id: int, task_address: str) -> bytes:
    """The EIP-712 domain separator of one task contract on one chain."""
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [_DOMAIN_TYPEHASH, keccak(DOMAIN_NAME.encode()), keccak(DOMAIN_VERSION.encode()),
             chain_id, to_canonical_address(task_address)],
        )
    )  # fmt: skip


def pair_hash(model: bytes, result: bytes) -> bytes:
    """keccak256(abi_encode(model, result)): the key of an attested pair's tally."""
    return keccak(abi_encode(["bytes32", "bytes32"], [model, result]))


def _b32(name: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise MessageError(f"round message: {name} must be 32 bytes")
    return value


@dataclass(frozen=True, kw_only=True)
class RoundMessage:
    """What a member signs for one round (see the module docstring)."""

    round: int
    update: bytes = ZERO32
    """The update blob's sha-256 digest (its CID is derived from it); zero: attestation only."""
    examples: int = 0
    model: bytes = ZERO32
    """The model digest of round ``round - 1`` this member computed; zero: no attestation."""
    result: bytes = ZERO32
    """The result digest of round ``round - 1`` (contributors and scores)."""

    def __post_init__(self) -> None:
        if not isinstance(self.round, int) or not 1 <= self.round < 2**32:
            raise MessageError(f"round message: round must be in [1, 2**32), got {self.round!r}")
        _b32("update", self.update)
        _b32("model", self.model)
        _b32("result", self.result)
        if not isinstance(self.examples, int) or not 0 <= self.examples <= _MAX_EXAMPLES:
            raise MessageError("round message: examples must be in [0, 2**64)")
        if (self.update == ZERO32) != (self.examples == 0):
            raise MessageError("round message: an update needs examples, and only an update")
        if (self.model == ZERO32) != (self.result == ZERO32):
            raise MessageError("round message: model and result are both set or both zero")

    @property
    def attests(self) -> bool:
        return self.model != ZERO32

    @property
    def pair(self) -> tuple[bytes, bytes]:
        return self.model, self.result

    def struct_hash(self) -> bytes:
        return keccak(
            abi_encode(
                ["bytes32", "uint256", "bytes32", "uint256", "bytes32", "bytes32"],
                [_ROUND_TYPEHASH, self.round, self.update, self.examples, self.model,
                 self.result],
            )
        )  # fmt: skip

    def digest(self, chain_id: int, task_address: str) -> bytes:
        """The EIP-712 hash that is signed (``Task.message_hash``)."""
        return keccak(b"\x19\x01" + domain_separator(chain_id, task_address) + self.struct_hash())

    def sign(self, identity: Identity, chain_id: int, task_address: str) -> SignedRound:
        signature = identity.sign_digest(self.digest(chain_id, task_address))
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:64], "big")
        vs = s | ((signature[64] - 27) << 255)
        return SignedRound(message=self, signer=identity.address, r=r, vs=vs)

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "update": self.update.hex(), "examples": self.examples,
                "model": self.model.hex(), "result": self.result.hex()}  # fmt: skip

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RoundMessage:
        try:
            return cls(round=doc["round"], update=bytes.fromhex(doc["update"]),
                       examples=doc["examples"], model=bytes.fromhex(doc["model"]),
                       result=bytes.fromhex(doc["result"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"round message: {exc}") from None


_WIRE_BYTES: Final = 8 * 32 + 20
"""round, update, examples, model, result, r, vs (32 bytes each) and the signer (20)."""


@dataclass(frozen=True, kw_only=True)
class SignedRound:
    """A round message with its signature in the compact EIP-2098 form ``(r, vs)`` and its
    claimed signer. :meth:`verify` checks the claim."""

    message: RoundMessage
    signer: str
    r: int
    vs: int

    def signature(self) -> bytes:
        """The 65-byte ``r || s || v`` form."""
        s = self.vs & ((1 << 255) - 1)
        return self.r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((27 + (self.vs >> 255),))

    def recover(self, chain_id: int, task_address: str) -> str:
        """The address that signed the message (raises :class:`MessageError` when none)."""
        if not 0 <= self.r < 2**256 or not 0 <= self.vs < 2**256:
            raise MessageError("round message: r or vs out of range")
        if self.vs & ((1 << 255) - 1) > _HALF_N:
            raise MessageError("round message: s in the upper half (malleable)")
        return recover_digest(self.message.digest(chain_id, task_address), self.signature())

    def verify(self, chain_id: int, task_address: str) -> bool:
        try:
            return self.recover(chain_id, task_address) == self.signer
        except MessageError:
            return False

    def entry(self) -> tuple[bytes, int, int, int]:
        """(update, examples, r, vs): the per-message part of a ``submit`` entry."""
        return self.message.update, self.message.examples, self.r, self.vs

    def to_bytes(self) -> bytes:
        """A fixed-size encoding (for gossip): 8 big-endian 32-byte words then the signer."""
        m = self.message
        words = [
            m.round.to_bytes(32, "big"),
            m.update,
            m.examples.to_bytes(32, "big"),
            m.model,
            m.result,
            self.r.to_bytes(32, "big"),
            self.vs.to_bytes(32, "big"),
            ZERO32,
        ]
        return b"".join(words) + to_canonical_address(self.signer)  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes) -> SignedRound:
        if not isinstance(raw, bytes | bytearray) or len(raw) != _WIRE_BYTES:
            raise MessageError(f"round message: expected {_WIRE_BYTES} bytes")
        raw = bytes(raw)
        w = [raw[i * 32 : (i + 1) * 32] for i in range(8)]
        if w[7] != ZERO32:
            raise MessageError("round message: reserved word is not zero")
        message = RoundMessage(
            round=int.from_bytes(w[0], "big"), update=w[1],
            examples=int.from_bytes(w[2], "big"), model=w[3], result=w[4],
        )  # fmt: skip
        return cls(message=message, signer=to_checksum_address(raw[256:]),
                   r=int.from_bytes(w[5], "big"), vs=int.from_bytes(w[6], "big"))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {**self.message.to_json(), "signer": self.signer, "r": hex(self.r),
                "vs": hex(self.vs)}  # fmt: skip

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SignedRound:
        try:
            return cls(message=RoundMessage.from_json(doc),
                       signer=to_checksum_address(doc["signer"]), r=int(doc["r"], 16),
                       vs=int(doc["vs"], 16))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"round message: {exc}") from None
