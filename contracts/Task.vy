# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma optimize gas
"""
@title fedledger task: one federated learning task on chain
@license Apache-2.0
@notice The task's rules (immutable), its member registry (stake and
        endpoint per member), and its rounds: commit -> reveal -> attest
        phases per round. The windows are upper bounds: the commit phase
        closes early once every member eligible in the round (active at
        its start) committed, the reveal phase once every committer
        revealed. A quorum of the active stake (snapshotted at the round's
        start) attesting the same (model digest, result digest) pair
        finalizes the round and starts the next one. After a round
        finalizes, anyone may `distribute` its reward: the contributors and
        scores whose hash is the attested result digest. A member that
        attests two different pairs in one round loses its whole stake to
        the treasury. An update digest can be revealed once in the task's
        whole life (no replays, no shared updates). Each member's reputation
        counts its reveals and its selections (contributions with a nonzero
        score in a distributed round). Every state change emits an event,
        so that an auditor can replay the task from the logs alone: the
        deployment emits the task's whole configuration document
        (`Configured`, whose sha256 is `config_digest`), and the owner can
        grant auditors read access to the blobs (`grant_reader`). See
        docs/contracts.md.
"""

from snekmate.auth import ownable

initializes: ownable

# owner, transfer_ownership, renounce_ownership.
exports: ownable.__interface__


interface IRewardToken:
    def mint(owner: address, amount: uint256): nonpayable
    def balanceOf(owner: address) -> uint256: view


# The most members a task can have at once (the size of `members()`).
MAX: constant(uint256) = 256
BPS: constant(uint256) = 10000

# Phases of a round (see `phase`).
PHASE_NOT_STARTED: constant(uint8) = 0
PHASE_COMMIT: constant(uint8) = 1
PHASE_REVEAL: constant(uint8) = 2
PHASE_ATTEST: constant(uint8) = 3
PHASE_FINALIZED: constant(uint8) = 4
PHASE_FAILED: constant(uint8) = 5

# Member status (see `status_of`).
STATUS_NONE: constant(uint8) = 0
STATUS_ACTIVE: constant(uint8) = 1
STATUS_LEFT: constant(uint8) = 2
STATUS_SLASHED: constant(uint8) = 3

# The longest configuration document a task can publish (see `Configured`).
MAX_CONFIG: constant(uint256) = 8192

# Access policies (see `can_download`).
ACCESS_MEMBERS: constant(uint8) = 0
ACCESS_TOKEN_HOLDERS: constant(uint8) = 1
ACCESS_PUBLIC: constant(uint8) = 2

# Round status (internal; `phase` derives the rest from the clock).
_OPEN: constant(uint8) = 0
_FINALIZED: constant(uint8) = 1
_FAILED: constant(uint8) = 2


# ---------------------------------------------------------------- events

# Once, at deployment: the task's whole configuration, the canonical JSON
# document whose sha256 is `config_digest` (an auditor needs nothing else).
event Configured:
    config_digest: indexed(bytes32)
    document: Bytes[MAX_CONFIG]

event ReaderGranted:
    account: indexed(address)

event ReaderRevoked:
    account: indexed(address)

event Allowed:
    account: indexed(address)

event Disallowed:
    account: indexed(address)

event Joined:
    member: indexed(address)
    stake: uint256
    endpoint: String[256]
    first_round: uint256

event Left:
    member: indexed(address)
    withdraw_after: uint256

event Withdrawn:
    member: indexed(address)
    amount: uint256

event RoundStarted:
    round: indexed(uint256)
    start: uint256
    active_stake: uint256
    members: uint256

event Committed:
    round: indexed(uint256)
    member: indexed(address)
    commitment: bytes32

event Revealed:
    round: indexed(uint256)
    member: indexed(address)
    update_digest: bytes32
    cid: String[64]
    num_examples: uint256

event Attested:
    round: indexed(uint256)
    member: indexed(address)
    model_digest: bytes32
    result_digest: bytes32
    stake: uint256

event Equivocated:
    round: indexed(uint256)
    member: indexed(address)
    model_digest: bytes32
    result_digest: bytes32

event Slashed:
    member: indexed(address)
    amount: uint256
    treasury: address

event Finalized:
    round: indexed(uint256)
    model_digest: bytes32
    result_digest: bytes32

