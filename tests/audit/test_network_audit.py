"""An outsider's audit: the chain and the network, nothing else.

A real Task contract on an embedded chain, members serving their blob stores over real gRPC
servers (port 0) with the nodes' authorization (a signed fetch request bound to the member,
the chain and the contract, then the contract's ``can_download``), rounds played by hand. The
audit is given only the chain, the task's address and a key: the configuration comes from the
chain, the initial model is rebuilt from it, every blob is fetched from the endpoints the
members published when they joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from eth_account.signers.local import LocalAccount

from fedledger.aggregation.round import aggregate_round
from fedledger.audit import Auditor, audit_task, format_report, initial_model, task_shapes
from fedledger.cli import main
from fedledger.commit import cid_from_digest, decode, encode
from fedledger.config import AggregationConfig, DataConfig, LedgerConfig, TaskConfig
from fedledger.errors import FetchRefused, MessageError
from fedledger.gossip.blobs import FileBlobStore
from fedledger.gossip.grpc_transport import GrpcTransport
from fedledger.gossip.identity import Identity
from fedledger.gossip.limits import TtlCache
from fedledger.gossip.messages import check_fetch_request
from fedledger.learning.trainer import ModelSpec
from fedledger.ledger.chain import Chain, EmbeddedChain
from fedledger.ledger.chain.anvil import find_anvil, install_anvil, start_anvil
from fedledger.ledger.contract_ledger import ContractLedger, deploy_task
from fedledger.ledger.messages import ZERO32, RoundMessage
from fedledger.ledger.rules import result_digest, sort_result
from fedledger.seeds import derive_seed
from fedledger.task import build_trainer, prepare_task

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]

TASK = TaskConfig(
    name="network-audit",
    seed=11,
    rounds=2,
    nodes=3,
    data=DataConfig(dataset="breast_cancer", partition="iid"),
    model=ModelSpec(name="logreg"),
    aggregation=AggregationConfig(rule="fedavg"),
    ledger=LedgerConfig(quorum=0.67, min_stake=10**15, window=100, grace=10, access="members"),
)  # fmt: skip
EXAMPLES = [50, 30, 20]


class LoopThread:
    """An event loop on a thread: the members' servers run there while the test (and the
    audit, synchronous) runs on the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class MemberServer:
    """A member's blob service, authorized as a ledger node authorizes a fetch: the request
    must be signed, bound to this member, the chain and the task contract, unexpired and not
    replayed, and its signer allowed by the contract's ``can_download``."""

    def __init__(self, store: FileBlobStore) -> None:
        self.store = store
        self.me = ""
        self.ledger: ContractLedger | None = None
        self.task_id = ""
        self.withheld: set[str] = set()
        self.served: list[str] = []
        self.seen: TtlCache[str, bool] = TtlCache(ttl=120.0, max_keys=4096)

    async def on_frame(self, frame: bytes) -> None:
        pass

    async def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
        ledger = self.ledger
        assert ledger is not None
        try:
            sender, cid = check_fetch_request(request, task=self.task_id, me=self.me,
                                              now=time.time(), chain_id=ledger.chain_id,
                                              contract=ledger.task_address,
                                              seen=self.seen)  # fmt: skip
        except MessageError as exc:
            raise FetchRefused(f"bad request: {exc}") from exc
        if not await asyncio.to_thread(ledger.can_download, sender):
            raise FetchRefused(f"the task's access policy does not let {sender} download")
        if cid in self.withheld or not self.store.has(cid):
            raise FetchRefused(f"no blob {cid}")
        self.served.append(cid)
        for chunk in self.store.read_chunks(cid):
            yield chunk


