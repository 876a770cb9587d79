# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma optimize gas
"""
@title fedledger timelock
@license Apache-2.0
@notice snekmate's `timelock_controller` (and its `access_control` roles):
        the contract that owns, or governs, what token holders govern. A
        Governor holding the proposer (and canceller) and executor roles
        schedules the calls that passed a vote; they run after the minimum
        delay, from this contract's address.

        One change to the module: its `schedule`, `execute` and
        `hash_operation` carry at most 1,024 bytes of calldata, too few for
        a task's reconfiguration (an 8 KB configuration document); here
        they take up to MAX_CALL bytes. They are written on the module's
        own internal functions (role checks, `_schedule`, `_before_call`,
        `_after_call`), with the same operation id, keccak256(abi_encode(
        target, amount, payload, predecessor, salt)), so an operation
        scheduled here has the id the module would give it; the batch
        functions are the module's (1,024 bytes a call). Everything else is
        exported unchanged. See docs/governance.md.
"""

from snekmate.auth import access_control
from snekmate.governance import timelock_controller

initializes: access_control
initializes: timelock_controller[access_control := access_control]

exports: (
    # Roles (from access_control, through the module).
    timelock_controller.DEFAULT_ADMIN_ROLE,
    timelock_controller.hasRole,
    timelock_controller.getRoleAdmin,
    timelock_controller.grantRole,
    timelock_controller.revokeRole,
    timelock_controller.renounceRole,
    timelock_controller.set_role_admin,
    timelock_controller.PROPOSER_ROLE,
    timelock_controller.EXECUTOR_ROLE,
    timelock_controller.CANCELLER_ROLE,
    # Operations.
    timelock_controller.get_timestamp,
    timelock_controller.get_minimum_delay,
    timelock_controller.is_operation,
    timelock_controller.is_operation_pending,
    timelock_controller.is_operation_ready,
    timelock_controller.is_operation_done,
    timelock_controller.get_operation_state,
    timelock_controller.hash_operation_batch,
    timelock_controller.schedule_batch,
    timelock_controller.execute_batch,
    timelock_controller.cancel,
    timelock_controller.update_delay,
    # Receiving ETH, ERC-721 (a task's model NFTs) and ERC-1155 tokens.
    timelock_controller.__default__,
    timelock_controller.supportsInterface,
    timelock_controller.IERC721_TOKENRECEIVER_SELECTOR,
    timelock_controller.IERC1155_TOKENRECEIVER_SINGLE_SELECTOR,
    timelock_controller.IERC1155_TOKENRECEIVER_BATCH_SELECTOR,
    timelock_controller.onERC721Received,
    timelock_controller.onERC1155Received,
    timelock_controller.onERC1155BatchReceived,
)


# The longest calldata of one scheduled call: a Task.reconfigure carrying an
# 8,192-byte document is about 8,600 bytes.
MAX_CALL: public(constant(uint256)) = 10240


# The module's `CallScheduled` and `CallExecuted` events declare 1,024-byte
# payloads; `schedule` and `execute` emit the same events (same topics, same
# ABI encoding: `bytes` has no size) with raw_log.
_CALL_SCHEDULED: constant(bytes32) = keccak256(
    "CallScheduled(bytes32,uint256,address,uint256,bytes,bytes32,uint256)"
)
_CALL_EXECUTED: constant(bytes32) = keccak256("CallExecuted(bytes32,uint256,address,uint256,bytes)")


@deploy
@payable
def __init__(
    minimum_delay_: uint256,
    proposers_: DynArray[address, 255],
    executors_: DynArray[address, 255],
    admin_: address,
):
    """
    @param minimum_delay_ The minimum delay of an operation, in seconds.
    @param proposers_ Granted the proposer and canceller roles.
    @param executors_ Granted the executor role (the zero address: anyone
           may execute a ready operation).
    @param admin_ Granted the admin role (zero: none; the timelock
           administers itself). Renounce it once the roles are set.
    """
    access_control.__init__()
    timelock_controller.__init__(minimum_delay_, proposers_, executors_, admin_)


@external
@pure
def hash_operation(
    target: address, amount: uint256, payload: Bytes[MAX_CALL], predecessor: bytes32, salt: bytes32
) -> bytes32:
    """
    @notice The id of an operation of one call (the module's formula).
    """
    return keccak256(abi_encode(target, amount, payload, predecessor, salt))


@external
def schedule(
    target: address, amount: uint256, payload: Bytes[MAX_CALL], predecessor: bytes32, salt: bytes32, delay: uint256
):
    """
    @notice Proposers only: schedule one call, to become ready `delay`
            (at least the minimum delay) seconds from now.
    """
    access_control._check_role(timelock_controller.PROPOSER_ROLE, msg.sender)
    id: bytes32 = keccak256(abi_encode(target, amount, payload, predecessor, salt))
    timelock_controller._schedule(id, delay)
    raw_log(
        [_CALL_SCHEDULED, id, empty(bytes32)], abi_encode(target, amount, payload, predecessor, delay)
    )
    if salt != empty(bytes32):
        log timelock_controller.CallSalt(id=id, salt=salt)


@external
@payable
def execute(target: address, amount: uint256, payload: Bytes[MAX_CALL], predecessor: bytes32, salt: bytes32):
    """
    @notice Executors only (or anyone, if the zero address holds the role):
            run a ready operation of one call. A revert of the call is
            bubbled up.
    """
    timelock_controller._only_role_or_open_role(timelock_controller.EXECUTOR_ROLE)
    id: bytes32 = keccak256(abi_encode(target, amount, payload, predecessor, salt))
    timelock_controller._before_call(id, predecessor)
    success: bool = False
    response: Bytes[1024] = b""
    success, response = raw_call(target, payload, max_outsize=1024, value=amount, revert_on_failure=False)
    if not success:
        if len(response) != 0:
            raw_revert(response)
        raise "timelock_controller: underlying transaction reverted"
    raw_log([_CALL_EXECUTED, id, empty(bytes32)], abi_encode(target, amount, payload))
    timelock_controller._after_call(id)