event Skipped:
    round: indexed(uint256)

# One per contributor with a nonzero score, in `distribute`: the event of
# `selections_of` (a contributor slashed since is selected, but not paid).
event Selected:
    round: indexed(uint256)
    contributor: indexed(address)
    score: uint256

event Rewarded:
    round: indexed(uint256)
    contributor: indexed(address)
    amount: uint256

event Distributed:
    round: indexed(uint256)
    total: uint256


# ---------------------------------------------------------------- the rules

token: public(immutable(address))
rule_id: public(immutable(uint8))
rule_params_digest: public(immutable(bytes32))
config_digest: public(immutable(bytes32))
quorum_bps: public(immutable(uint16))
min_stake: public(immutable(uint256))
commit_window: public(immutable(uint256))
reveal_window: public(immutable(uint256))
attest_window: public(immutable(uint256))
max_participants: public(immutable(uint16))
allowlist_only: public(immutable(bool))
reward_per_round: public(immutable(uint256))
access_policy: public(immutable(uint8))
cooldown: public(immutable(uint256))
treasury: public(immutable(address))


# ---------------------------------------------------------------- members

allowed: public(HashMap[address, bool])
# Accounts the owner lets download the task's blobs whatever the access
# policy (auditors): see `grant_reader`.
readers: public(HashMap[address, bool])
status_of: public(HashMap[address, uint8])
stake_of: public(HashMap[address, uint256])
endpoint_of: public(HashMap[address, String[256]])
# The first round whose quorum counts the member's stake (it may commit
# and attest from that round on): the round after the one during which it
# joined.
first_round_of: public(HashMap[address, uint256])
withdraw_after: public(HashMap[address, uint256])
# Sum of the stakes of the active members.
active_stake: public(uint256)
# The active members, in no particular order; `_position` is 1-based.
_members: DynArray[address, MAX]
_position: HashMap[address, uint256]

# ETH accounting (the contract's balance is always in - out - slashed).
total_staked: public(uint256)
total_withdrawn: public(uint256)
total_slashed: public(uint256)


# ---------------------------------------------------------------- rounds

current_round: public(uint256)
round_start: public(HashMap[uint256, uint256])
# The active stake at the round's start: the quorum's denominator.
round_stake: public(HashMap[uint256, uint256])
# The number of active members at the round's start: those eligible to
# commit in it. The commit phase closes early when all of them committed.
round_members: public(HashMap[uint256, uint256])
# Commitments and reveals made in the round. The reveal phase closes early
# when every committer revealed.
commit_count: public(HashMap[uint256, uint256])
reveal_count: public(HashMap[uint256, uint256])
# When the commit (reveal) phase closed early; zero while it did not.
_reveal_at: HashMap[uint256, uint256]
_attest_at: HashMap[uint256, uint256]
_round_status: HashMap[uint256, uint8]

commitment_of: public(HashMap[uint256, HashMap[address, bytes32]])
update_digest_of: public(HashMap[uint256, HashMap[address, bytes32]])
# Nonzero if and only if the member revealed in the round.
num_examples_of: public(HashMap[uint256, HashMap[address, uint256]])
# Every update digest revealed so far, by anyone, in any round: a digest is
# revealed once (a replayed or shared update reverts).
update_revealed: public(HashMap[bytes32, bool])

# Reputation, from past selection. `reveals_of` counts a member's reveals
# (one per `Revealed` event), `selections_of` the distributed rounds that
# gave it a nonzero score (one per `Selected` event).
reveals_of: public(HashMap[address, uint256])
selections_of: public(HashMap[address, uint256])

# keccak256(abi_encode(model_digest, result_digest)) attested by a member.
attestation_of: public(HashMap[uint256, HashMap[address, bytes32]])
# Stake attesting keccak256(abi_encode(model_digest, result_digest)).
_tally: HashMap[uint256, HashMap[bytes32, uint256]]

model_digest: public(HashMap[uint256, bytes32])
result_digest: public(HashMap[uint256, bytes32])
distributed: public(HashMap[uint256, bool])
total_minted: public(uint256)


