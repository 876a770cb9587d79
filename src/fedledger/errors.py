"""The fedledger exception tree (docs/errors.md).

Every error fedledger raises on purpose derives from :class:`FedledgerError`, so callers can
catch one type. Errors from third-party libraries (torch, safetensors, grpc, web3, ...) are
translated into this tree at the module boundary that calls them; the original exception is kept
as ``__cause__``.

::

    FedledgerError
    ├── ConfigError            bad task or node configuration; .field names the key
    │                          ("aggregation.f"); also key and password files (unreadable,
    │                          readable by others, malformed, wrong keystore password)
    ├── DataError              a data set that cannot be loaded or partitioned
    ├── TrainingError          local training or evaluation failed (bad parameters, diverged loss)
    ├── CodecError             bytes that are not a canonical parameter blob, digest or CID
    ├── AggregationError       an aggregation rule cannot run (bad rule parameters)
    │   └── ByzantineBoundError    too few valid inputs for the f attackers the rule must tolerate
    ├── InvalidUpdateError     one update is malformed (NaN/Inf, shapes, dtype, range)
    ├── PrivacyError           differential privacy cannot be applied or accounted as asked
    ├── MessageError           a network message that is malformed, badly signed or from an
    │                          unknown sender (rejected with a logged reason, never fatal)
    ├── TransportError         the network failed to deliver
    │   ├── PeerUnavailable        the peer cannot be reached, or timed out
    │   └── FetchRefused           the peer answered but will not serve that blob
    ├── BlobError              a blob store failure
    │   ├── BlobNotFound           no blob under that CID
    │   └── BlobMismatch           received bytes do not hash to the CID, or exceed the size limit
    ├── LedgerError            a chain operation failed
    │   ├── TransactionReverted    a transaction or view call reverted; .reason, .receipt, .tx_hash
    │   └── ChainUnavailable       the chain cannot be reached, or did not mine in time
    └── RunFailed              a node or a run did not complete its task: refused at join, a
                               background job failed, stalled, or no round produced a model

The command line (:mod:`fedledger.cli`) prints a FedledgerError as one line,
``error: <message>``, and exits with status 2; any other exception as
``error: unexpected <Type>: <message>`` with status 1; Ctrl-C exits 130.
"""

from __future__ import annotations

from typing import Any


class FedledgerError(Exception):
    """Root of every error fedledger raises on purpose."""


class ConfigError(FedledgerError, ValueError):
    """A configuration value is missing, of the wrong type or out of range.

    ``field`` names the offending key as a dotted path (``"aggregation.f"``) when known.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class DataError(FedledgerError, ValueError):
    """A data set cannot be loaded, parsed or partitioned as asked."""


class TrainingError(FedledgerError, RuntimeError):
    """Local training or evaluation failed (bad parameters for the model, diverged loss, ...)."""


class CodecError(FedledgerError, ValueError):
    """Bytes are not a valid canonical parameter blob, digest or CID."""


class AggregationError(FedledgerError, ValueError):
    """An aggregation rule cannot produce a result from its inputs."""


class ByzantineBoundError(AggregationError):
    """The rule's Byzantine bound is broken: too few valid inputs for ``f`` attackers."""


class PrivacyError(FedledgerError, ValueError):
    """Differential privacy cannot be applied or accounted as asked (bad parameters, an
    update that does not match its base, a budget no round fits in)."""


class InvalidUpdateError(FedledgerError, ValueError):
    """One update is malformed: non-finite values, wrong shapes or dtype, or out of range.

    Aggregation rules do not raise this for a single bad input; they reject that input and
    report the reason. It is raised by the validators when asked about one update directly.
    """


class MessageError(FedledgerError, ValueError):
    """A network message is malformed, badly signed or from an unknown sender."""


class TransportError(FedledgerError, OSError):
    """The network failed to deliver a frame or a blob."""


class PeerUnavailable(TransportError):
    """The peer cannot be reached, refused the connection, or did not answer in time."""


class FetchRefused(TransportError):
    """The peer answered but will not serve the blob (unknown CID, access denied, bad request)."""


class BlobError(FedledgerError):
    """A blob store failure."""


class BlobNotFound(BlobError, KeyError):
    """The store has no blob under that CID."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "blob not found"


class BlobMismatch(BlobError, ValueError):
    """Received bytes do not hash to the CID that was asked for, or exceed the size limit."""


class LedgerError(FedledgerError):
    """A chain operation failed: a rejected transaction, a broken journal, a missing receipt."""


class TransactionReverted(LedgerError):
    """A transaction (or a view call) reverted.

    ``reason`` is the decoded ``Error(string)`` message (``"nope"``), ``"out of gas"`` when the
    transaction used all of its gas, ``"panic 0x.."`` for a ``Panic(uint256)``, or ``None``
    when the contract gave no reason. ``data`` holds the raw revert data when known.
    ``receipt`` (a :class:`fedledger.ledger.chain.Receipt`) is set when the transaction was mined
    (status 0), ``None`` when the revert was found before sending (estimating gas, or a view).
    eth-tester's ``TransactionFailed`` and web3's ``ContractLogicError`` (anvil) both become this.
    """

    def __init__(
        self, reason: str | None, *, data: bytes | None = None, receipt: Any = None
    ) -> None:
        self.reason = reason
        self.data = data
        self.receipt = receipt
        self.tx_hash: str | None = receipt.tx_hash if receipt is not None else None
        text = f"reverted: {reason}" if reason is not None else "reverted without a reason"
        if self.tx_hash is not None:
            text = f"transaction {self.tx_hash} {text}"
        super().__init__(text)


class ChainUnavailable(LedgerError):
    """The chain cannot be reached, kept failing, or did not mine a transaction in time."""


class RunFailed(FedledgerError):
    """A node or a whole run did not complete its task (the message says why)."""
