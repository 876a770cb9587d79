"""Message signing and signer recovery, per call: fedledger's Identity (coincurve) against
eth-account's ``sign_message`` / ``recover_message`` on the same payload.

Run with ``python -m benchmarks.signing``. Every frame a node sends is signed once and every
frame it receives is recovered once, so these bound the message rate of one core. Prints the
best of 5 batches of 200 calls, in milliseconds, and the ratios; asserts nothing (timings
depend on the machine: the unit tests do not time anything).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

if __package__ in (None, ""):  # run as a script: make ``fedledger`` importable from src/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak

from fedledger.gossip.identity import Identity, recover_signer


def best_ms(fn: Callable[[], object], batches: int = 5, n: int = 200) -> float:
    best = float("inf")
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e3)
    return best


def main() -> None:
    payload = b'{"body":{"cid":"' + b"b" * 59 + b'"},"kind":"fetch"}' + b" " * 200
    me = Identity.generate()
    account = Account.from_key(me.private_key)
    message = encode_defunct(primitive=keccak(payload))
    signature = me.sign(payload)
    assert recover_signer(payload, signature) == me.address
    ours_sign = best_ms(lambda: me.sign(payload))
    ours_recover = best_ms(lambda: recover_signer(payload, signature))
    theirs_sign = best_ms(lambda: account.sign_message(message))
    theirs_recover = best_ms(lambda: Account.recover_message(message, signature=signature))
    print(f"{'':10} {'fedledger ms':>13} {'eth-account ms':>15} {'ratio':>7}")
    for name, ours, theirs in (("sign", ours_sign, theirs_sign),
                               ("recover", ours_recover, theirs_recover)):  # fmt: skip
        print(f"{name:10} {ours:13.3f} {theirs:15.3f} {ours / theirs:7.2f}")


if __name__ == "__main__":
    main()
