# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma optimize gas
"""
@title fedledger reward token
@license Apache-2.0
@notice The ERC-20 (with EIP-2612 permits) in which federated learning
        tasks pay their contributors. Everything is snekmate's `erc20`
        and `ownable`: there is no hand-written token or ownership code
        here. The deployer becomes the owner (and, by snekmate's design,
        a minter); the owner grants the minter role to a `Task` contract
        with `set_minter(task, True)`. Only minters can mint. For a
        deployment where no person can mint, the owner calls
        `renounce_ownership()` after granting the role, which also
        removes the owner's own minter role.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

# The whole ERC-20 surface: transfer, approve, transferFrom, permit, mint,
# set_minter, is_minter, burn, burn_from, owner, transfer_ownership, ...
exports: erc20.__interface__


@deploy
@payable
def __init__(
    name_: String[25],
    symbol_: String[5],
    decimals_: uint8,
    name_eip712_: String[50],
    version_eip712_: String[20],
):
    """
    @param name_ The token's name (at most 25 characters).
    @param symbol_ The token's symbol (at most 5 characters).
    @param decimals_ The token's decimal places (18 as a rule).
    @param name_eip712_ The EIP-712 signing domain name (for permits).
    @param version_eip712_ The EIP-712 signing domain version.
    """
    ownable.__init__()
    erc20.__init__(name_, symbol_, decimals_, name_eip712_, version_eip712_)
