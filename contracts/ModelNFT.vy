# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma optimize gas
"""
@title fedledger model NFT: one ERC-721 token per finalized round of a task
@license Apache-2.0
@notice One contract per task. Token `r` is the model that round r of the
        task finalized: its digest, its parent (the task's previous
        finalized round, 0 for the first), and the differential privacy
        epsilon its minter claims for it. Tokens are minted lazily, in
        round order, by a member of the task, its owner or its governor:
        `mint` extends this contract's lineage hash with the rounds given,
        h = keccak256(abi_encode(h, round, model)) from h = 0, and the result
        must be the task's own (`lineage()`), so only the task's finalized
        rounds, all of them, in order and with their models, can be minted.
        A backlog of more than MAX_MINT rounds is minted MAX_MINT at a time
        with `mint_prefix`, whose later rounds (checked, not minted) carry
        the chain on to the task's lineage. The tokens go to the task's
        governor (its timelock), or to the task itself when it has none
        (then they stay there: the Task has no call that moves them). They
        are standard ERC-721 tokens (snekmate's `erc721`, enumerable): their
        holder may transfer or sell them. `tokenURI(r)` is "ipfs://" and the
        model's CIDv1 (raw codec, sha2-256, base32), computed from its
        digest.

        The epsilon (in millionths; 0 = no differential privacy) is a claim
        by the minter, not checked here: fedledger's audit recomputes it
        from the task's configuration and its rounds. See docs/governance.md.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc721

initializes: ownable
initializes: erc721[ownable := ownable]

# The ERC-721 surface (with enumeration and EIP-4494 permits); no `safe_mint`,
# `set_minter` or `burn`: tokens are minted by `mint` below only, and a
# model's token is never destroyed.
exports: (
    erc721.supportsInterface,
    erc721.balanceOf,
    erc721.ownerOf,
    erc721.approve,
    erc721.getApproved,
    erc721.setApprovalForAll,
    erc721.isApprovedForAll,
    erc721.transferFrom,
    erc721.safeTransferFrom,
    erc721.name,
    erc721.symbol,
    erc721.totalSupply,
    erc721.tokenByIndex,
    erc721.tokenOfOwnerByIndex,
    erc721.permit,
    erc721.nonces,
    erc721.DOMAIN_SEPARATOR,
    erc721.eip712Domain,
)


interface ITask:
    def lineage() -> (uint256, bytes32): view
    def governor() -> address: view
    def owner() -> address: view
    def status_of(account: address) -> uint8: view


# The task's active member status (Task.status_of).
STATUS_ACTIVE: constant(uint8) = 1
# The most rounds one call mints, and the most later rounds `mint_prefix`
# checks (a backlog of more than MAX_MINT rounds is minted MAX_MINT at a time,
# each call given the rest of the chain up to the task's lineage).
MAX_MINT: public(constant(uint256)) = 64
MAX_CHAIN: public(constant(uint256)) = 1024

# Token id -> model digest, and epsilon (written when not zero). A token's
# parent is not stored: tokens are minted in round order and never burned, so
# it is the token before it in snekmate's enumeration (`tokenByIndex`).
_model: HashMap[uint256, bytes32]
_epsilon: HashMap[uint256, uint256]

task: public(immutable(address))
# The last round minted, and the lineage hash up to it (0 before the first).
last_minted: public(uint256)
last_hash: public(bytes32)


event ModelMinted:
    round: indexed(uint256)
    model: bytes32
    parent: uint256
    epsilon: uint256


@deploy
def __init__(
    task_: address,
    name_: String[25],
    symbol_: String[5],
    name_eip712_: String[50],
    version_eip712_: String[20],
):
    """
    @param task_ The task whose models this contract mints.
    @param name_ The collection's name (at most 25 characters).
    @param symbol_ The collection's symbol (at most 5 characters).
    @param name_eip712_ The EIP-712 domain name (for permits).
    @param version_eip712_ The EIP-712 domain version.
    """
    assert task_ != empty(address), "task is the zero address"
    task = task_
    ownable.__init__()
    erc721.__init__(name_, symbol_, "", name_eip712_, version_eip712_)


@external
def mint(
    rounds: DynArray[uint256, MAX_MINT],
    models: DynArray[bytes32, MAX_MINT],
    epsilons: DynArray[uint256, MAX_MINT],
) -> uint256:
    """
    @notice A member of the task, its owner or its governor: mint the task's
            finalized rounds not minted yet. `rounds` (increasing) and
            `models` must be every round the task finalized after
            `last_minted`, with its model digest; `epsilons` the epsilon
            claimed for each (millionths). Returns how many were minted.
    """
    owner: address = self._check_minter(len(rounds), len(models), len(epsilons))
    h: bytes32 = empty(bytes32)
    last: uint256 = 0
    h, last = self._extend(self.last_hash, self.last_minted, rounds, models)
    self._check_lineage(h, last)
    self._mint(owner, rounds, models, epsilons, h)
    return len(rounds)


@external
def mint_prefix(
    rounds: DynArray[uint256, MAX_MINT],
    models: DynArray[bytes32, MAX_MINT],
    epsilons: DynArray[uint256, MAX_MINT],
    later_rounds: DynArray[uint256, MAX_CHAIN],
    later_models: DynArray[bytes32, MAX_CHAIN],
) -> uint256:
    """
    @notice As `mint`, for a backlog of more than MAX_MINT rounds: mints
            `rounds` (the next ones after `last_minted`), which
            `later_rounds` and `later_models` (not minted) must extend to the
            task's lineage.
    """
    owner: address = self._check_minter(len(rounds), len(models), len(epsilons))
    assert len(later_models) == len(later_rounds), "length mismatch"
    minted: bytes32 = empty(bytes32)
    last: uint256 = 0
    minted, last = self._extend(self.last_hash, self.last_minted, rounds, models)
    h: bytes32 = minted
    for i: uint256 in range(MAX_CHAIN):
        if i == len(later_rounds):
            break
        assert later_rounds[i] > last, "rounds not increasing"
        last = later_rounds[i]
        h = keccak256(abi_encode(h, last, later_models[i]))
    self._check_lineage(h, last)
    self._mint(owner, rounds, models, epsilons, minted)
    return len(rounds)


@internal
def _check_minter(n: uint256, models: uint256, epsilons: uint256) -> address:
    """
    @dev The arguments' lengths and the caller's right to mint; returns who
         gets the tokens: the task's governor, or the task when it has none.
    """
    assert n > 0, "nothing to mint"
    assert models == n and epsilons == n, "length mismatch"
    governor: address = staticcall ITask(task).governor()
    assert (
        staticcall ITask(task).status_of(msg.sender) == STATUS_ACTIVE
        or msg.sender == staticcall ITask(task).owner()
        or (governor != empty(address) and msg.sender == governor)
    ), "not a member, owner or governor"
    if governor == empty(address):
        return task
    return governor


@internal
@pure
def _extend(
    h: bytes32, last: uint256, rounds: DynArray[uint256, MAX_MINT], models: DynArray[bytes32, MAX_MINT]
) -> (bytes32, uint256):
    """
    @dev The lineage hash `h` (up to round `last`) extended with `rounds`.
    """
    chained: bytes32 = h
    previous: uint256 = last
    for i: uint256 in range(MAX_MINT):
        if i == len(rounds):
            break
        assert rounds[i] > previous, "rounds not increasing"
        previous = rounds[i]
        chained = keccak256(abi_encode(chained, previous, models[i]))
    return chained, previous


@internal
@view
def _check_lineage(h: bytes32, last: uint256):
    task_round: uint256 = 0
    task_hash: bytes32 = empty(bytes32)
    task_round, task_hash = staticcall ITask(task).lineage()
    assert h == task_hash and last == task_round, "not the task's lineage"


@internal
def _mint(
    owner: address,
    rounds: DynArray[uint256, MAX_MINT],
    models: DynArray[bytes32, MAX_MINT],
    epsilons: DynArray[uint256, MAX_MINT],
    h: bytes32,
):
    """
    @dev Mint token `round` for each round, to `owner`; `h`: the lineage hash
         up to the last of them.
    """
    parent: uint256 = self.last_minted
    for i: uint256 in range(MAX_MINT):
        if i == len(rounds):
            break
        round: uint256 = rounds[i]
        # No receiver hook: the owner is the task or its governor.
        erc721._mint(owner, round)
        self._model[round] = models[i]
        if epsilons[i] != 0:
            self._epsilon[round] = epsilons[i]
        log ModelMinted(round=round, model=models[i], parent=parent, epsilon=epsilons[i])
        parent = round
    self.last_minted = parent
    self.last_hash = h


# ---------------------------------------------------------------- views

@external
@view
def model_of(id: uint256) -> bytes32:
    """
    @notice The model digest of token (round) `id`.
    """
    erc721._require_minted(id)
    return self._model[id]


@external
@view
def parent_of(id: uint256) -> uint256:
    """
    @notice The previous finalized round of the task (0: `id` is the first).
    """
    erc721._require_minted(id)
    index: uint256 = erc721._all_tokens_index[id]
    if index == 0:
        return 0
    return erc721._all_tokens[index - 1]


@external
@view
def epsilon_of(id: uint256) -> uint256:
    """
    @notice The epsilon claimed for the model, in millionths (0: no
            differential privacy): a claim that fedledger's audit checks.
    """
    erc721._require_minted(id)
    return self._epsilon[id]


@external
@view
def tokenURI(id: uint256) -> String[80]:
    """
    @notice "ipfs://" and the model's CIDv1 string.
    """
    erc721._require_minted(id)
    return self._cid_uri(self._model[id])


@external
@pure
def cid_uri(digest: bytes32) -> String[80]:
    """
    @notice "ipfs://" and the CIDv1 (raw, sha2-256, base32) of a sha256
            digest: "b" + base32(0x01 0x55 0x12 0x20 || digest), lowercase,
            without padding.
    """
    return self._cid_uri(digest)


@internal
@pure
def _cid_uri(digest: bytes32) -> String[80]:
    """
    @dev base32 of the 36 bytes 01 55 12 20 || digest, 58 characters. The
         prefix's first 30 bits are always "afkrei"; the 7th character takes
         the prefix's last 2 bits (zero) and the digest's first 3, and the
         last character the digest's last 3 bits and 2 bits of padding. So
         the 52 characters after "afkrei" are 5-bit groups of the 260-bit
         number d << 2 (d: the digest as an integer), most significant
         first. Each character is written into a 32-byte word, most
         significant byte first: characters 0-31 into the first word,
         32-51 into the top of the second.
    """
    d: uint256 = convert(digest, uint256)
    first: uint256 = 0
    second: uint256 = 0
    for j: uint256 in range(52):
        c: uint256 = 0
        if j < 51:
            # Bits [5 * (51 - j), + 5) of d << 2.
            c = (d >> (5 * (51 - j) - 2)) & 31
        else:
            c = (d & 7) << 2
        # a-z for 0-25, 2-7 for 26-31.
        if c < 26:
            c += 97
        else:
            c += 24
        if j < 32:
            first = (first << 8) | c
        else:
            second = (second << 8) | c
    second = second << 96
    text: Bytes[80] = concat(
        b"ipfs://bafkrei",
        convert(first, bytes32),
        slice(convert(second, bytes32), 0, 20),
    )
    return convert(text, String[80])
