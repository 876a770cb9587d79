"""The ledger: contracts, chain backends and the audit."""
