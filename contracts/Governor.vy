# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma optimize gas
"""
@title fedledger governor: token-weighted proposals through a timelock
@license Apache-2.0
@notice Holders of a task's reward token govern it. A proposal is one call
        (a target and its calldata) with a description. Votes are the
        token's checkpointed balances (`getPastVotes`) at the proposal's
        snapshot, the block before the one that created it: tokens acquired
        in that block or later do not count, and every voter's weight is
        fixed. Voting is open for `voting_period` seconds; then the proposal
        succeeded if more votes are for than against, for + abstain reach
        the quorum (`quorum_bps` of the total supply at the snapshot, rounded
        up) and at least one vote is for. Anyone then queues it on the
        timelock (with the timelock's minimum delay) and, once that delay is
        over, executes it: the timelock makes the call. The Governor must
        hold the timelock's proposer and executor roles; the timelock owns,
        or governs, the governed contract.

        The Governor stores hashes and counters only: the call and the
        description travel in the `ProposalCreated` event, and queue and
        execute are given them again (the proposal id is their hash).

        States: 0 unknown (no such proposal), 1 active (voting), 2 defeated,
        3 succeeded, 4 queued, 5 executed, 6 canceled. See
        docs/governance.md.
"""

interface IVotes:
    def getPastVotes(account: address, timepoint: uint256) -> uint256: view
    def getPastTotalSupply(timepoint: uint256) -> uint256: view


interface ITimelock:
    def get_minimum_delay() -> uint256: view
    def get_timestamp(id: bytes32) -> uint256: view
    def is_operation_ready(id: bytes32) -> bool: view
    def schedule(target: address, amount: uint256, payload: Bytes[MAX_CALL], predecessor: bytes32, salt: bytes32, delay: uint256): nonpayable
    def execute(target: address, amount: uint256, payload: Bytes[MAX_CALL], predecessor: bytes32, salt: bytes32): payable


# The longest calldata of a proposal (the Timelock's MAX_CALL): a
# Task.reconfigure carrying an 8,192-byte document is about 8,600 bytes.
MAX_CALL: public(constant(uint256)) = 10240
MAX_DESCRIPTION: public(constant(uint256)) = 1024
BPS: constant(uint256) = 10000

# Proposal states (see `state`).
STATE_UNKNOWN: constant(uint8) = 0
STATE_ACTIVE: constant(uint8) = 1
STATE_DEFEATED: constant(uint8) = 2
STATE_SUCCEEDED: constant(uint8) = 3
STATE_QUEUED: constant(uint8) = 4
STATE_EXECUTED: constant(uint8) = 5
STATE_CANCELED: constant(uint8) = 6

# Vote types.
VOTE_AGAINST: constant(uint8) = 0
VOTE_FOR: constant(uint8) = 1
VOTE_ABSTAIN: constant(uint8) = 2

# The timelock's "done" timestamp (snekmate's _DONE_TIMESTAMP).
_DONE: constant(uint256) = 1
_MASK48: constant(uint256) = 2**48 - 1


# A proposal's storage. `core` packs (proposer << 96) | (snapshot << 48) |
# deadline: proposing fills one slot.
struct Proposal:
    core: uint256
    for_votes: uint256
    against_votes: uint256
    abstain_votes: uint256
    # The timelock operation, once queued.
    operation: bytes32
    canceled: bool


# What `proposal(id)` returns.
struct ProposalView:
    proposer: address
    snapshot: uint256
    deadline: uint256
    for_votes: uint256
    against_votes: uint256
    abstain_votes: uint256
    quorum: uint256
    operation: bytes32
    eta: uint256
    state: uint8


token: public(immutable(address))
timelock: public(immutable(address))
# Seconds from a proposal's creation to the end of its vote.
voting_period: public(immutable(uint256))
# The quorum, in basis points of the total supply at the snapshot.
quorum_bps: public(immutable(uint256))
# Votes (at the block before) an account needs to propose.
proposal_threshold: public(immutable(uint256))

_proposals: HashMap[uint256, Proposal]
has_voted: public(HashMap[uint256, HashMap[address, bool]])


event ProposalCreated:
    id: indexed(uint256)
    proposer: address
    target: address
    data: Bytes[MAX_CALL]
    description: String[MAX_DESCRIPTION]
    snapshot: uint256
    deadline: uint256


event VoteCast:
    voter: indexed(address)
    id: indexed(uint256)
    support: uint8
    weight: uint256


event ProposalQueued:
    id: indexed(uint256)
    operation: bytes32
    eta: uint256