@dataclass
class World:
    chain: Chain
    task: str
    owner: ContractLedger
    members: list[ContractLedger]
    servers: list[MemberServer]
    auditor: Identity
    base: bytes
    rng: np.random.Generator
    ids: list[Identity] = field(default_factory=list)
    updates: dict[int, dict[str, str]] = field(default_factory=dict)
    attest: tuple[bytes, bytes] = (ZERO32, ZERO32)
    """The members' attestation of the last round played (their next messages carry it)."""
    paid: tuple[list[str], list[int]] = ([], [])
    """The last round's result (the next batch pays it)."""

    def server_of(self, member: str) -> MemberServer:
        return next(s for s in self.servers if s.me == member)

    def play(self, rnd: int) -> None:
        """One honest round (ledger v2): each member trains (noise around the base), keeps its
        update in its own store and signs it with its attestation of round ``rnd - 1``; one
        batch carries them all (and pays round ``rnd - 1``); the aggregate goes to every
        store. After the task's last round, round ``rounds + 1``'s attestations finalize it."""
        base = decode(self.base)
        blobs = [encode([p + self.rng.normal(0, 0.05, p.shape).astype(p.dtype) for p in base])
                 for _ in self.members]  # fmt: skip
        cids = [sv.store.put(b) for sv, b in zip(self.servers, blobs, strict=True)]
        self.updates[rnd] = {m.account: c for m, c in zip(self.members, cids, strict=True)}
        model, result = self.attest
        messages = [
            RoundMessage(round=rnd, update=hashlib.sha256(b).digest(), examples=n, model=model,
                         result=result).sign(i, self.chain.chain_id, self.task)
            for i, b, n in zip(self.ids, blobs, EXAMPLES, strict=True)
        ]  # fmt: skip
        self.members[0].submit(rnd, messages, *self.paid)
        order = sorted(range(len(self.members)), key=lambda i: self.members[i].account.lower())
        aggregated = aggregate_round(TASK.aggregation, base=self.base,
                                     updates=[blobs[i] for i in order],
                                     num_examples=[EXAMPLES[i] for i in order])  # fmt: skip
        who, scores = sort_result([self.members[i].account for i in order],
                                  list(aggregated.scores))  # fmt: skip
        for server in self.servers:
            server.store.put(aggregated.model)
        self.attest = (hashlib.sha256(aggregated.model).digest(), result_digest(who, scores))
        self.paid = (who, scores)
        self.base = aggregated.model
        if rnd == TASK.rounds:
            model, result = self.attest
            last = [RoundMessage(round=rnd + 1, model=model, result=result)
                    .sign(i, self.chain.chain_id, self.task) for i in self.ids]  # fmt: skip
            self.members[0].submit(rnd + 1, last, who, scores)

    def audit(self, identity: Identity | None = None, **kwargs: Any) -> Any:
        """The outsider's audit: the chain, the task address and a key, nothing else."""
        return audit_task(chain=self.chain, task_address=self.task,
                          identity=identity or self.auditor, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def initial() -> bytes:
    return initial_model(TASK)


@contextlib.contextmanager
def make_world(chain: Chain, tmp_path: Path, initial: bytes) -> Iterator[World]:
    """Three members serving their stores over gRPC (port 0), joined with those endpoints;
    the auditor's key granted read access by the owner; round 1 started."""
    loop = LoopThread()
    servers = [MemberServer(FileBlobStore(tmp_path / f"member-{i}", durable=False))
               for i in range(3)]  # fmt: skip
    transports = [GrpcTransport(port=0) for _ in servers]
    try:
        for transport, server in zip(transports, servers, strict=True):
            loop.run(transport.start(server))
        accounts: list[LocalAccount] = chain.accounts()
        task, _ = deploy_task(chain, TASK, owner=accounts[0])
        owner = ContractLedger(chain, task, accounts[0])
        members = [ContractLedger(chain, task, a) for a in accounts[1:4]]
        for m, server, transport in zip(members, servers, transports, strict=True):
            m.join(transport.endpoint, TASK.ledger.min_stake)
            server.me, server.ledger, server.task_id = m.account, m, TASK.digest().hex()
            server.store.put(initial)
        auditor = Identity.generate()
        owner.grant_reader(auditor.address)
        owner.start()
        yield World(chain=chain, task=task, owner=owner, members=members, servers=servers,
                    auditor=auditor, base=initial, rng=np.random.default_rng(3),
                    ids=[Identity.from_hex(a.key.hex()) for a in accounts[1:4]])  # fmt: skip
    finally:
        for transport in transports:
            loop.run(transport.close())
        loop.stop()


@pytest.fixture
def world(tmp_path: Path, initial: bytes) -> Iterator[World]:
    with make_world(EmbeddedChain(accounts=4), tmp_path, initial) as w:
        yield w


def round_failures(report: Any, rnd: int) -> dict[str, str]:
    verdict = next(r for r in report.rounds if r.round == rnd)
    return {c.name: c.detail for c in verdict.failures}


def test_an_outsider_audits_with_the_chain_and_the_network_alone(world: World) -> None:
    for rnd in (1, 2):
        world.play(rnd)

    report = world.audit()

    assert report.ok, report.failures()
    assert [(r.round, r.status) for r in report.rounds] == [(1, "finalized"), (2, "finalized")]
    # Nothing was local: every update and model came from the members, verified.
    assert "blobs verified from: members" in " ".join(report.notes)
    served = {cid for s in world.servers for cid in s.served}
    assert set(world.updates[1].values()) | set(world.updates[2].values()) <= served
    assert format_report(report)[-1] == "audit: OK, every round verifies"


def test_an_altered_blob_served_by_its_member_fails_its_round(world: World) -> None:
    for rnd in (1, 2):
        world.play(rnd)
    victim = world.members[1].account
    store = world.server_of(victim).store
    path = store._path(world.updates[2][victim])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))

    report = world.audit()

    assert not report.ok
    assert next(r for r in report.rounds if r.round == 1).ok
    bad = round_failures(report, 2)
    assert "altered" in bad["blobs"]
    assert victim in bad["blobs"]
    assert "cannot recompute" in bad["aggregate"]


