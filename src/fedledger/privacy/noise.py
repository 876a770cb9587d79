"""The Gaussian noise of differential privacy, from a cryptographic stream.

A node's noise for one round comes from ChaCha20 (the ``cryptography`` package) keyed with
HKDF-SHA256 of the node's secret key, the task and the round's base model
(:func:`noise_key`): nobody without the key can predict or subtract it, and a node restarted in
the middle of a round draws exactly the same noise for the same round, so a retrained update
is the same release, not a second one. The stream's 64-bit words become uniforms in (0, 1) with
53 random bits and then standard normals by the inverse of the normal CDF
(``scipy.special.ndtri``); the largest magnitude a draw can take is about 8.3 (a tail of
probability 1e-16). Nothing here is logged or stored; ``numpy.random`` is never used.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from scipy.special import ndtri

from fedledger.errors import PrivacyError

KEY_BYTES = 32
NONCE = bytes(16)
"""ChaCha20's 16-byte nonce (counter and nonce): every key is used for one stream only."""
_INFO = b"fedledger/dp-noise/v1"
_BITS = 53
_SCALE = 2.0**-_BITS


def noise_key(secret: bytes, *, task: str, rnd: int, base: str) -> bytes:
    """The 32-byte ChaCha20 key of a node's noise in round ``rnd`` of ``task``, trained from
    the model ``base`` (a CID): HKDF-SHA256 of the node's 32-byte ``secret``."""
    if len(secret) != KEY_BYTES:
        raise PrivacyError(f"a noise secret is {KEY_BYTES} bytes, got {len(secret)}")
    if rnd < 0:
        raise PrivacyError(f"round must be >= 0, got {rnd}")
    info = b"|".join([_INFO, task.encode(), str(rnd).encode(), base.encode()])
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info)
    return hkdf.derive(secret)


class GaussianStream:
    """Standard normal draws from one ChaCha20 key stream, in order."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise PrivacyError(f"a ChaCha20 key is {KEY_BYTES} bytes, got {len(key)}")
        cipher = Cipher(algorithms.ChaCha20(key, NONCE), mode=None)
        self._stream = cipher.encryptor()

    def normal(self, count: int) -> np.ndarray:
        """The next ``count`` standard normal draws (float64)."""
        if count < 0:
            raise PrivacyError(f"count must be >= 0, got {count}")
        words = np.frombuffer(self._stream.update(bytes(8 * count)), dtype="<u8")
        # The top 53 bits, centred in their cell: a uniform in (0, 1), never 0 or 1.
        uniform = ((words >> np.uint64(64 - _BITS)).astype(np.float64) + 0.5) * _SCALE
        out: np.ndarray = ndtri(uniform)
        return out