event ProposalExecuted:
    id: indexed(uint256)


event ProposalCanceled:
    id: indexed(uint256)


@deploy
def __init__(
    token_: address,
    timelock_: address,
    voting_period_: uint256,
    quorum_bps_: uint256,
    proposal_threshold_: uint256,
):
    """
    @param token_ The votes token (fedledger's RewardToken).
    @param timelock_ The timelock that runs passed proposals.
    @param voting_period_ Seconds of voting (more than zero).
    @param quorum_bps_ The quorum, in basis points of the past total supply:
           (0, 10000].
    @param proposal_threshold_ Votes needed to propose (0: anyone).
    """
    assert token_ != empty(address), "token is the zero address"
    assert timelock_ != empty(address), "timelock is the zero address"
    assert voting_period_ > 0, "voting period is zero"
    assert voting_period_ < 2**32, "voting period above 2**32 - 1 seconds"
    assert quorum_bps_ > 0 and quorum_bps_ <= BPS, "quorum out of range"
    token = token_
    timelock = timelock_
    voting_period = voting_period_
    quorum_bps = quorum_bps_
    proposal_threshold = proposal_threshold_


# ---------------------------------------------------------------- views

@external
@pure
def proposal_id(target: address, data: Bytes[MAX_CALL], description: String[MAX_DESCRIPTION]) -> uint256:
    """
    @notice A proposal's id: keccak256(abi_encode(target, keccak256(data),
            keccak256(description))).
    """
    return self._id(target, data, description)


@external
@view
def state(id: uint256) -> uint8:
    """
    @notice 0 unknown, 1 active, 2 defeated, 3 succeeded, 4 queued,
            5 executed, 6 canceled.
    """
    return self._state(id)


@external
@view
def quorum(snapshot: uint256) -> uint256:
    """
    @notice The votes (for + abstain) a proposal with this snapshot needs:
            quorum_bps of the total supply then, rounded up.
    """
    return self._quorum(snapshot)


@external
@view
def proposal(id: uint256) -> ProposalView:
    """
    @notice A proposal's counters and state (all zero for an unknown id).
            `eta`: when its timelock operation becomes ready (0: not queued,
            1: executed).
    """
    p: Proposal = self._proposals[id]
    q: uint256 = 0
    eta: uint256 = 0
    if p.core != 0:
        q = self._quorum((p.core >> 48) & _MASK48)
    if p.operation != empty(bytes32):
        eta = staticcall ITimelock(timelock).get_timestamp(p.operation)
    return ProposalView(
        proposer=convert(p.core >> 96, address),
        snapshot=(p.core >> 48) & _MASK48,
        deadline=p.core & _MASK48,
        for_votes=p.for_votes,
        against_votes=p.against_votes,
        abstain_votes=p.abstain_votes,
        quorum=q,
        operation=p.operation,
        eta=eta,
        state=self._state(id),
    )


@internal
@pure
def _id(target: address, data: Bytes[MAX_CALL], description: String[MAX_DESCRIPTION]) -> uint256:
    return convert(keccak256(abi_encode(target, keccak256(data), keccak256(description))), uint256)


@internal
@view
def _quorum(snapshot: uint256) -> uint256:
    supply: uint256 = staticcall IVotes(token).getPastTotalSupply(snapshot)
    return (supply * quorum_bps + BPS - 1) // BPS


@internal
@view
def _state(id: uint256) -> uint8:
    # Field by field: an active proposal's state reads two storage slots.
    core: uint256 = self._proposals[id].core
    if core == 0:
        return STATE_UNKNOWN
    if self._proposals[id].canceled:
        return STATE_CANCELED
    if block.timestamp <= core & _MASK48:
        return STATE_ACTIVE
    operation: bytes32 = self._proposals[id].operation
    if operation != empty(bytes32):
        # The timelock's word on it: done, still pending, or canceled there.
        at: uint256 = staticcall ITimelock(timelock).get_timestamp(operation)
        if at == _DONE:
            return STATE_EXECUTED
        if at == 0:
            return STATE_CANCELED
        return STATE_QUEUED
    for_votes: uint256 = self._proposals[id].for_votes
    if (
        for_votes > self._proposals[id].against_votes
        and for_votes + self._proposals[id].abstain_votes >= self._quorum((core >> 48) & _MASK48)
    ):
        return STATE_SUCCEEDED
    return STATE_DEFEATED


# ---------------------------------------------------------------- proposals