@deploy
def __init__(
    token_: address,
    rule_id_: uint8,
    rule_params_digest_: bytes32,
    config_digest_: bytes32,
    quorum_bps_: uint16,
    min_stake_: uint256,
    commit_window_: uint256,
    reveal_window_: uint256,
    attest_window_: uint256,
    max_participants_: uint16,
    allowlist_only_: bool,
    reward_per_round_: uint256,
    access_policy_: uint8,
    cooldown_: uint256,
    treasury_: address,
    config_document_: Bytes[MAX_CONFIG],
):
    assert token_ != empty(address), "token is zero"
    assert treasury_ != empty(address), "treasury is zero"
    assert quorum_bps_ > 5000 and quorum_bps_ <= 10000, "quorum not in (5000, 10000]"
    assert min_stake_ > 0, "min stake is zero"
    assert commit_window_ > 0, "commit window is zero"
    assert reveal_window_ > 0, "reveal window is zero"
    assert attest_window_ > 0, "attest window is zero"
    assert max_participants_ > 0, "max participants is zero"
    assert convert(max_participants_, uint256) <= MAX, "max participants above MAX"
    assert access_policy_ <= ACCESS_PUBLIC, "unknown access policy"
    assert len(config_document_) > 0, "config document is empty"
    assert sha256(config_document_) == config_digest_, "config digest is not the document's"
    ownable.__init__()
    token = token_
    rule_id = rule_id_
    rule_params_digest = rule_params_digest_
    config_digest = config_digest_
    quorum_bps = quorum_bps_
    min_stake = min_stake_
    commit_window = commit_window_
    reveal_window = reveal_window_
    attest_window = attest_window_
    max_participants = max_participants_
    allowlist_only = allowlist_only_
    reward_per_round = reward_per_round_
    access_policy = access_policy_
    cooldown = cooldown_
    treasury = treasury_
    log Configured(config_digest=config_digest_, document=config_document_)


# ---------------------------------------------------------------- views

@external
@view
def members() -> DynArray[address, MAX]:
    """
    @notice The active members (for peer discovery), in no particular order.
    """
    return self._members


@external
@view
def member_count() -> uint256:
    return len(self._members)


@external
@view
def is_member(account: address) -> bool:
    """
    @notice True for an active member.
    """
    return self.status_of[account] == STATUS_ACTIVE


@external
@view
def phase(round: uint256) -> uint8:
    """
    @notice 0 not started, 1 commit, 2 reveal, 3 attest, 4 finalized,
            5 failed (skipped, or expired and not yet skipped). A started,
            open round is in commit before `reveal_opens`, in reveal before
            `attest_opens`, in attest before `attest_closes`, failed after.
    """
    return self._phase(round)


@external
@view
def reveal_opens(round: uint256) -> uint256:
    """
    @notice When the round's reveal phase opens: the time of the commit
            that made every eligible member committed, if any, else
            round_start(round) + commit_window.
    """
    return self._reveal_opens(round)


@external
@view
def attest_opens(round: uint256) -> uint256:
    """
    @notice When the round's attest phase opens: the time of the reveal
            that made every committer revealed, if any, else
            reveal_opens(round) + reveal_window.
    """
    return self._attest_opens(round)


@external
@view
def attest_closes(round: uint256) -> uint256:
    """
    @notice When the round's attest window ends unless it finalized:
            attest_opens(round) + attest_window.
    """
    return self._attest_opens(round) + attest_window


@external
@view
def quorum_stake(round: uint256) -> uint256:
    """
    @notice The attested stake that finalizes the round:
            ceil(quorum_bps * round_stake(round) / 10000).
    """
    return self._quorum_stake(round)


@external
@view
def tally(round: uint256, model_digest: bytes32, result_digest: bytes32) -> uint256:
    """
    @notice The stake that attested (model_digest, result_digest) in the round.
    """
    return self._tally[round][keccak256(abi_encode(model_digest, result_digest))]


@external
@view
def can_download(account: address) -> bool:
    """
    @notice Whether the access policy lets `account` download the task's
            models: 0 active members, 1 token holders (and active
            members), 2 anyone. A reader (`grant_reader`) may, whatever
            the policy.
    """
    if access_policy == ACCESS_PUBLIC:
        return True
    if self.readers[account]:
        return True
    if self.status_of[account] == STATUS_ACTIVE:
        return True
    if access_policy == ACCESS_TOKEN_HOLDERS:
        return staticcall IRewardToken(token).balanceOf(account) > 0
    return False


