"""Chain backends: one narrow interface (:class:`Chain`), two implementations.

* :class:`EmbeddedChain` (:mod:`~fedledger.ledger.chain.embedded`) — an in-process EVM
  (web3.py's ``EthereumTesterProvider`` over eth-tester's py-evm backend). Zero set-up,
  deterministic, and journaled (:mod:`~fedledger.ledger.chain.journal`): every block it mines
  is recorded so that :meth:`EmbeddedChain.save` and :meth:`EmbeddedChain.replay` rebuild an
  identical chain later, for the audit.
* :class:`RpcChain` (:mod:`~fedledger.ledger.chain.rpc`) — any JSON-RPC node over HTTP (tested
  against anvil on 127.0.0.1; :mod:`~fedledger.ledger.chain.anvil` installs and starts one).

Both share the same semantics, implemented once in
:class:`~fedledger.ledger.chain.web3.Web3Chain`:

* Transactions are signed locally with the sender's key (never ``eth_sendTransaction``), with
  locally managed nonces (the pending nonce is read once per sender, then incremented; it is
  read again after a nonce error, which is retried).
* The gas limit is always explicit. When the caller gives none, the default for a
  ``(contract address, function signature)`` pair is estimated once, the first time, and
  ``ceil(estimate * 1.5)`` is reused for every later call (estimating runs the transaction an
  extra time, and py-evm's estimate runs it several times). A transaction that runs out of gas
  under that default raises :class:`~fedledger.errors.TransactionReverted` with reason
  ``"out of gas"`` and drops the cached default, so the next call estimates again.
* A function of an address without code is refused (checked once per address): the EVM would
  run nothing and report success.
* A revert, whether found while estimating or in a mined receipt (status 0), raises
  :class:`~fedledger.errors.TransactionReverted` with the decoded ``Error(string)`` reason when
  there is one: the same exception and reason on both backends (eth-tester's
  ``TransactionFailed`` and web3's ``ContractLogicError`` are both translated). For a mined
  failure, the reason is recovered by replaying the transaction with ``eth_call`` in its block.
* Views (:meth:`Chain.call`) and other reads are retried on transient connection errors, a
  bounded number of times; then :class:`~fedledger.errors.ChainUnavailable` is raised.
* Events are read in bounded block windows (:meth:`Chain.events`).
* Errors: every public method raises only fedledger's errors, the original as ``__cause__``
  (:mod:`~fedledger.ledger.chain.base` lists which error means what).
"""

from fedledger.ledger.chain.base import GAS_BUFFER, OUT_OF_GAS, Chain, Receipt
from fedledger.ledger.chain.embedded import EmbeddedChain
from fedledger.ledger.chain.rpc import RpcChain

__all__ = ["GAS_BUFFER", "OUT_OF_GAS", "Chain", "EmbeddedChain", "Receipt", "RpcChain"]