@external
def propose(target: address, data: Bytes[MAX_CALL], description: String[MAX_DESCRIPTION]) -> uint256:
    """
    @notice Propose that the timelock call `target` with `data`. Needs
            `proposal_threshold` votes at the previous block. Voting opens at
            once, with the previous block as the snapshot, and closes
            `voting_period` seconds from now.
    """
    assert target != empty(address), "target is the zero address"
    snapshot: uint256 = block.number - 1
    if proposal_threshold > 0:
        votes: uint256 = staticcall IVotes(token).getPastVotes(msg.sender, snapshot)
        assert votes >= proposal_threshold, "below the proposal threshold"
    id: uint256 = self._id(target, data, description)
    assert self._proposals[id].core == 0, "proposal exists"
    deadline: uint256 = block.timestamp + voting_period
    self._proposals[id].core = (convert(msg.sender, uint256) << 96) | (snapshot << 48) | deadline
    log ProposalCreated(
        id=id,
        proposer=msg.sender,
        target=target,
        data=data,
        description=description,
        snapshot=snapshot,
        deadline=deadline,
    )
    return id


@external
def castVote(id: uint256, support: uint8) -> uint256:
    """
    @notice Vote on an active proposal: 0 against, 1 for, 2 abstain, with
            the caller's votes at the snapshot. Once per account. Returns
            the weight.
    """
    assert support <= VOTE_ABSTAIN, "invalid vote type"
    state: uint8 = self._state(id)
    assert state != STATE_UNKNOWN, "unknown proposal"
    assert state == STATE_ACTIVE, "voting is closed"
    assert not self.has_voted[id][msg.sender], "already voted"
    snapshot: uint256 = (self._proposals[id].core >> 48) & _MASK48
    weight: uint256 = staticcall IVotes(token).getPastVotes(msg.sender, snapshot)
    assert weight > 0, "no votes"
    self.has_voted[id][msg.sender] = True
    if support == VOTE_FOR:
        self._proposals[id].for_votes += weight
    elif support == VOTE_AGAINST:
        self._proposals[id].against_votes += weight
    else:
        self._proposals[id].abstain_votes += weight
    log VoteCast(voter=msg.sender, id=id, support=support, weight=weight)
    return weight


@external
def cancel(target: address, data: Bytes[MAX_CALL], description: String[MAX_DESCRIPTION]) -> uint256:
    """
    @notice The proposer withdraws an active proposal no one voted on yet.
    """
    id: uint256 = self._id(target, data, description)
    state: uint8 = self._state(id)
    assert state != STATE_UNKNOWN, "unknown proposal"
    assert msg.sender == convert(self._proposals[id].core >> 96, address), "not the proposer"
    assert state == STATE_ACTIVE, "proposal is not active"
    p: Proposal = self._proposals[id]
    assert p.for_votes == 0 and p.against_votes == 0 and p.abstain_votes == 0, "votes were cast"
    self._proposals[id].canceled = True
    log ProposalCanceled(id=id)
    return id


@external
def queue(target: address, data: Bytes[MAX_CALL], description: String[MAX_DESCRIPTION]) -> uint256:
    """
    @notice Anyone: schedule a succeeded proposal's call on the timelock,
            with the timelock's minimum delay (salt: the proposal id).
    """
    id: uint256 = self._id(target, data, description)
    assert self._state(id) == STATE_SUCCEEDED, "proposal has not succeeded"
    salt: bytes32 = convert(id, bytes32)
    operation: bytes32 = keccak256(abi_encode(target, empty(uint256), data, empty(bytes32), salt))
    self._proposals[id].operation = operation
    delay: uint256 = staticcall ITimelock(timelock).get_minimum_delay()
    extcall ITimelock(timelock).schedule(target, 0, data, empty(bytes32), salt, delay)
    log ProposalQueued(id=id, operation=operation, eta=block.timestamp + delay)
    return id


@external
@nonreentrant
def execute(target: address, data: Bytes[MAX_CALL], description: String[MAX_DESCRIPTION]) -> uint256:
    """
    @notice Anyone: run a queued proposal's call through the timelock, once
            its delay is over.
    """
    id: uint256 = self._id(target, data, description)
    assert self._state(id) == STATE_QUEUED, "proposal is not queued"
    assert staticcall ITimelock(timelock).is_operation_ready(self._proposals[id].operation), "timelock delay not over"
    extcall ITimelock(timelock).execute(target, 0, data, empty(bytes32), convert(id, bytes32))
    log ProposalExecuted(id=id)
    return id