@internal
@view
def _phase(round: uint256) -> uint8:
    if round == 0 or round > self.current_round:
        return PHASE_NOT_STARTED
    status: uint8 = self._round_status[round]
    if status == _FINALIZED:
        return PHASE_FINALIZED
    if status == _FAILED:
        return PHASE_FAILED
    reveal_opens: uint256 = self._reveal_opens(round)
    if block.timestamp < reveal_opens:
        return PHASE_COMMIT
    attest_opens: uint256 = self._attest_at[round]
    if attest_opens == 0:
        attest_opens = reveal_opens + reveal_window
    if block.timestamp < attest_opens:
        return PHASE_REVEAL
    if block.timestamp < attest_opens + attest_window:
        return PHASE_ATTEST
    return PHASE_FAILED


@internal
@view
def _reveal_opens(round: uint256) -> uint256:
    # The commit window is an upper bound: see `commit`.
    at: uint256 = self._reveal_at[round]
    if at != 0:
        return at
    return self.round_start[round] + commit_window


@internal
@view
def _attest_opens(round: uint256) -> uint256:
    # The reveal window is an upper bound: see `reveal`.
    at: uint256 = self._attest_at[round]
    if at != 0:
        return at
    return self._reveal_opens(round) + reveal_window


@internal
@view
def _quorum_stake(round: uint256) -> uint256:
    product: uint256 = convert(quorum_bps, uint256) * self.round_stake[round]
    return (product + BPS - 1) // BPS


# ---------------------------------------------------------------- membership

@external
def allow(account: address):
    """
    @notice Owner only: add `account` to the allowlist.
    """
    ownable._check_owner()
    self.allowed[account] = True
    log Allowed(account=account)


@external
def disallow(account: address):
    """
    @notice Owner only: remove `account` from the allowlist. An active
            member stays a member: this only stops future joins.
    """
    ownable._check_owner()
    self.allowed[account] = False
    log Disallowed(account=account)


@external
def grant_reader(account: address):
    """
    @notice Owner only: let `account` download the task's blobs whatever
            the access policy (an auditor's key). Grants no membership.
    """
    ownable._check_owner()
    self.readers[account] = True
    log ReaderGranted(account=account)


@external
def revoke_reader(account: address):
    """
    @notice Owner only: take back `grant_reader`.
    """
    ownable._check_owner()
    self.readers[account] = False
    log ReaderRevoked(account=account)


@external
@payable
def join(endpoint: String[256]):
    """
    @notice Become an active member, staking `msg.value` (at least
            `min_stake`) and publishing the endpoint peers reach this node
            at. The stake counts for quorums from the next round on.
    """
    status: uint8 = self.status_of[msg.sender]
    assert status != STATUS_ACTIVE, "already a member"
    assert status != STATUS_LEFT, "withdraw first"
    assert status != STATUS_SLASHED, "slashed"
    assert msg.value >= min_stake, "stake below minimum"
    assert len(self._members) < convert(max_participants, uint256), "task is full"
    if allowlist_only:
        assert self.allowed[msg.sender], "not allowlisted"
    first_round: uint256 = self.current_round + 1
    self.status_of[msg.sender] = STATUS_ACTIVE
    self.stake_of[msg.sender] = msg.value
    self.endpoint_of[msg.sender] = endpoint
    self.first_round_of[msg.sender] = first_round
    self.active_stake += msg.value
    self.total_staked += msg.value
    self._members.append(msg.sender)
    self._position[msg.sender] = len(self._members)
    log Joined(member=msg.sender, stake=msg.value, endpoint=endpoint, first_round=first_round)


@external
def leave():
    """
    @notice Stop being an active member; the stake can be withdrawn
            `cooldown` seconds later.
    """
    assert self.status_of[msg.sender] == STATUS_ACTIVE, "not a member"
    self._deactivate(msg.sender)
    self.status_of[msg.sender] = STATUS_LEFT
    after: uint256 = block.timestamp + cooldown
    self.withdraw_after[msg.sender] = after
    log Left(member=msg.sender, withdraw_after=after)


