"""The fedledger exception tree.

Every error fedledger raises on purpose derives from :class:`FedledgerError`, so callers can
catch one type. Errors from third-party libraries (torch, safetensors, grpc, web3, ...) are
translated into this tree at the module boundary that calls them; the original exception is kept
as ``__cause__``.

::

    FedledgerError
    ├── ConfigError            bad task or node configuration (names the offending field)
    ├── DataError              a data set that cannot be loaded or partitioned
    ├── TrainingError          local training or evaluation failed
    ├── CodecError             bytes that are not a canonical parameter blob / CID
    ├── AggregationError       an aggregation rule cannot run
    │   └── ByzantineBoundError    too few valid inputs for the tolerated number of attackers
    └── InvalidUpdateError     one update is malformed (NaN/Inf, shape, dtype, range)
"""

from __future__ import annotations


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


class InvalidUpdateError(FedledgerError, ValueError):
    """One update is malformed: non-finite values, wrong shapes or dtype, or out of range.

    Aggregation rules do not raise this for a single bad input; they reject that input and
    report the reason. It is raised by the validators when asked about one update directly.
    """
