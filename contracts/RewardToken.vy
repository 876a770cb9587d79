# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma optimize gas
"""
@title fedledger reward token
@license Apache-2.0
@notice The ERC-20 (with EIP-2612 permits) in which federated learning
        tasks pay their contributors, with checkpointed votes (the read
        side of ERC-5805, with the ERC-6372 clock) for governance.
        Token and ownership are snekmate's `erc20` and `ownable`: the
        deployer becomes the owner (and, by snekmate's design, a minter);
        the owner grants the minter role to a `Task` contract with
        `set_minter(task, True)`. Only minters can mint. For a deployment
        where no person can mint, the owner calls `renounce_ownership()`
        after granting the role, which also removes the owner's own
        minter role.

        Votes: an account's votes ARE its balance. There is no delegation
        (every holder is its own delegate, always), so votes cannot be lent
        or moved without moving the tokens. Every balance change (transfer,
        transferFrom, mint, burn, burn_from) records the new balances of
        the accounts it touched, and the new total supply, as checkpoints
        keyed by block number: at most one per account (and one for the
        supply) per block, the last change of a block overwriting the
        earlier ones. `getPastVotes(account, b)` and `getPastTotalSupply(b)`
        answer as of the end of block b (b < the current block), by binary
        search. A checkpoint packs its block (48 bits) and its value
        (160 bits) in one word, so the total supply is capped at
        2**160 - 1 (about 1.4e30 tokens of 18 decimals). See
        docs/governance.md.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

# The ERC-20 surface except the five functions that move balances, which are
# wrapped below to record checkpoints.
exports: (
    erc20.approve,
    erc20.allowance,
    erc20.balanceOf,
    erc20.totalSupply,
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
    erc20.is_minter,
    erc20.set_minter,
    erc20.owner,
    erc20.transfer_ownership,
    erc20.renounce_ownership,
)


# A key's checkpoints: the latest one lives in its head word, packed with the
# count, (count << 208) | (block << 160) | value; the earlier ones in its
# history, (block << 160) | value, oldest first. A holder's first checkpoint
# thus fills one storage slot, and every later one (in a new block) one more:
# the count costs no slot of its own.
_BLOCK_SHIFT: constant(uint256) = 160
_COUNT_SHIFT: constant(uint256) = 208
_VALUE_MASK: constant(uint256) = 2**160 - 1
_BLOCK_MASK: constant(uint256) = 2**48 - 1
_ENTRY_MASK: constant(uint256) = 2**208 - 1
# The key of the total supply's checkpoints (no address converts to it).
_SUPPLY: constant(uint256) = 2**160


struct Checkpoint:
    fromBlock: uint48
    votes: uint208


# By key: an account as uint256, or _SUPPLY.
_heads: HashMap[uint256, uint256]
_history: HashMap[uint256, HashMap[uint256, uint256]]


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


# ---------------------------------------------------------------- balances

@external
def transfer(to: address, amount: uint256) -> bool:
    """
    @notice snekmate's `transfer`, then the checkpoints.
    """
    erc20._transfer(msg.sender, to, amount)
    self._moved(msg.sender, to, amount)
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    """
    @notice snekmate's `transferFrom`, then the checkpoints.
    """
    erc20._spend_allowance(owner, msg.sender, amount)
    erc20._transfer(owner, to, amount)
    self._moved(owner, to, amount)
    return True


@external
def mint(owner: address, amount: uint256):
    """
    @notice snekmate's `mint` (minters only), then the checkpoints.
    """
    assert erc20.is_minter[msg.sender], "erc20: access is denied"
    erc20._mint(owner, amount)
    assert erc20.totalSupply <= _VALUE_MASK, "votes: total supply over 2**160 - 1"
    self._moved(empty(address), owner, amount)


@external
def burn(amount: uint256):
    """
    @notice snekmate's `burn`, then the checkpoints.
    """
    erc20._burn(msg.sender, amount)
    self._moved(msg.sender, empty(address), amount)


@external
def burn_from(owner: address, amount: uint256):
    """
    @notice snekmate's `burn_from`, then the checkpoints.
    """
    erc20._spend_allowance(owner, msg.sender, amount)
    erc20._burn(owner, amount)
    self._moved(owner, empty(address), amount)


@internal
def _moved(owner: address, to: address, amount: uint256):
    """
    @dev Record the balances (and the supply) after `amount` moved from
         `owner` (zero: minted) to `to` (zero: burned). Nothing changed when
         the amount is zero or the account pays itself.
    """
    if amount == 0 or owner == to:
        return
    if owner == empty(address) or to == empty(address):
        self._push(_SUPPLY, erc20.totalSupply)
    if owner != empty(address):
        self._push(convert(owner, uint256), erc20.balanceOf[owner])
    if to != empty(address):
        self._push(convert(to, uint256), erc20.balanceOf[to])


@internal
def _push(key: uint256, amount: uint256):
    """
    @dev Record `amount` for `key` at the current block: overwrite the latest
         checkpoint if it is this block's, else move it to the history and
         start a new one.
    """
    head: uint256 = self._heads[key]
    n: uint256 = head >> _COUNT_SHIFT
    entry: uint256 = (block.number << _BLOCK_SHIFT) | amount
    if n > 0:
        if (head >> _BLOCK_SHIFT) & _BLOCK_MASK == block.number:
            self._heads[key] = (n << _COUNT_SHIFT) | entry
            return
        self._history[key][unsafe_sub(n, 1)] = head & _ENTRY_MASK
    self._heads[key] = (unsafe_add(n, 1) << _COUNT_SHIFT) | entry


# ---------------------------------------------------------------- votes

@external
@view
def clock() -> uint48:
    """
    @notice ERC-6372: the clock is the block number.
    """
    return convert(block.number, uint48)


@external
@pure
def CLOCK_MODE() -> String[64]:
    """
    @notice ERC-6372: the clock's description.
    """
    return "mode=blocknumber&from=default"


@external
@view
def getVotes(account: address) -> uint256:
    """
    @notice `account`'s votes now: its balance (no delegation).
    """
    return self._latest(convert(account, uint256))


@external
@view
def getPastVotes(account: address, timepoint: uint256) -> uint256:
    """
    @notice `account`'s votes (its balance) at the end of block `timepoint`,
            which must be in the past.
    """
    assert timepoint < block.number, "future lookup"
    return self._lookup(convert(account, uint256), timepoint)


@external
@view
def getPastTotalSupply(timepoint: uint256) -> uint256:
    """
    @notice The total supply at the end of block `timepoint`, which must be
            in the past.
    """
    assert timepoint < block.number, "future lookup"
    return self._lookup(_SUPPLY, timepoint)


@external
@view
def numCheckpoints(account: address) -> uint256:
    """
    @notice How many checkpoints `account` has (one per block in which its
            balance changed).
    """
    return self._heads[convert(account, uint256)] >> _COUNT_SHIFT


@external
@view
def checkpoints(account: address, index: uint256) -> Checkpoint:
    """
    @notice `account`'s checkpoint number `index` (oldest first): from block
            `fromBlock` on (until the next checkpoint), its votes were
            `votes`.
    """
    key: uint256 = convert(account, uint256)
    head: uint256 = self._heads[key]
    n: uint256 = head >> _COUNT_SHIFT
    assert index < n, "checkpoint index out of bounds"
    entry: uint256 = head & _ENTRY_MASK
    if index < unsafe_sub(n, 1):
        entry = self._history[key][index]
    return Checkpoint(
        fromBlock=convert(entry >> _BLOCK_SHIFT, uint48),
        votes=convert(entry & _VALUE_MASK, uint208),
    )


@internal
@view
def _latest(key: uint256) -> uint256:
    return self._heads[key] & _VALUE_MASK


@internal
@view
def _lookup(key: uint256, timepoint: uint256) -> uint256:
    """
    @dev The value of the last checkpoint of `key` at or before block
         `timepoint` (0 if none): the latest one first (the usual answer
         for a recent snapshot), else a binary search of the history.
    """
    head: uint256 = self._heads[key]
    if (head >> _BLOCK_SHIFT) & _BLOCK_MASK <= timepoint:
        return head & _VALUE_MASK  # also 0 for a key without checkpoints
    # Invariant: history entries below `low` are at or before `timepoint`,
    # those at `high` and above (and the head) after it.
    low: uint256 = 0
    high: uint256 = unsafe_sub(head >> _COUNT_SHIFT, 1)
    for _: uint256 in range(256):
        if low >= high:
            break
        mid: uint256 = unsafe_add(low, unsafe_sub(high, low) >> 1)
        if self._history[key][mid] >> _BLOCK_SHIFT > timepoint:
            high = mid
        else:
            low = unsafe_add(mid, 1)
    if high == 0:
        return 0
    return self._history[key][unsafe_sub(high, 1)] & _VALUE_MASK
