# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma optimize codesize
"""
@title fedledger task: one federated learning task on chain (ledger v2)
@license Apache-2.0
@notice The task's rules, its member registry, and its rounds as certified
        batches of signed messages. Some rules are governable: the governor
        (if any) may change them, from the next round on (`reconfigure`).
        In round r each member signs ONE EIP-712 message off chain, Round(r,
        update, examples, model, result): its update's digest and example count for round r (its
        commitment: the blob itself is served only once round r's message
        phase closed), and its attestation of round r-1's outcome (model,
        result), whose CID and hashes every node computed itself. Members
        gossip these messages; anyone submits them in batches (`submit`),
        and every member can submit its own, so no submitter can censor it.
        The contract checks every signature (domain: chain id and this
        contract), every signer's membership and stake; a quorum of round
        r-1's stake attesting the same pair finalizes r-1, and the batch that
        does may pay the round's rewards at once (earned, then `claim`ed).
        A round's message phase closes as soon as every eligible member's
        message is in, or `grace` seconds after a quorum of stake's is, and at
        the latest `window` seconds after the round opened; a round r-1 that
        no quorum attested by then fails. Two different signed messages by one
        member for one round are evidence: anyone submitting them (`slash`)
        takes the member's stake, a tenth to the submitter and the rest to
        the treasury. Nothing else slashes. Rounds stop at `max_rounds` (round
        max_rounds + 1 carries attestations only), so the total minted is at
        most max_rounds times the largest reward_per_round in force. Each
        finalized round extends the task's model lineage, a hash chain over
        (round, model digest) (`lineage`). Members register their data owners'
        consent policies (`join`, `set_consent`: events only). Above
        `committee` active members, each round's messages come from a
        committee of `committee` members sampled from the chain's randomness
        one round ahead (`CommitteeSampled`); its stake is the round's stake,
        and round r's committee attests round r - 1. See docs/contracts.md
        and docs/committees.md.
"""

from snekmate.auth import ownable
from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator as eip712

initializes: ownable
initializes: eip712

# owner, transfer_ownership, renounce_ownership, and eip712Domain (EIP-5267).
exports: (ownable.__interface__, eip712.eip712Domain)


interface IRewardToken:
    def mint(owner: address, amount: uint256): nonpayable
    def balanceOf(owner: address) -> uint256: view


# The most members a task can have at once, and the most messages, pairs and
# contributors in one call.
MAX: constant(uint256) = 256
MAX_PAIRS: constant(uint256) = 16
BPS: constant(uint256) = 10000
# The submitter of evidence gets this share of the slashed stake (10 %).
SLASH_SHARE_BPS: constant(uint256) = 1000

# Upper bounds on the constructor's durations and sums.
MAX_WINDOW: constant(uint256) = 7 * 86400
MAX_COOLDOWN: constant(uint256) = 365 * 86400
MAX_ROUNDS: constant(uint256) = 1000000
# A member's stake and earned reward share one storage word (see _record).
MAX_STAKE: constant(uint256) = 2**96 - 1
MAX_EARNED: constant(uint256) = 2**88 - 1
# A score is at most 2**128 - 1, so reward * score never overflows.
MAX_SCORE: constant(uint256) = 2**128 - 1
MAX_EXAMPLES: constant(uint256) = 2**64 - 1
# A round's state lives in a ring of RING slots (rewriting a used slot costs
# a fifth of filling an empty one): rounds older than RING - 1 keep only
# their outcome (`_outcome`: failed ones in `_failed`) and their events.
RING: constant(uint256) = 8

ROUND_TYPEHASH: constant(bytes32) = keccak256(
    "Round(uint256 round,bytes32 update,uint256 examples,bytes32 model,bytes32 result)"
)

# Phases of a round (see `phase`).
PHASE_NOT_STARTED: constant(uint8) = 0
PHASE_OPEN: constant(uint8) = 1
PHASE_AGGREGATE: constant(uint8) = 2
PHASE_ATTEST: constant(uint8) = 3
PHASE_FINALIZED: constant(uint8) = 4
PHASE_FAILED: constant(uint8) = 5

# Member status (see `status_of`).
STATUS_NONE: constant(uint8) = 0
STATUS_ACTIVE: constant(uint8) = 1
STATUS_LEFT: constant(uint8) = 2
STATUS_SLASHED: constant(uint8) = 3

MAX_CONFIG: constant(uint256) = 8192
# A data owner's consent policy (`join`, `set_consent`).
MAX_POLICY: constant(uint256) = 2048

ACCESS_MEMBERS: constant(uint8) = 0
ACCESS_TOKEN_HOLDERS: constant(uint8) = 1
ACCESS_PUBLIC: constant(uint8) = 2

# A round's outcome (in its state word).
_OPEN: constant(uint256) = 0
_FINALIZED: constant(uint256) = 1
_FAILED: constant(uint256) = 2


struct Pair:
    model: bytes32
    result: bytes32


# One signed message in a batch: the member is recovered from the signature
# (EIP-2098 compact form r, vs) over Round(round, update, examples,
# pairs[pair].model, pairs[pair].result).
struct Entry:
    update: bytes32
    examples: uint256
    pair: uint256
    r: uint256
    vs: uint256


# The governable rules in force for a round (`rules_at`), from `from_round` on.
struct Rules:
    rule_id: uint8
    rule_params_digest: bytes32
    config_digest: bytes32
    quorum_bps: uint16
    min_stake: uint256
    allowlist_only: bool
    reward_per_round: uint256
    access_policy: uint8
    from_round: uint256


# A whole signed message (evidence for `slash`).
struct Message:
    update: bytes32
    examples: uint256
    model: bytes32
    result: bytes32
    r: uint256
    vs: uint256


# ---------------------------------------------------------------- events

# The rules in force from round `from_round` on, with the configuration
# document they come from (the deployment's: from round 1; `reconfigure`'s:
# from the next round; a later one for the same round replaces it).
event Configured:
    from_round: uint256
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

# A member's data owner's consent policy, from round `from_round` on (digest:
# its sha256; zero for an empty policy). Nothing is stored: nodes and the audit
# read the events.
event Consent:
    member: indexed(address)
    digest: bytes32
    policy: Bytes[MAX_POLICY]
    from_round: uint256

# A member's node listens somewhere else now (restarted on another port or host).
event Moved:
    member: indexed(address)
    endpoint: String[256]

event Withdrawn:
    member: indexed(address)
    amount: uint256