def test_a_withheld_blob_fails_its_round(world: World) -> None:
    world.play(1)
    victim = world.members[2].account
    world.server_of(victim).withheld.add(world.updates[1][victim])

    report = world.audit()

    assert not report.ok
    bad = round_failures(report, 1)
    assert "missing" in bad["blobs"]
    assert victim in bad["blobs"]
    assert "no blob" in bad["blobs"]  # what the members said


def test_a_key_without_read_access_is_refused_and_told_why(world: World) -> None:
    world.play(1)
    stranger = Identity.generate()

    report = world.audit(stranger)

    assert not report.ok
    assert "does not let" in round_failures(report, 1)["blobs"]
    assert any("grant_reader" in n and stranger.address in n for n in report.notes)
    # Revoked: the auditor's own key is refused from then on too.
    world.owner.revoke_reader(world.auditor.address)
    assert not world.audit().ok


def test_a_given_configuration_must_be_the_one_on_chain(world: World, tmp_path: Path) -> None:
    world.play(1)
    assert world.audit(config=TASK).ok
    other = replace(TASK, seed=TASK.seed + 1)
    report = world.audit(config=other)
    rules = next(c for c in report.task_checks if c.name == "rules")
    assert not rules.ok
    assert "config digest" in rules.detail


class _Gateway(http.server.ThreadingHTTPServer):
    blobs: dict[str, bytes]


class _GatewayHandler(http.server.BaseHTTPRequestHandler):
    server: _Gateway

    def do_GET(self) -> None:
        cid = self.path.removeprefix("/ipfs/")
        data = self.server.blobs.get(cid)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[_Gateway]:
    server = _Gateway(("127.0.0.1", 0), _GatewayHandler)
    server.blobs = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_gateway_serves_what_the_members_do_not(world: World, gateway: _Gateway) -> None:
    world.play(1)
    victim = world.members[0].account
    cid = world.updates[1][victim]
    world.server_of(victim).withheld.add(cid)
    url = f"http://127.0.0.1:{gateway.server_address[1]}"

    assert not world.audit(gateway=url).ok  # the gateway does not have it either
    gateway.blobs[cid] = world.server_of(victim).store.get(cid)
    report = world.audit(gateway=url)
    assert report.ok, report.failures()
    assert "gateway 1" in " ".join(report.notes)

    gateway.blobs[cid] = b"not the update"  # a lying gateway is caught
    bad = round_failures(world.audit(gateway=url), 1)
    assert "altered" in bad["blobs"]


