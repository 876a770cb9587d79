"""Assemble a node: its core, its mode's state machine and driver, and its adversary."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from fedledger.attacks.adversary import Adversary, AttackAdversary, Observed
from fedledger.attacks.behaviour import BACKDOOR_TARGET, Attack, Collusion, trigger_value
from fedledger.attacks.data import backdoor_test
from fedledger.config.node import NodeConfig
from fedledger.data import Dataset, NodeData
from fedledger.errors import ConfigError
from fedledger.gossip.blobs import BlobStore, FileBlobStore
from fedledger.gossip.identity import Identity
from fedledger.gossip.topology import metropolis_hastings_weights, uniform_weights
from fedledger.gossip.transport import Transport
from fedledger.learning import Params, Trainer
from fedledger.ledger.messages import SignedRound
from fedledger.ledger.records import Ledger
from fedledger.node.consensus import ConsensusNode
from fedledger.node.core import NodeCore
from fedledger.node.drivers.consensus import ConsensusDriver
from fedledger.node.drivers.gossip import GossipDriver
from fedledger.node.drivers.ledger import LedgerDriver
from fedledger.node.gossip_mode import GossipLearner
from fedledger.node.ledger_round import LedgerRoundNode
from fedledger.node.services import Driver
from fedledger.seeds import derive_seed
from fedledger.task import Task, build_trainer, prepare_task

log = logging.getLogger("fedledger.node")


def restored_messages(core: NodeCore, ledger: Ledger) -> dict[int, SignedRound]:
    """The round messages this node persisted before a restart, signed again (the same
    bytes: signatures are deterministic)."""
    from fedledger.ledger.messages import RoundMessage
    from fedledger.node.state import load_messages

    out = {}
    binding = f"{ledger.chain_id}:{ledger.task_address.lower()}"
    for rnd, doc in load_messages(core.config.state_dir, core.task_id, binding).items():
        message = RoundMessage.from_json(doc)
        out[rnd] = message.sign(core.identity, ledger.chain_id, ledger.task_address)
    return out


def driver_factory(
    cfg: NodeConfig, *, ledger: Ledger | None, salt_rng: random.Random | None = None
) -> Callable[[NodeCore], Driver]:
    """How to build the driver of ``cfg``'s mode around a core."""

    def make(core: NodeCore) -> Driver:
        members = core.member_set
        if ledger is not None:
            if cfg.mode != "consensus":
                raise ConfigError("a ledger runs consensus rounds: use mode = consensus",
                                  field="mode")  # fmt: skip
            binding = f"{ledger.chain_id}:{ledger.task_address.lower()}"
            if core.resume is not None and core.state.binding != binding:
                log.warning("ignoring state.json of another deployment (%s, not %s)",
                            core.state.binding or "no ledger", binding)  # fmt: skip
                core.resume = None
            signed = restored_messages(core, ledger)
            logic = LedgerRoundNode(
                me=core.me, rules=ledger.rules(), rounds=cfg.task.rounds,
                initial_model=core.initial_cid, members=core.addresses,
                rng=salt_rng or random.SystemRandom(), resume=core.resume, signed=signed,
                collect=cfg.task.ledger.collect, fallback=cfg.task.ledger.fallback,
                max_releases=core.privacy.max_releases if core.privacy else None,
                secure=cfg.task.secure_aggregation,
            )  # fmt: skip
            driver = LedgerDriver(core, logic, ledger=ledger, stake=cfg.stake,
                                  start_timeout=cfg.start_timeout, task=cfg.task,
                                  consent=cfg.consent)  # fmt: skip
            driver.signed_messages.update(signed)
            return driver
        if cfg.task.secure_aggregation:
            raise ConfigError("secure aggregation runs in ledger mode only (the chain fixes "
                              "who masks with whom)",
                              field="privacy.secure_aggregation")  # fmt: skip
        if core.privacy is not None:
            core.privacy.check_without_ledger()
        if cfg.mode == "consensus":
            consensus = ConsensusNode(
                me=core.me, members=core.addresses, rounds=cfg.task.rounds,
                initial_model=core.initial_cid, timeouts=cfg.timeouts, resume=core.resume,
            )  # fmt: skip
            return ConsensusDriver(core, consensus, members=members,
                                   ready_timeout=cfg.ready_timeout,
                                   ready_from=frozenset(core.neighbours))  # fmt: skip
        mix = uniform_weights if cfg.mixing == "uniform" else metropolis_hastings_weights
        weights = mix(core.topology)[core.position]
        row = {core.addresses[j]: w for j, w in weights.items()}
        learner = GossipLearner(
            me=core.me, weights=row, iterations=cfg.task.rounds,
            initial_model=core.initial_cid, staleness=cfg.staleness,
            timeouts=cfg.timeouts, resume=core.resume,
        )  # fmt: skip
        return GossipDriver(core, learner, members=members, ready_timeout=cfg.ready_timeout,
                            ready_from=frozenset(core.neighbours))  # fmt: skip

    return make


def adversary_of(cfg: NodeConfig, collusion: Collusion | None) -> Adversary:
    """The node's behaviour: an attack of the run's (robustness experiments), an honest node
    watched by omniscient colluders, or plainly honest."""
    if cfg.attack is not None:
        seed = derive_seed(cfg.task.seed, "attack", cfg.index)
        attack = Attack(name=cfg.attack, n=cfg.task.nodes, f=cfg.attackers, seed=seed,
                        rule=cfg.task.aggregation, collusion=collusion)  # fmt: skip
        return AttackAdversary(attack)
    if collusion is not None:
        return Observed(collusion)
    return Adversary()


def build_node(
    cfg: NodeConfig,
    *,
    identity: Identity,
    transport: Transport,
    store: BlobStore | None = None,
    task: Task | None = None,
    ledger: Ledger | None = None,
    collusion: Collusion | None = None,
    salt_rng: random.Random | None = None,
    trainer: Trainer | None = None,
    evaluator: Trainer | None = None,
    data: NodeData | None = None,
    test: Dataset | None = None,
    initial_params: Params | None = None,
) -> NodeCore:
    """A node of ``cfg``'s task: by default its model from the task's registry, its data the
    task's partition ``cfg.index``, its blobs in ``cfg.state_dir/blobs``. Pass ``trainer``,
    ``evaluator``, ``data``, ``test`` and ``initial_params`` to bring a model and data of
    one's own (see :mod:`fedledger.api`)."""
    if data is None or test is None or trainer is None:
        task = task or prepare_task(cfg.task)
        data = data if data is not None else task.data.nodes[cfg.index]
        test = test if test is not None else task.data.test
        trainer = trainer if trainer is not None else build_trainer(cfg.task, task.data)
        evaluator = evaluator if evaluator is not None else build_trainer(cfg.task, task.data)
    if initial_params is None:
        initial_params = trainer.init_params(derive_seed(cfg.task.seed, "init"))
    probe = None
    if cfg.probe == "backdoor":
        probe = backdoor_test(test, target=BACKDOOR_TARGET, value=trigger_value(test))
    return NodeCore(
        config=cfg,
        identity=identity,
        transport=transport,
        # Blobs can be fetched again; the one state.json names is verified on restart.
        store=store if store is not None else FileBlobStore(cfg.state_dir / "blobs", durable=False),
        trainer=trainer,
        evaluator=evaluator,
        data=data,
        test=test,
        initial_params=initial_params,
        make_driver=driver_factory(cfg, ledger=ledger, salt_rng=salt_rng),
        adversary=adversary_of(cfg, collusion),
        probe=probe,
    )