# A member's secure-aggregation keys (`set_keys`): its long-term channel key, and the digest
# of its key blob covering rounds first_round..last_round for `recipients` members (all zero:
# no key blob). Nothing is stored: nodes and the audit read the events.
event Keys:
    member: indexed(address)
    channel_key: bytes32
    keys_digest: bytes32
    first_round: uint256
    last_round: uint256
    recipients: uint256

event RoundStarted:
    round: indexed(uint256)
    start: uint256
    active_stake: uint256
    members: uint256

# Round `round`'s committee, sampled when round - 1 opened (rounds 1 and 2: at
# `start`): `members` in draw order, their `stake` then.
event CommitteeSampled:
    round: indexed(uint256)
    seed: bytes32
    members: DynArray[address, MAX]
    stake: uint256

# One signed message, as it was verified: everything an auditor needs to
# verify the signature again (update zero: attestation only; model and
# result zero: no attestation).
event Submitted:
    round: indexed(uint256)
    member: indexed(address)
    update: bytes32
    examples: uint256
    model: bytes32
    result: bytes32
    r: uint256
    vs: uint256

# A quorum of the round's stake has its messages in: the phase closes
# `grace` seconds later at the latest.
event Quorate:
    round: indexed(uint256)

# A round's message phase closed early (every eligible member's message in).
event Closed:
    round: indexed(uint256)

event Finalized:
    round: indexed(uint256)
    model_digest: bytes32
    result_digest: bytes32
    stake: uint256

event Skipped:
    round: indexed(uint256)

# A round's rewards were credited: each contributor earned
# reward_per_round * score // sum(scores), or nothing if slashed since (one
# event with the arrays, not one per contributor: a quarter of the gas). A
# contributor with a nonzero score is "selected" (reputation). `transcript`:
# the round's secure-aggregation transcript digest (zero: none).
event Distributed:
    round: indexed(uint256)
    total: uint256
    contributors: DynArray[address, MAX]
    scores: DynArray[uint256, MAX]
    transcript: bytes32

event Equivocated:
    round: indexed(uint256)
    member: indexed(address)
    first: bytes32
    second: bytes32

event Slashed:
    member: indexed(address)
    amount: uint256
    submitter: address
    share: uint256

event Claimed:
    member: indexed(address)
    amount: uint256


# ---------------------------------------------------------------- the rules

token: public(immutable(address))
window: public(immutable(uint256))
grace: public(immutable(uint256))
max_rounds: public(immutable(uint256))
max_participants: public(immutable(uint16))
cooldown: public(immutable(uint256))
treasury: public(immutable(address))
# May change the governable rules (`reconfigure`); zero: nobody, ever.
governor: public(immutable(address))
# Above this many active members a round's messages come from a committee of
# this many (zero: every member, always).
committee: public(immutable(uint256))

# The governable rules, one word per epoch (see `_g_pack`): reward_per_round
# (88 bits) | min_stake (96) | quorum_bps (14) | access_policy (2) |
# allowlist_only (1) | rule_id (8) | from_round (20) | the previous epoch's
# from_round (20; 0: none). Rounds are at most MAX_ROUNDS + 2 < 2**20.
# `_rules` is the latest epoch (pending while its from_round is above
# current_round); earlier ones are kept by from_round.
_rules: uint256
_past_rules: HashMap[uint256, uint256]
_rule_params_digest: HashMap[uint256, bytes32]
_config_digest: HashMap[uint256, bytes32]


# ---------------------------------------------------------------- members

allowed: public(HashMap[address, bool])
readers: public(HashMap[address, bool])
endpoint_of: public(HashMap[address, String[256]])
withdraw_after: public(HashMap[address, uint256])
claimed_of: public(HashMap[address, uint256])
# One word per member, read and written once per message (see `_pack`):
# status (8 bits) | first_round (32) | last_round (32) | stake (96) |
# earned (88). last_round is the latest round with this member's message
# on chain.
_record: HashMap[address, uint256]
active_stake: public(uint256)
_members: DynArray[address, MAX]
_position: HashMap[address, uint256]

total_staked: public(uint256)
total_withdrawn: public(uint256)
total_slashed: public(uint256)
# Slashed wei the treasury refused (held here until `pay_treasury`).
treasury_owed: public(uint256)
total_earned: public(uint256)
total_claimed: public(uint256)


# ---------------------------------------------------------------- rounds

current_round: public(uint256)
# One word per round, at round % RING: start (40 bits) | quorum_at (40) |
# closed_at (40) | members (16) | count (16) | outcome (8) | distributed (8)
# | round (32) | lineage round (32: the last finalized round, while this
# round is the current one) | tallied (1: `_tally` holds counts of its
# attestations).
_round: HashMap[uint256, uint256]
# At round % RING: stake at the round's start (128 bits) | stake of its
# messages in (128).
_stakes: HashMap[uint256, uint256]
# Stake attesting keccak256(abi_encode(model, result)) for a round, when a
# batch ended below the quorum (a batch that reaches it keeps its count in
# memory only).
_tally: HashMap[uint256, HashMap[bytes32, uint256]]
# At round % RING: the finalized model and result digests.
_model: HashMap[uint256, bytes32]
_result: HashMap[uint256, bytes32]
# One bit per failed round, 256 rounds per word: a round older than the ring
# is decided, and finalized unless its bit is set.
_failed: HashMap[uint256, uint256]
# keccak256(abi_encode(previous, round, model_digest)) over the finalized
# rounds in order (previous: zero before the first).
_lineage: bytes32
# At round % RING: the stake of the round's committee (zero: no committee).
_committee_stake: HashMap[uint256, uint256]
# Per member: the last two rounds whose committee drew it (32 bits each).
_drawn: HashMap[address, uint256]