def test_the_auditor_reads_the_configuration_from_the_chain(world: World, initial: bytes) -> None:
    auditor = Auditor(chain=world.chain, task_address=world.task)
    assert auditor.task == TASK
    assert auditor._initial_model() == initial


def test_the_initial_model_is_rebuilt_from_the_configuration_alone() -> None:
    for dataset in ("digits", "breast_cancer"):
        for model in (ModelSpec(name="logreg"), ModelSpec(name="mlp", hidden=(8,))):
            task = replace(TASK, data=DataConfig(dataset=dataset), model=model)
            assert task_shapes(task) is not None
            prepared = prepare_task(task)
            trainer = build_trainer(task, prepared.data)
            from_data = trainer.init_params(derive_seed(task.seed, "init"))
            assert initial_model(task) == encode(from_data)


def test_task_shapes_of_a_sites_task_come_from_its_features_and_classes() -> None:
    sites = DataConfig(dataset="sites", features=("age", "bmi", "glucose"),
                       classes=("no", "yes"))  # fmt: skip
    task = replace(TASK, data=sites)
    assert task_shapes(task) == ((3,), 2, None)
    assert len(initial_model(task)) > 0
    assert task_shapes(replace(TASK, data=DataConfig(dataset="csv", path="x.csv",
                                                     label_column="y"))) is None  # fmt: skip


def test_an_unknown_initial_model_is_reported_not_guessed(world: World) -> None:
    world.play(1)
    world.play(2)
    auditor = Auditor(chain=world.chain, task_address=world.task, identity=world.auditor)
    auditor.task = replace(TASK, data=DataConfig(dataset="csv", path="/nonexistent.csv",
                                                 label_column="y"))  # fmt: skip
    report = auditor.run()
    assert not report.ok
    assert "base model is unknown" in round_failures(report, 1)["aggregate"]
    assert next(r for r in report.rounds if r.round == 2).ok  # from the attested model on
    assert any("initial model is unknown" in n for n in report.notes)
    # Given the initial model's CID, the members serve it.
    cid = cid_from_digest(hashlib.sha256(initial_model(TASK)).digest())
    again = Auditor(chain=world.chain, task_address=world.task, identity=world.auditor,
                    initial_cid=cid)  # fmt: skip
    again.task = auditor.task
    verdict = again.run()
    assert next(r for r in verdict.rounds if r.round == 1).ok, verdict.failures()


def test_the_cli_audits_a_task_on_anvil_from_its_rpc_url_and_address_alone(
    tmp_path: Path, initial: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        start_anvil(anvil=find_anvil(ROOT) or install_anvil(ROOT)) as node,
        make_world(node.chain(), tmp_path / "world", initial) as world,
    ):
        for rnd in (1, 2):
            world.play(rnd)
        key = tmp_path / "auditor.key"
        world.auditor.save(key)
        args = ["audit", "--rpc", node.url, "--task", world.task, "--key", str(key)]

        assert main([*args, "--json"]) == 0
        verdict = json.loads(capsys.readouterr().out)
        assert verdict["ok"] is True
        assert [r["round"] for r in verdict["rounds"]] == [1, 2]
        assert any(n.startswith("blobs verified from: members") for n in verdict["notes"])

        victim = world.members[0].account
        world.server_of(victim).withheld.add(world.updates[2][victim])
        assert main(args) == 1
        out = capsys.readouterr().out
        assert f"round 2: blobs: {victim}'s update" in out
        assert out.rstrip().endswith("audit: FAILED")
