"""Privacy: client-level differential privacy (docs/privacy.md).

* :mod:`fedledger.privacy.noise`: Gaussian draws from a ChaCha20 stream keyed per node, task
  and round (:func:`noise_key`, :class:`GaussianStream`);
* :mod:`fedledger.privacy.mechanism`: clip an update to L2 norm ``C`` and add noise
  ``sigma * C`` (:func:`privatize`), a pure function;
* :mod:`fedledger.privacy.accounting`: epsilon with dp-accounting's RDP accountant, the noise
  calibrated to a target epsilon, and the budget's most releases (:func:`plan`);
* :mod:`fedledger.privacy.secagg`: secure aggregation's pieces (arithmetic modulo 2**56,
  ChaCha20 masks, X25519 pair seeds, Shamir shares); not yet wired into the nodes.
"""

from fedledger.privacy.accounting import PrivacyPlan, calibrate, epsilon, plan
from fedledger.privacy.mechanism import Privatized, clip_factor, privatize
from fedledger.privacy.noise import GaussianStream, noise_key

__all__ = [
    "GaussianStream",
    "PrivacyPlan",
    "Privatized",
    "calibrate",
    "clip_factor",
    "epsilon",
    "noise_key",
    "plan",
    "privatize",
]