@deploy
def __init__(
    token_: address,
    rule_id_: uint8,
    rule_params_digest_: bytes32,
    config_digest_: bytes32,
    quorum_bps_: uint16,
    min_stake_: uint256,
    window_: uint256,
    grace_: uint256,
    max_rounds_: uint256,
    max_participants_: uint16,
    allowlist_only_: bool,
    reward_per_round_: uint256,
    access_policy_: uint8,
    cooldown_: uint256,
    treasury_: address,
    governor_: address,
    committee_: uint16,
    config_document_: Bytes[MAX_CONFIG],
):
    assert token_ != empty(address), "token is zero"
    assert treasury_ != empty(address), "treasury is zero"
    assert quorum_bps_ > 5000 and quorum_bps_ <= 10000, "quorum not in (5000, 10000]"
    assert min_stake_ > 0, "min stake is zero"
    assert min_stake_ <= MAX_STAKE, "min stake above 2**96 - 1"
    assert window_ > 0 and window_ <= MAX_WINDOW, "window not in (0, 7 days]"
    assert grace_ <= window_, "grace above the window"
    assert cooldown_ > 0 and cooldown_ <= MAX_COOLDOWN, "cooldown not in (0, 365 days]"
    assert max_rounds_ > 0 and max_rounds_ <= MAX_ROUNDS, "max rounds not in (0, 1000000]"
    assert max_participants_ > 0, "max participants is zero"
    assert convert(max_participants_, uint256) <= MAX, "max participants above MAX"
    assert reward_per_round_ * max_rounds_ <= MAX_EARNED, "total reward above 2**88 - 1"
    assert access_policy_ <= ACCESS_PUBLIC, "unknown access policy"
    assert committee_ == 0 or (committee_ >= 3 and committee_ < max_participants_), "committee not 0 or in [3, max)"
    assert len(config_document_) > 0, "config document is empty"
    assert sha256(config_document_) == config_digest_, "config digest is not the document's"
    ownable.__init__()
    eip712.__init__("fedledger", "2")
    token = token_
    window = window_
    grace = grace_
    max_rounds = max_rounds_
    max_participants = max_participants_
    cooldown = cooldown_
    treasury = treasury_
    governor = governor_
    committee = convert(committee_, uint256)
    self._rules = self._g_pack(
        rule_id_, quorum_bps_, min_stake_, allowlist_only_, reward_per_round_, access_policy_, 1, 0
    )
    self._rule_params_digest[1] = rule_params_digest_
    self._config_digest[1] = config_digest_
    log Configured(from_round=1, config_digest=config_digest_, document=config_document_)


# ---------------------------------------------------------------- governance

@external
def reconfigure(
    rule_id_: uint8,
    rule_params_digest_: bytes32,
    quorum_bps_: uint16,
    min_stake_: uint256,
    allowlist_only_: bool,
    reward_per_round_: uint256,
    access_policy_: uint8,
    document: Bytes[MAX_CONFIG],
):
    """
    @notice Governor only: the governable rules in force from the next round
            to open on (`current_round + 1`; round 1 before the start), with
            the configuration document they come from (its sha256 is the new
            config digest). Checked as the constructor checks them. A second
            change before that round opens replaces the first. Round r's
            quorum and reward are always round r's rules; joining and
            downloading follow the current round's.
    """
    self._require(governor != empty(address), "no governor")
    self._require(msg.sender == governor, "not the governor")
    self._require(quorum_bps_ > 5000 and quorum_bps_ <= 10000, "quorum not in (5000, 10000]")
    self._require(min_stake_ > 0, "min stake is zero")
    self._require(min_stake_ <= MAX_STAKE, "min stake above 2**96 - 1")
    self._require(reward_per_round_ * max_rounds <= MAX_EARNED, "total reward above 2**88 - 1")
    self._require(access_policy_ <= ACCESS_PUBLIC, "unknown access policy")
    self._require(len(document) > 0, "config document is empty")
    digest: bytes32 = sha256(document)
    from_round: uint256 = self.current_round + 1
    latest: uint256 = self._rules
    link: uint256 = self._g_link(latest)
    if self._g_from(latest) != from_round:
        # The latest rules are in force: keep them for the rounds they cover.
        link = self._g_from(latest)
        self._past_rules[link] = latest
    self._rules = self._g_pack(
        rule_id_, quorum_bps_, min_stake_, allowlist_only_, reward_per_round_, access_policy_,
        from_round, link
    )
    self._rule_params_digest[from_round] = rule_params_digest_
    self._config_digest[from_round] = digest
    log Configured(from_round=from_round, config_digest=digest, document=document)


# ---------------------------------------------------------------- packing

@internal
@pure
def _require(ok: bool, reason: String[32]):
    # `assert ok, reason` in less code (the contract's size is near the limit).
    if not ok:
        raise reason


@internal
@pure
def _g_pack(rule_id_: uint8, quorum_bps_: uint16, min_stake_: uint256, allowlist_only_: bool, reward_per_round_: uint256, access_policy_: uint8, from_round: uint256, link: uint256) -> uint256:
    a: uint256 = 0
    if allowlist_only_:
        a = 1
    return (
        reward_per_round_
        | (min_stake_ << 88)
        | (convert(quorum_bps_, uint256) << 184)
        | (convert(access_policy_, uint256) << 198)
        | (a << 200)
        | (convert(rule_id_, uint256) << 201)
        | (from_round << 209)
        | (link << 229)
    )


@internal
@pure
def _g_reward(rules: uint256) -> uint256:
    return rules & MAX_EARNED


@internal
@pure
def _g_min_stake(rules: uint256) -> uint256:
    return (rules >> 88) & MAX_STAKE


@internal
@pure
def _g_quorum_bps(rules: uint256) -> uint256:
    return (rules >> 184) & (2**14 - 1)


@internal
@pure
def _g_access(rules: uint256) -> uint8:
    return convert((rules >> 198) & 3, uint8)


@internal
@pure
def _g_allowlist(rules: uint256) -> bool:
    return (rules >> 200) & 1 != 0


@internal
@pure
def _g_rule_id(rules: uint256) -> uint8:
    return convert((rules >> 201) & 255, uint8)


@internal
@pure
def _g_from(rules: uint256) -> uint256:
    return (rules >> 209) & (2**20 - 1)


@internal
@pure
def _g_link(rules: uint256) -> uint256:
    return (rules >> 229) & (2**20 - 1)


@internal
@view
def _rules_from(latest: uint256, round: uint256) -> uint256:
    # The rules word in force for `round` (round 0: round 1's), from the
    # latest epoch back (a round of the ring is at most RING + 1 epochs back).
    rules: uint256 = latest
    for i: uint256 in range(MAX_ROUNDS + 2):
        link: uint256 = self._g_link(rules)
        if self._g_from(rules) <= round or link == 0:
            break
        rules = self._past_rules[link]
    return rules


@internal
@view
def _rules_at(round: uint256) -> uint256:
    return self._rules_from(self._rules, round)


@internal
@view
def _current_rules() -> uint256:
    return self._rules_at(self.current_round)

@internal
@pure
def _status(rec: uint256) -> uint8:
    return convert(rec & 255, uint8)


@internal
@pure
def _first_round(rec: uint256) -> uint256:
    return (rec >> 8) & (2**32 - 1)