@external
@nonreentrant
def withdraw():
    """
    @notice After `leave` and the cooldown, send the stake back (once).
    """
    assert self.status_of[msg.sender] == STATUS_LEFT, "nothing to withdraw"
    assert block.timestamp >= self.withdraw_after[msg.sender], "cooldown not over"
    amount: uint256 = self.stake_of[msg.sender]
    self.stake_of[msg.sender] = 0
    self.status_of[msg.sender] = STATUS_NONE
    self.withdraw_after[msg.sender] = 0
    self.total_withdrawn += amount
    log Withdrawn(member=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)


@internal
def _deactivate(member: address):
    # Remove from the active set (swap with the last, then pop).
    self.active_stake -= self.stake_of[member]
    position: uint256 = self._position[member]
    last: address = self._members.pop()
    if last != member:
        self._members[position - 1] = last
        self._position[last] = position
    self._position[member] = 0


# ---------------------------------------------------------------- rounds

@external
def start():
    """
    @notice Owner only, once: round 1 starts now.
    """
    ownable._check_owner()
    assert self.current_round == 0, "already started"
    self._start_round(1)


@internal
def _start_round(round: uint256):
    self.current_round = round
    self.round_start[round] = block.timestamp
    self.round_stake[round] = self.active_stake
    # Every active member is eligible in the new round: its first_round_of
    # is at most `round`.
    members: uint256 = len(self._members)
    self.round_members[round] = members
    log RoundStarted(
        round=round, start=block.timestamp, active_stake=self.active_stake, members=members
    )


@internal
@view
def _check_round(round: uint256, expected: uint8):
    assert round == self.current_round and round != 0, "not the current round"
    phase: uint8 = self._phase(round)
    if phase != expected:
        if expected == PHASE_COMMIT:
            raise "not in commit window"
        if expected == PHASE_REVEAL:
            raise "not in reveal window"
        raise "not in attest window"


@external
def commit(round: uint256, c: bytes32):
    """
    @notice Commit to an update: c = keccak256(abi_encode(update_digest,
            msg.sender, round, salt)). Active members that were active at
            the round's start, commit phase, once. The commit that makes
            every eligible member (`round_members`) committed closes the
            commit phase: the reveal phase opens at once.
    """
    self._check_round(round, PHASE_COMMIT)
    assert self.status_of[msg.sender] == STATUS_ACTIVE, "not a member"
    assert self.first_round_of[msg.sender] <= round, "joined during this round"
    assert self.commitment_of[round][msg.sender] == empty(bytes32), "already committed"
    assert c != empty(bytes32), "empty commitment"
    self.commitment_of[round][msg.sender] = c
    count: uint256 = self.commit_count[round] + 1
    self.commit_count[round] = count
    if count == self.round_members[round]:
        self._reveal_at[round] = block.timestamp
    log Committed(round=round, member=msg.sender, commitment=c)


@external
def reveal(
    round: uint256, update_digest: bytes32, cid: String[64], num_examples: uint256, salt: bytes32
):
    """
    @notice Open the commitment: reveal phase, once, must match, and the
            update digest must never have been revealed before (by anyone,
            in any round). The CID goes in the event only. The reveal that
            makes every committer (`commit_count`) revealed closes the
            reveal phase: the attest phase opens at once.
    """
    self._check_round(round, PHASE_REVEAL)
    assert self.status_of[msg.sender] == STATUS_ACTIVE, "not a member"
    committed: bytes32 = self.commitment_of[round][msg.sender]
    assert committed != empty(bytes32), "no commitment"
    assert self.num_examples_of[round][msg.sender] == 0, "already revealed"
    assert num_examples > 0, "no examples"
    assert (
        keccak256(abi_encode(update_digest, msg.sender, round, salt)) == committed
    ), "reveal does not match commitment"
    assert not self.update_revealed[update_digest], "update already revealed"
    self.update_revealed[update_digest] = True
    self.update_digest_of[round][msg.sender] = update_digest
    self.num_examples_of[round][msg.sender] = num_examples
    self.reveals_of[msg.sender] += 1
    count: uint256 = self.reveal_count[round] + 1
    self.reveal_count[round] = count
    if count == self.commit_count[round]:
        self._attest_at[round] = block.timestamp
    log Revealed(
        round=round,
        member=msg.sender,
        update_digest=update_digest,
        cid=cid,
        num_examples=num_examples,
    )


