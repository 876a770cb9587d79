"""One thin async shell per mode around its I/O-free state machine.

* :mod:`~fedledger.node.drivers.consensus`: synchronous rounds that agree on one model
  (:class:`fedledger.node.consensus.ConsensusNode`);
* :mod:`~fedledger.node.drivers.gossip`: asynchronous neighbour averaging
  (:class:`fedledger.node.gossip_mode.GossipLearner`);
* :mod:`~fedledger.node.drivers.ledger`: rounds of signed messages (updates and
  attestations) certified on the task's contract
  (:class:`fedledger.node.ledger_round.LedgerRoundNode`).

Each implements :class:`fedledger.node.services.Driver` and reaches the world only through
:class:`fedledger.node.services.Services`.
"""
