# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@notice Test-only stand-in for the four Task views ModelNFT reads: `lineage`,
        `governor`, `owner` and `status_of`, with setters. `finalize` chains
        a round into the lineage as the Task does: h = keccak256(abi_encode(
        h, round, model)) from h = 0.
"""

last_round: public(uint256)
last_hash: public(bytes32)
governor: public(address)
owner: public(address)
status_of: public(HashMap[address, uint8])


@deploy
def __init__():
    self.owner = msg.sender


@external
@view
def lineage() -> (uint256, bytes32):
    return self.last_round, self.last_hash


@external
def finalize(round: uint256, model: bytes32):
    assert round > self.last_round, "rounds not increasing"
    self.last_hash = keccak256(abi_encode(self.last_hash, round, model))
    self.last_round = round


@external
def set_lineage(round: uint256, h: bytes32):
    self.last_round = round
    self.last_hash = h


@external
def set_governor(governor: address):
    self.governor = governor


@external
def set_owner(owner: address):
    self.owner = owner


@external
def set_status(account: address, status: uint8):
    self.status_of[account] = status
