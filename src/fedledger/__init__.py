"""fedledger: decentralized federated learning with a verifiable Web3 ledger."""

__version__ = "0.1.0"