@internal
@pure
def _last_round(rec: uint256) -> uint256:
    return (rec >> 40) & (2**32 - 1)


@internal
@pure
def _stake(rec: uint256) -> uint256:
    return (rec >> 72) & MAX_STAKE


@internal
@pure
def _earned(rec: uint256) -> uint256:
    return rec >> 168


@internal
@pure
def _pack(status: uint8, first_round: uint256, last_round: uint256, stake: uint256, earned: uint256) -> uint256:
    return (
        convert(status, uint256)
        | (first_round << 8)
        | (last_round << 40)
        | (stake << 72)
        | (earned << 168)
    )


@internal
@pure
def _r_start(word: uint256) -> uint256:
    return word & (2**40 - 1)


@internal
@pure
def _r_quorum_at(word: uint256) -> uint256:
    return (word >> 40) & (2**40 - 1)


@internal
@pure
def _r_closed_at(word: uint256) -> uint256:
    return (word >> 80) & (2**40 - 1)


@internal
@pure
def _r_members(word: uint256) -> uint256:
    return (word >> 120) & (2**16 - 1)


@internal
@pure
def _r_count(word: uint256) -> uint256:
    return (word >> 136) & (2**16 - 1)


@internal
@pure
def _r_outcome(word: uint256) -> uint256:
    return (word >> 152) & 255


@internal
@pure
def _r_distributed(word: uint256) -> bool:
    return (word >> 160) & 255 != 0


@internal
@pure
def _r_lineage(word: uint256) -> uint256:
    return (word >> 200) & (2**32 - 1)


@internal
@pure
def _r_tallied(word: uint256) -> bool:
    return (word >> 232) & 1 != 0


@internal
@pure
def _r_pack(start: uint256, quorum_at: uint256, closed_at: uint256, members: uint256, count: uint256, round: uint256, lineage: uint256) -> uint256:
    # The word of an open round (not finalized, failed, distributed or tallied).
    return (
        start
        | (quorum_at << 40)
        | (closed_at << 80)
        | (members << 120)
        | (count << 136)
        | (round << 168)
        | (lineage << 200)
    )


@internal
@view
def _word(round: uint256) -> uint256:
    # The round's state word; 0 for a round not started or out of the ring.
    word: uint256 = self._round[round % RING]
    if (word >> 168) & (2**32 - 1) != round:
        return 0
    return word