@external
@nonreentrant
def attest(round: uint256, model_digest: bytes32, result_digest: bytes32):
    """
    @notice Attest the round's model and result. Attesting a second,
            different pair in the same round slashes the whole stake.
            Reaching the quorum finalizes the round and starts the next.
    """
    self._check_round(round, PHASE_ATTEST)
    assert self.status_of[msg.sender] == STATUS_ACTIVE, "not a member"
    assert self.first_round_of[msg.sender] <= round, "joined during this round"
    pair: bytes32 = keccak256(abi_encode(model_digest, result_digest))
    previous: bytes32 = self.attestation_of[round][msg.sender]
    stake: uint256 = self.stake_of[msg.sender]
    if previous == pair:
        raise "already attested"
    if previous != empty(bytes32):
        # Equivocation: the member signed two different pairs. Its first
        # attestation stops counting, its stake goes to the treasury.
        self._tally[round][previous] -= stake
        self._deactivate(msg.sender)
        self.status_of[msg.sender] = STATUS_SLASHED
        self.stake_of[msg.sender] = 0
        self.total_slashed += stake
        log Equivocated(
            round=round, member=msg.sender, model_digest=model_digest, result_digest=result_digest
        )
        log Slashed(member=msg.sender, amount=stake, treasury=treasury)
        raw_call(treasury, b"", value=stake)
        return
    self.attestation_of[round][msg.sender] = pair
    tally: uint256 = self._tally[round][pair] + stake
    self._tally[round][pair] = tally
    log Attested(
        round=round,
        member=msg.sender,
        model_digest=model_digest,
        result_digest=result_digest,
        stake=stake,
    )
    if tally >= self._quorum_stake(round):
        self._round_status[round] = _FINALIZED
        self.model_digest[round] = model_digest
        self.result_digest[round] = result_digest
        log Finalized(round=round, model_digest=model_digest, result_digest=result_digest)
        self._start_round(round + 1)


@external
def skip(round: uint256):
    """
    @notice Anyone: record the current round as failed once its attest
            window is over (`attest_closes`) without finalization, and
            start the next one.
    """
    assert round == self.current_round and round != 0, "not the current round"
    assert self._phase(round) == PHASE_FAILED, "round not expired"
    self._round_status[round] = _FAILED
    log Skipped(round=round)
    self._start_round(round + 1)


# ---------------------------------------------------------------- rewards

@external
@nonreentrant
def distribute(round: uint256, contributors: DynArray[address, MAX], scores: DynArray[uint256, MAX]):
    """
    @notice Anyone, once per finalized round: mint reward_per_round * score
            / sum(scores) to each contributor (rounding down), where
            keccak256(abi_encode(contributors, scores)) is the round's
            attested result digest, the contributors are strictly
            increasing addresses, and each revealed an update in the round.
            Each contributor with a nonzero score is selected
            (`selections_of`, `Selected`); one slashed since gets nothing.
    """
    assert self._round_status[round] == _FINALIZED, "round not finalized"
    assert not self.distributed[round], "already distributed"
    assert len(contributors) == len(scores), "length mismatch"
    assert (
        keccak256(abi_encode(contributors, scores)) == self.result_digest[round]
    ), "result digest mismatch"
    self.distributed[round] = True
    total_score: uint256 = 0
    previous: uint256 = 0
    for i: uint256 in range(len(contributors), bound=MAX):
        contributor: address = contributors[i]
        position: uint256 = convert(contributor, uint256)
        assert position > previous, "contributors not strictly increasing"
        previous = position
        assert self.num_examples_of[round][contributor] > 0, "contributor did not reveal"
        total_score += scores[i]
    minted: uint256 = 0
    if total_score > 0:
        for i: uint256 in range(len(contributors), bound=MAX):
            score: uint256 = scores[i]
            if score == 0:
                continue
            contributor: address = contributors[i]
            self.selections_of[contributor] += 1
            log Selected(round=round, contributor=contributor, score=score)
            amount: uint256 = reward_per_round * score // total_score
            if amount == 0 or self.status_of[contributor] == STATUS_SLASHED:
                continue
            minted += amount
            log Rewarded(round=round, contributor=contributor, amount=amount)
            extcall IRewardToken(token).mint(contributor, amount)
    self.total_minted += minted
    log Distributed(round=round, total=minted)
