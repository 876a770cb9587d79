"""Peer-to-peer layer: identities, signed messages, transports, blobs and gossip."""