@internal
@view
def _outcome(round: uint256) -> uint256:
    word: uint256 = self._word(round)
    if word != 0:
        return self._r_outcome(word)
    if round == 0 or round > self.current_round:
        return _OPEN
    # Older than the ring, so decided: round + 2 opened.
    if (self._failed[round // 256] >> (round % 256)) & 1 != 0:
        return _FAILED
    return _FINALIZED


# ---------------------------------------------------------------- views

@external
@view
def rules_at(round: uint256) -> Rules:
    """
    @notice The governable rules in force for `round` (round 0: round 1's), and
            the first round they are in force. A round after the current one
            gets the latest rules: a change is pending while
            `rules_at(current_round + 1).from_round` is above `current_round`.
    """
    rules: uint256 = self._rules_at(round)
    from_round: uint256 = self._g_from(rules)
    return Rules(
        rule_id=self._g_rule_id(rules),
        rule_params_digest=self._rule_params_digest[from_round],
        config_digest=self._config_digest[from_round],
        quorum_bps=convert(self._g_quorum_bps(rules), uint16),
        min_stake=self._g_min_stake(rules),
        allowlist_only=self._g_allowlist(rules),
        reward_per_round=self._g_reward(rules),
        access_policy=self._g_access(rules),
        from_round=from_round,
    )


# The governable rules in force for the current round (round 1's before the
# start).

@external
@view
def rule_id() -> uint8:
    return self._g_rule_id(self._current_rules())


@external
@view
def rule_params_digest() -> bytes32:
    return self._rule_params_digest[self._g_from(self._current_rules())]


@external
@view
def config_digest() -> bytes32:
    return self._config_digest[self._g_from(self._current_rules())]


@external
@view
def quorum_bps() -> uint16:
    return convert(self._g_quorum_bps(self._current_rules()), uint16)


@external
@view
def min_stake() -> uint256:
    return self._g_min_stake(self._current_rules())


@external
@view
def allowlist_only() -> bool:
    return self._g_allowlist(self._current_rules())


@external
@view
def reward_per_round() -> uint256:
    return self._g_reward(self._current_rules())


@external
@view
def access_policy() -> uint8:
    return self._g_access(self._current_rules())


@external
@view
def lineage() -> (uint256, bytes32):
    """
    @notice The task's model lineage: the last finalized round (0: none yet)
            and keccak256(abi_encode(previous, round, model_digest)) chained
            over every finalized round in order (previous: zero before the
            first).
    """
    return self._r_lineage(self._word(self.current_round)), self._lineage


@external
@view
def members() -> DynArray[address, MAX]:
    return self._members


@external
@view
def member_count() -> uint256:
    return len(self._members)


@external
@view
def is_member(account: address) -> bool:
    return self._status(self._record[account]) == STATUS_ACTIVE


@external
@view
def status_of(account: address) -> uint8:
    return self._status(self._record[account])


@external
@view
def stake_of(account: address) -> uint256:
    return self._stake(self._record[account])


@external
@view
def first_round_of(account: address) -> uint256:
    return self._first_round(self._record[account])


@external
@view
def last_round_of(account: address) -> uint256:
    """
    @notice The latest round with `account`'s message on chain (0: none).
    """
    return self._last_round(self._record[account])


@external
@view
def earned_of(account: address) -> uint256:
    """
    @notice Reward tokens (wei) earned so far, claimed or not.
    """
    return self._earned(self._record[account])


@external
@view
def round_start(round: uint256) -> uint256:
    return self._r_start(self._word(round))


@external
@view
def round_members(round: uint256) -> uint256:
    """
    @notice The members eligible in the round (active at its start).
    """
    return self._r_members(self._word(round))


@external
@view
def message_count(round: uint256) -> uint256:
    return self._r_count(self._word(round))


@external
@view
def round_stake(round: uint256) -> uint256:
    if self._word(round) == 0:
        return 0
    return self._stakes[round % RING] & (2**128 - 1)


@external
@view
def submitted_stake(round: uint256) -> uint256:
    if self._word(round) == 0:
        return 0
    return self._stakes[round % RING] >> 128


@external
@view
def closes_at(round: uint256) -> uint256:
    """
    @notice When the round's message phase closes: when every eligible
            member's message was in, if that happened; else `grace` after a
            quorum of stake's was in, and at the latest `window` after the
            round started. 0 for a round not started.
    """
    return self._closes_at(self._word(round))


@external
@view
def distributed(round: uint256) -> bool:
    return self._r_distributed(self._word(round))


@external
@view
def phase(round: uint256) -> uint8:
    """
    @notice 0 not started; 1 open (its messages are collected); 2
            aggregate (closed, round + 1 not open yet); 3 attest (round + 1
            open: its messages attest this round); 4 finalized; 5 failed.
    """
    return self._phase(round)


@external
@view
def quorum_stake(round: uint256) -> uint256:
    """
    @notice The stake needed to finalize the round (its own quorum_bps of the
            stake at its start, rounded up); 0 out of the ring.
    """
    if self._word(round) == 0:
        return 0
    return self._quorum_stake(round, self._rules_at(round))


@external
@view
def tally(round: uint256, model_digest: bytes32, result_digest: bytes32) -> uint256:
    return self._tally[round][keccak256(abi_encode(model_digest, result_digest))]


@external
@view
def finished() -> bool:
    """
    @notice True once the last round (`max_rounds`) is finalized or failed.
    """
    return self._outcome(max_rounds) != _OPEN


@external
@view
def model_digest(round: uint256) -> bytes32:
    """
    @notice The round's finalized model digest (zero when not finalized, or
            older than the ring: read the `Finalized` event).
    """
    word: uint256 = self._word(round)
    if word == 0 or self._r_outcome(word) != _FINALIZED:
        return empty(bytes32)
    return self._model[round % RING]


@external
@view
def result_digest(round: uint256) -> bytes32:
    """
    @notice The round's finalized result digest (as `model_digest`).
    """
    word: uint256 = self._word(round)
    if word == 0 or self._r_outcome(word) != _FINALIZED:
        return empty(bytes32)
    return self._result[round % RING]


@external
@view
def message_hash(round: uint256, update: bytes32, examples: uint256, model: bytes32, result: bytes32) -> bytes32:
    """
    @notice The EIP-712 digest a member signs for its round message.
    """
    return self._message_hash(round, update, examples, model, result)


@external
@view
def can_download(account: address) -> bool:
    """
    @notice Whether `account` may download the task's blobs: a reader, or as
            the current round's access policy says.
    """
    access_policy: uint8 = self._g_access(self._current_rules())
    if access_policy == ACCESS_PUBLIC:
        return True
    if self.readers[account]:
        return True
    if self._status(self._record[account]) == STATUS_ACTIVE:
        return True
    if access_policy == ACCESS_TOKEN_HOLDERS:
        return staticcall IRewardToken(token).balanceOf(account) > 0
    return False


@internal
@view
def _message_hash(round: uint256, update: bytes32, examples: uint256, model: bytes32, result: bytes32) -> bytes32:
    return eip712._hash_typed_data_v4(
        keccak256(abi_encode(ROUND_TYPEHASH, round, update, examples, model, result))
    )


@internal
@view
def _closes_at(word: uint256) -> uint256:
    start: uint256 = self._r_start(word)
    if start == 0:
        return 0
    closed_at: uint256 = self._r_closed_at(word)
    if closed_at != 0:
        return closed_at
    end: uint256 = start + window
    quorum_at: uint256 = self._r_quorum_at(word)
    if quorum_at != 0 and quorum_at + grace < end:
        return quorum_at + grace
    return end


@internal
@view
def _phase(round: uint256) -> uint8:
    if round == 0 or round > self.current_round:
        return PHASE_NOT_STARTED
    outcome: uint256 = self._outcome(round)
    if outcome == _FINALIZED:
        return PHASE_FINALIZED
    if outcome == _FAILED:
        return PHASE_FAILED
    word: uint256 = self._word(round)
    if block.timestamp < self._closes_at(word):
        return PHASE_OPEN
    if round == self.current_round:
        return PHASE_AGGREGATE
    # round + 1 is open: its messages attest this round until it closes.
    if block.timestamp < self._closes_at(self._word(round + 1)):
        return PHASE_ATTEST
    return PHASE_FAILED


@internal
@view
def _quorum_stake(round: uint256, rules: uint256) -> uint256:
    # `rules`: the rules word in force for `round`.
    product: uint256 = self._g_quorum_bps(rules) * (self._stakes[round % RING] & (2**128 - 1))
    return (product + BPS - 1) // BPS


# ---------------------------------------------------------------- membership

@external
def allow(account: address):
    ownable._check_owner()
    self.allowed[account] = True
    log Allowed(account=account)


@external
def disallow(account: address):
    ownable._check_owner()
    self.allowed[account] = False
    log Disallowed(account=account)


@external
def grant_reader(account: address):
    ownable._check_owner()
    self.readers[account] = True
    log ReaderGranted(account=account)


@external
def revoke_reader(account: address):
    ownable._check_owner()
    self.readers[account] = False
    log ReaderRevoked(account=account)


@external
@payable
def join(endpoint: String[256], consent: Bytes[MAX_POLICY]):
    """
    @notice Become an active member, staking `msg.value` (at least
            `min_stake`, at most 2**96 - 1 wei) and publishing the endpoint
            peers reach this node at. The member takes part from the next
            round on. Admission follows the current round's rules. A
            non-empty `consent` is its data owner's consent policy (`Consent`
            event, from the next round on).
    """
    rec: uint256 = self._record[msg.sender]
    status: uint8 = self._status(rec)
    assert status != STATUS_ACTIVE, "already a member"
    assert status != STATUS_LEFT, "withdraw first"
    assert status != STATUS_SLASHED, "slashed"
    rules: uint256 = self._current_rules()
    assert msg.value >= self._g_min_stake(rules), "stake below minimum"
    assert msg.value <= MAX_STAKE, "stake above 2**96 - 1"
    assert len(self._members) < convert(max_participants, uint256), "task is full"
    if self._g_allowlist(rules):
        assert self.allowed[msg.sender], "not allowlisted"
    first_round: uint256 = self.current_round + 1
    # A member that left and withdrew keeps its earned reward and its last
    # round (it never signs for a round twice).
    self._record[msg.sender] = self._pack(
        STATUS_ACTIVE, first_round, self._last_round(rec), msg.value, self._earned(rec)
    )
    self.endpoint_of[msg.sender] = endpoint
    self.active_stake += msg.value
    self.total_staked += msg.value
    self._members.append(msg.sender)
    self._position[msg.sender] = len(self._members)
    log Joined(member=msg.sender, stake=msg.value, endpoint=endpoint, first_round=first_round)
    if len(consent) > 0:
        self._consent(consent, first_round)


@external
def set_consent(policy: Bytes[MAX_POLICY]):
    """
    @notice An active member registers its data owner's consent policy, in
            force from the next round on (an empty policy: a zero digest).
            Only `Consent` is emitted: nothing is stored.
    """
    assert self._status(self._record[msg.sender]) == STATUS_ACTIVE, "not a member"
    self._consent(policy, self.current_round + 1)


@internal
def _consent(policy: Bytes[MAX_POLICY], from_round: uint256):
    digest: bytes32 = empty(bytes32)
    if len(policy) > 0:
        digest = sha256(policy)
    log Consent(member=msg.sender, digest=digest, policy=policy, from_round=from_round)


@external
def move(endpoint: String[256]):
    """
    @notice An active member publishes where its node listens now (after a restart on
            another port or host): peers and auditors read endpoints from the registry.
    """
    assert self._status(self._record[msg.sender]) == STATUS_ACTIVE, "not a member"
    self.endpoint_of[msg.sender] = endpoint
    log Moved(member=msg.sender, endpoint=endpoint)


@external
def set_keys(channel_key: bytes32, keys_digest: bytes32, first_round: uint256, last_round: uint256, recipients: uint256):
    """
    @notice An active member registers its secure-aggregation keys: its channel
            key (nonzero) and, if `keys_digest` is nonzero, the digest of its
            key blob covering rounds `first_round` to `last_round` (1 <=
            first_round <= last_round) for `recipients` members; with a zero
            `keys_digest`, the rounds and recipients are zero. Only `Keys` is
            emitted: nothing is stored.
    """
    assert self._status(self._record[msg.sender]) == STATUS_ACTIVE, "not a member"
    assert channel_key != empty(bytes32), "zero key"
    if keys_digest == empty(bytes32):
        assert first_round == 0 and last_round == 0 and recipients == 0, "bad rounds"
    else:
        assert first_round >= 1 and first_round <= last_round, "bad rounds"
    log Keys(
        member=msg.sender, channel_key=channel_key, keys_digest=keys_digest,
        first_round=first_round, last_round=last_round, recipients=recipients
    )


@external
def leave():
    """
    @notice Stop being an active member: later messages are refused. The
            stake can be withdrawn `window + cooldown` seconds later: by
            then every round this member's messages could still decide is
            closed, and `cooldown` is the time left to bring evidence.
    """
    rec: uint256 = self._record[msg.sender]
    assert self._status(rec) == STATUS_ACTIVE, "not a member"
    self._deactivate(msg.sender, self._stake(rec))
    self._record[msg.sender] = self._pack(
        STATUS_LEFT, self._first_round(rec), self._last_round(rec), self._stake(rec), self._earned(rec)
    )
    after: uint256 = block.timestamp + window + cooldown
    self.withdraw_after[msg.sender] = after
    log Left(member=msg.sender, withdraw_after=after)


@external
@nonreentrant
def withdraw():
    rec: uint256 = self._record[msg.sender]
    assert self._status(rec) == STATUS_LEFT, "nothing to withdraw"
    assert block.timestamp >= self.withdraw_after[msg.sender], "cooldown not over"
    amount: uint256 = self._stake(rec)
    self._record[msg.sender] = self._pack(
        STATUS_NONE, self._first_round(rec), self._last_round(rec), 0, self._earned(rec)
    )
    self.withdraw_after[msg.sender] = 0
    self.total_withdrawn += amount
    log Withdrawn(member=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)


@internal
def _deactivate(member: address, stake: uint256):
    self.active_stake -= stake
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
    @notice Owner only, once: round 1 opens now.
    """
    ownable._check_owner()
    assert self.current_round == 0, "already started"
    if committee != 0:
        self._sample(1)
    self._open(1, 0)


@internal
def _open(round: uint256, lineage: uint256):
    # `lineage`: the last finalized round (carried from round to round).
    self.current_round = round
    members: uint256 = len(self._members)
    stake: uint256 = self.active_stake
    if committee != 0:
        if self._committee_stake[round % RING] != 0:
            members = committee
            stake = self._committee_stake[round % RING]
        if round <= max_rounds:
            self._sample(round + 1)
    self._round[round % RING] = self._r_pack(block.timestamp, 0, 0, members, 0, round, lineage)
    self._stakes[round % RING] = stake
    log RoundStarted(round=round, start=block.timestamp, active_stake=stake, members=members)


@internal
def _sample(round: uint256):
    # Round `round`'s committee, drawn now (a partial Fisher-Yates shuffle of
    # the member positions keyed by this block's randomness), or none when at
    # most `committee` members are active.
    slot: uint256 = round % RING
    n: uint256 = len(self._members)
    if n <= committee:
        self._committee_stake[slot] = 0
        return
    seed: bytes32 = keccak256(abi_encode(block.prevrandao, blockhash(block.number - 1), self, round))
    order: DynArray[uint256, MAX] = []
    for i: uint256 in range(n, bound=MAX):
        order.append(i)
    stake: uint256 = 0
    chosen: DynArray[address, MAX] = []
    for j: uint256 in range(committee, bound=MAX):
        k: uint256 = j + convert(keccak256(abi_encode(seed, j)), uint256) % (n - j)
        member: address = self._members[order[k]]
        order[k] = order[j]
        chosen.append(member)
        stake += self._stake(self._record[member])
        self._drawn[member] = ((self._drawn[member] << 32) | round) & (2**64 - 1)
    self._committee_stake[slot] = stake
    log CommitteeSampled(round=round, seed=seed, members=chosen, stake=stake)


@internal
def _fail_unfinalized(round: uint256):
    # `round`'s attestations are over (round + 1 closed): fail it if no
    # quorum finalized it.
    if round == 0:
        return
    word: uint256 = self._word(round)
    if self._r_outcome(word) == _OPEN:
        self._round[round % RING] = word | (_FAILED << 152)
        self._failed[round // 256] |= 1 << (round % 256)
        log Skipped(round=round)


@internal
def _advance(round: uint256):
    # Open `round` when it is the next one and the current round closed.
    current: uint256 = self.current_round
    if round == current:
        return
    assert current != 0, "not started"
    assert round == current + 1, "not the current round"
    assert round <= max_rounds + 1, "task is over"
    word: uint256 = self._word(current)
    assert block.timestamp >= self._closes_at(word), "current round still open"
    self._fail_unfinalized(current - 1)
    self._open(round, self._r_lineage(word))


@external
def close():
    """
    @notice Anyone: once the current round's message phase closed, fail the
            round it attested if no quorum finalized it (needed after the
            last round; other rounds fail as the next opens).
    """
    current: uint256 = self.current_round
    assert current != 0, "not started"
    assert block.timestamp >= self._closes_at(self._word(current)), "current round still open"
    assert current > 1 and self._outcome(current - 1) == _OPEN, "nothing to close"
    self._fail_unfinalized(current - 1)


@external
@nonreentrant
def submit(
    round: uint256,
    pairs: DynArray[Pair, MAX_PAIRS],
    entries: DynArray[Entry, MAX],
    contributors: DynArray[address, MAX],
    scores: DynArray[uint256, MAX],
    transcript: bytes32,
):
    """
    @notice Anyone: a batch of signed round messages for `round` (the current
            round, or the next once the current one closed). Each entry's
            signer must be an active member whose first round is at most
            `round`; a signer whose message for `round` is already on chain
            is skipped (the same message twice is a no-op; a different one
            is evidence for `slash`). An update needs 1 to 2**64 - 1
            examples; after `max_rounds`, messages attest only. An entry's
            pair attests round - 1 (zero: no attestation), counted for
            members eligible in round - 1; the quorum finalizes round - 1.
            `contributors`, `scores` (may be empty) and `transcript` (its
            secure-aggregation transcript digest, zero for none) are round -
            1's result: if they hash to its finalized result digest (see
            `distribute`) and it is not paid yet, its rewards are paid in this
            call. Each round's quorum is its own rules' quorum_bps.
    """
    self._advance(round)
    word: uint256 = self._word(round)
    assert block.timestamp < self._closes_at(word), "round closed"
    previous: uint256 = round - 1
    # Round - 1's word (0 for round 1): in the ring, since round is the current round.
    prev_word: uint256 = 0
    if previous != 0:
        prev_word = self._word(previous)
    prev_open: bool = previous != 0 and self._r_outcome(prev_word) == _OPEN
    # Only a batch that left round - 1 below its quorum stored counts to add to.
    stored: bool = prev_open and self._r_tallied(prev_word)
    latest: uint256 = self._rules
    round_rules: uint256 = self._rules_from(latest, round)
    prev_rules: uint256 = round_rules
    if self._g_from(round_rules) > previous:
        prev_rules = self._rules_from(latest, previous)
    lineage: uint256 = self._r_lineage(word)
    quorum: uint256 = 0
    hashes: DynArray[bytes32, MAX_PAIRS] = []
    sums: DynArray[uint256, MAX_PAIRS] = []
    # A pair listed twice counts in one sum: its first position's.
    first: DynArray[uint256, MAX_PAIRS] = []
    for p: Pair in pairs:
        h: bytes32 = keccak256(abi_encode(p.model, p.result))
        at: uint256 = len(hashes)
        for j: uint256 in range(len(hashes), bound=MAX_PAIRS):
            if hashes[j] == h:
                at = j
                break
        first.append(at)
        hashes.append(h)
        if stored and at == len(sums):
            sums.append(self._tally[previous][h])
        else:
            sums.append(0)
    # A committee round: only its members sign, and they attest round - 1
    # against the committee's stake.
    drawn: bool = False
    if committee != 0:
        drawn = self._committee_stake[round % RING] != 0
    if prev_open:
        if drawn:
            quorum = self._quorum_stake(round, prev_rules)
        else:
            quorum = self._quorum_stake(previous, prev_rules)
    count: uint256 = self._r_count(word)
    stakes: uint256 = self._stakes[round % RING]
    submitted: uint256 = stakes >> 128
    # `_message_hash`, its domain separator computed once for the batch.
    domain: bytes32 = eip712._domain_separator_v4()
    for e: Entry in entries:
        assert e.pair < len(pairs), "pair index out of range"
        p: Pair = pairs[e.pair]
        struct_hash: bytes32 = keccak256(
            abi_encode(ROUND_TYPEHASH, round, e.update, e.examples, p.model, p.result)
        )
        signer: address = ecdsa._try_recover_r_vs(
            keccak256(concat(x"1901", domain, struct_hash)), e.r, e.vs
        )
        rec: uint256 = self._record[signer]
        assert self._status(rec) == STATUS_ACTIVE, "signer is not a member"
        first_round: uint256 = self._first_round(rec)
        assert first_round <= round, "signer joined during this round"
        if drawn:
            seats: uint256 = self._drawn[signer]
            assert seats & (2**32 - 1) == round or (seats >> 32) & (2**32 - 1) == round, "signer not in the committee"
        if self._last_round(rec) == round:
            continue
        if e.update == empty(bytes32):
            assert e.examples == 0, "examples without an update"
        else:
            assert round <= max_rounds, "no updates after the last round"
            assert e.examples > 0 and e.examples <= MAX_EXAMPLES, "examples not in [1, 2**64)"
        stake: uint256 = self._stake(rec)
        self._record[signer] = self._pack(STATUS_ACTIVE, first_round, round, stake, self._earned(rec))
        count += 1
        submitted += stake
        log Submitted(
            round=round, member=signer, update=e.update, examples=e.examples, model=p.model,
            result=p.result, r=e.r, vs=e.vs
        )
        if prev_open and (drawn or first_round <= previous) and p.model != empty(bytes32):
            at: uint256 = first[e.pair]
            tally: uint256 = sums[at] + stake
            sums[at] = tally
            if tally >= quorum:
                prev_open = False
                self._finalize(previous, p.model, p.result, tally)
                lineage = previous
    # A batch that did not finalize round - 1 keeps its counts for the next.
    if prev_open:
        tallied: bool = False
        for i: uint256 in range(len(pairs), bound=MAX_PAIRS):
            if sums[i] != 0 and pairs[i].model != empty(bytes32):
                self._tally[previous][hashes[i]] = sums[i]
                tallied = True
        if tallied and not stored:
            self._round[previous % RING] = prev_word | (1 << 232)
    quorum_at: uint256 = self._r_quorum_at(word)
    closed_at: uint256 = self._r_closed_at(word)
    if closed_at == 0 and count == self._r_members(word):
        closed_at = block.timestamp
        log Closed(round=round)
    if quorum_at == 0 and submitted >= self._quorum_stake(round, round_rules):
        quorum_at = block.timestamp
        if closed_at == 0:
            log Quorate(round=round)
    self._round[round % RING] = self._r_pack(
        self._r_start(word), quorum_at, closed_at, self._r_members(word), count, round, lineage
    )
    self._stakes[round % RING] = (stakes & (2**128 - 1)) | (submitted << 128)
    if len(contributors) > 0 and previous != 0:
        self._distribute(previous, contributors, scores, transcript, False, prev_rules)


@internal
def _finalize(round: uint256, model: bytes32, result: bytes32, stake: uint256):
    slot: uint256 = round % RING
    self._round[slot] = self._round[slot] | (_FINALIZED << 152)
    self._model[slot] = model
    self._result[slot] = result
    self._lineage = keccak256(abi_encode(self._lineage, round, model))
    log Finalized(round=round, model_digest=model, result_digest=result, stake=stake)


@external
@nonreentrant
def distribute(round: uint256, contributors: DynArray[address, MAX], scores: DynArray[uint256, MAX], transcript: bytes32):
    """
    @notice Anyone, once per finalized round (if `submit` did not already):
            credit reward_per_round * score / sum(scores) (rounded down) to
            each contributor, where keccak256(abi_encode(contributors,
            scores)) (with a zero `transcript`), or
            keccak256(abi_encode(contributors, scores, transcript)) (with the
            round's secure-aggregation transcript digest), is the round's
            finalized result digest, contributors are strictly increasing and
            every score is below 2**128. A contributor slashed since earns
            nothing. reward_per_round is the round's own rule.
    """
    self._distribute(round, contributors, scores, transcript, True, self._rules_at(round))


@internal
def _distribute(round: uint256, contributors: DynArray[address, MAX], scores: DynArray[uint256, MAX], transcript: bytes32, strict: bool, rules: uint256):
    # `rules`: the rules word in force for `round`.
    word: uint256 = self._word(round)
    if word == 0 or self._r_outcome(word) != _FINALIZED or self._r_distributed(word):
        assert not strict, "round not finalized, or already distributed"
        return
    if len(contributors) != len(scores):
        assert not strict, "result digest mismatch"
        return
    digest: bytes32 = empty(bytes32)
    if transcript == empty(bytes32):
        digest = keccak256(abi_encode(contributors, scores))
    else:
        digest = keccak256(abi_encode(contributors, scores, transcript))
    if digest != self._result[round % RING]:
        assert not strict, "result digest mismatch"
        return
    total_score: uint256 = 0
    previous: uint256 = 0
    for i: uint256 in range(len(contributors), bound=MAX):
        position: uint256 = convert(contributors[i], uint256)
        if position <= previous:
            assert not strict, "contributors not strictly increasing"
            return
        previous = position
        if scores[i] > MAX_SCORE:
            assert not strict, "score above 2**128 - 1"
            return
        total_score += scores[i]
    self._round[round % RING] = word | (1 << 160)
    reward: uint256 = self._g_reward(rules)
    minted: uint256 = 0
    if total_score > 0:
        for i: uint256 in range(len(contributors), bound=MAX):
            score: uint256 = scores[i]
            if score == 0:
                continue
            contributor: address = contributors[i]
            amount: uint256 = reward * score // total_score
            rec: uint256 = self._record[contributor]
            if self._status(rec) == STATUS_SLASHED:
                amount = 0
            if amount > 0:
                self._record[contributor] = rec + (amount << 168)
                minted += amount
    self.total_earned += minted
    log Distributed(
        round=round, total=minted, contributors=contributors, scores=scores, transcript=transcript
    )


@external
@nonreentrant
def claim(account: address):
    """
    @notice Anyone: mint `account`'s earned and not yet claimed reward
            tokens to it. A slashed member's unclaimed reward is forfeit.
    """
    rec: uint256 = self._record[account]
    assert self._status(rec) != STATUS_SLASHED, "slashed"
    earned: uint256 = self._earned(rec)
    amount: uint256 = earned - self.claimed_of[account]
    assert amount > 0, "nothing to claim"
    self.claimed_of[account] = earned
    self.total_claimed += amount
    log Claimed(member=account, amount=amount)
    extcall IRewardToken(token).mint(account, amount)


# ---------------------------------------------------------------- evidence

@external
@nonreentrant
def slash(round: uint256, a: Message, b: Message):
    """
    @notice Anyone: two different messages signed by one member for one
            round of its current membership. The member's whole stake is
            taken (it stops being a member if it was one): SLASH_SHARE_BPS
            of it to the caller, the rest to the treasury (owed, if the
            treasury refuses it). Its messages already counted stay counted.
    """
    ha: bytes32 = self._message_hash(round, a.update, a.examples, a.model, a.result)
    hb: bytes32 = self._message_hash(round, b.update, b.examples, b.model, b.result)
    assert ha != hb, "the messages are the same"
    signer: address = ecdsa._try_recover_r_vs(ha, a.r, a.vs)
    assert ecdsa._try_recover_r_vs(hb, b.r, b.vs) == signer, "different signers"
    rec: uint256 = self._record[signer]
    status: uint8 = self._status(rec)
    assert status == STATUS_ACTIVE or status == STATUS_LEFT, "no stake to slash"
    assert round >= self._first_round(rec), "offence before this membership"
    stake: uint256 = self._stake(rec)
    if status == STATUS_ACTIVE:
        self._deactivate(signer, stake)
    self._record[signer] = self._pack(
        STATUS_SLASHED, self._first_round(rec), self._last_round(rec), 0, self._earned(rec)
    )
    self.withdraw_after[signer] = 0
    self.total_slashed += stake
    share: uint256 = stake * SLASH_SHARE_BPS // BPS
    log Equivocated(round=round, member=signer, first=ha, second=hb)
    log Slashed(member=signer, amount=stake, submitter=msg.sender, share=share)
    if share > 0:
        raw_call(msg.sender, b"", value=share)
    if stake > share:
        # A treasury that refuses the payment cannot block slashing: it is owed instead.
        if not raw_call(treasury, b"", value=stake - share, revert_on_failure=False):
            self.treasury_owed += stake - share


@external
@nonreentrant
def pay_treasury():
    """
    @notice Anyone: send the treasury what a slash could not (`treasury_owed`).
    """
    amount: uint256 = self.treasury_owed
    assert amount > 0, "nothing owed"
    self.treasury_owed = 0
    raw_call(treasury, b"", value=amount)
