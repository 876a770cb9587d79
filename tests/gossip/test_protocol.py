"""Gossip state machine against hostile rounds: the window follows the node's own round."""

from __future__ import annotations

import hashlib
import random

import pytest

from fedledger.commit.cid import cid_of
from fedledger.errors import ConfigError
from fedledger.gossip.identity import Identity
from fedledger.gossip.messages import MAX_ROUND, SignedMessage, decode_frame, make_message
from fedledger.gossip.protocol import Gossip, GossipConfig, RoundWindow, Send, round_window

TASK = hashlib.sha256(b"task").hexdigest()
ME, HONEST, HOSTILE = (Identity.from_seed(21, i) for i in range(3))


def message(identity: Identity, rnd: int, tag: str = "") -> SignedMessage:
    body = {"cid": cid_of(f"{identity.address}{rnd}{tag}".encode()), "num_examples": 1,
            "base": cid_of(b"base")}  # fmt: skip
    return make_message(kind="update", identity=identity, task=TASK, round=rnd, body=body)


def gossip(window: RoundWindow | None = None) -> Gossip:
    def make(kind: str, rnd: int, body: dict[str, object]) -> SignedMessage:
        return make_message(kind=kind, identity=ME, task=TASK, round=rnd, body=body)

    return Gossip(
        me=ME.address,
        neighbours=[HONEST.address, HOSTILE.address],
        config=GossipConfig(),
        make=make,
        rng=random.Random(0),
        window=window,
    )


def test_a_frame_for_the_last_possible_round_changes_nothing() -> None:
    g = gossip()
    g.set_round(3)
    before = message(HONEST, 3)
    assert g.receive(before, 0)[0]
    new, sends = g.receive(message(HOSTILE, MAX_ROUND - 1), 0)
    assert (new, sends) == (False, [])
    assert g.current_round == 3
    assert [m.id for m in g.held()] == [before.id]
    # Honest traffic after it is still accepted and delivered.
    after = message(HONEST, 3, "again")
    assert g.receive(after, 0)[0]
    assert g.receive(message(HONEST, 4), 0)[0]
    assert {m.id for m in g.held()} >= {before.id, after.id}


def test_received_rounds_never_move_the_horizon() -> None:
    g = gossip(RoundWindow(behind=2, ahead=10))
    g.set_round(5)
    assert g.receive(message(HONEST, 5), 0)[0]
    assert g.receive(message(HOSTILE, 15), 0)[0]  # inside the window: kept, but ...
    assert g.current_round == 5  # ... the node's round is its own
    assert g.receive(message(HONEST, 4), 0)[0]  # so the honest past is still accepted


def test_window_bounds_and_the_task_end() -> None:
    g = gossip(round_window(mode="consensus", rounds=8))
    g.set_round(4)
    # Round 9 = rounds + 1: a ledger node's attestation of the last round; past it, nothing.
    assert not g.receive(message(HOSTILE, 10), 0)[0]  # past the task's last round
    assert not g.receive(message(HOSTILE, 1), 0)[0]  # more than keep_rounds behind
    assert g.receive(message(HONEST, 9), 0)[0]  # the last round's attestations
    assert g.receive(message(HONEST, 8), 0)[0]  # the last round (done), for catch-up
    assert g.receive(message(HONEST, 2), 0)[0]
    assert g.in_window(4)
    assert not g.in_window(10)
    assert not g.in_window(1)


def test_out_of_window_message_is_not_marked_seen() -> None:
    g = gossip(RoundWindow(behind=0, ahead=1))
    early = message(HONEST, 3)
    assert not g.receive(early, 0)[0]
    assert not g.has(early.id)
    g.set_round(2)
    assert g.receive(early, 0)[0]  # now it is in the window, and counts


def test_set_round_only_moves_forward_and_forgets_behind() -> None:
    g = gossip(RoundWindow(behind=2, ahead=5))
    old = message(HONEST, 1)
    assert g.receive(old, 0)[0]
    g.set_round(10)
    g.set_round(2)  # ignored
    assert g.current_round == 10
    assert old.id not in {m.id for m in g.held()}
    assert g.has(old.id)  # forgotten, but not accepted again


def test_own_publications_advance_the_round() -> None:
    g = gossip(RoundWindow(behind=1, ahead=1))
    g.publish(message(ME, 6))
    assert g.current_round == 6
    assert not g.receive(message(HONEST, 4), 0)[0]


def test_a_sender_holds_at_most_max_per_sender_messages() -> None:
    g = gossip(RoundWindow(behind=2, ahead=100, max_per_sender=8))
    honest = message(HONEST, 1)
    assert g.receive(honest, 0)[0]
    for rnd in range(1, 60):
        g.receive(message(HOSTILE, rnd), 0)
    assert g.held_from(HOSTILE.address) == 8
    assert g.held_from(HONEST.address) == 1
    # The hostile sender's lowest rounds were evicted, its newest kept.
    kept = sorted(m.message.round for m in g.held() if m.message.sender == HOSTILE.address)
    assert kept == list(range(52, 60))
    assert honest in g.held()


def test_pull_messages_carry_the_node_round() -> None:
    g = gossip()
    g.set_round(7)
    g.receive(message(HOSTILE, 900), 0)
    (send,) = g.tick(1.0)
    signed, _ = decode_frame(send.frame)
    assert signed.message.round == 7


def test_round_window_per_mode() -> None:
    c = round_window(mode="consensus", rounds=20, keep_rounds=2)
    assert c.bounds(5) == (3, 21)  # round 21: a ledger node's attestation of round 20
    assert round_window(mode="ledger", rounds=20).bounds(0) == (0, 21)
    gm = round_window(mode="gossip", rounds=50, keep_rounds=2, staleness=6)
    assert gm.bounds(10) == (4, 50)
    with pytest.raises(ConfigError):
        round_window(mode="nope", rounds=3)
    with pytest.raises(ConfigError):
        RoundWindow(max_per_sender=0)
    with pytest.raises(ConfigError):
        RoundWindow(behind=-1)


# -- neighbourhood scope (gossip mode) ------------------------------------------------------------

FAR = Identity.from_seed(21, 3)  # a member that is not ME's neighbour


def local_gossip(me: Identity, neighbours: list[Identity]) -> Gossip:
    def make(kind: str, rnd: int, body: dict[str, object]) -> SignedMessage:
        return make_message(kind=kind, identity=me, task=TASK, round=rnd, body=body)

    return Gossip(me=me.address, neighbours=[n.address for n in neighbours],
                  config=GossipConfig(ttl=8, fanout=1), make=make, rng=random.Random(0),
                  local=True)  # fmt: skip


def test_neighbourhood_scope_sends_to_every_neighbour_and_relays_nothing() -> None:
    g = local_gossip(ME, [HONEST, HOSTILE])
    own = message(ME, 1)
    sends = g.publish(own)
    assert sorted(s.peer for s in sends) == sorted([HONEST.address, HOSTILE.address])
    assert all(decode_frame(s.frame, task=TASK)[1] == 0 for s in sends)  # ttl 0: not relayed
    new, relayed = g.receive(message(HONEST, 1), 8)  # a neighbour's, whatever its ttl
    assert new
    assert relayed == []


def test_neighbourhood_scope_drops_a_non_neighbours_message_without_a_trace() -> None:
    g = local_gossip(ME, [HONEST, HOSTILE])
    far = message(FAR, 1)
    assert g.receive(far, 3) == (False, [])
    assert g.held() == []
    assert not g.has(far.id)


def pull_to(g: Gossip, peer: Identity, now: float) -> Send:
    """``g``'s next pull that goes to ``peer`` (the peer of each pull is drawn at random)."""
    for step in range(100):
        sends = g.tick(now + step)
        if sends and sends[0].peer == peer.address:
            return sends[0]
    raise AssertionError("no pull to the peer in 100 tries")


def test_a_pull_in_neighbourhood_scope_offers_and_asks_only_the_two_peers_own() -> None:
    a = local_gossip(ME, [HONEST, HOSTILE])
    b = local_gossip(HONEST, [ME, FAR])
    a.publish(message(ME, 1))
    b.publish(message(HONEST, 1))
    assert b.receive(message(FAR, 1), 0)[0]  # b holds its other neighbour's message too
    ihave = pull_to(b, ME, 10.0)
    listed = decode_frame(ihave.frame, task=TASK)[0].message.body["ids"]
    assert len(listed) == 1  # b's own only: it holds nothing of a's yet
    answer = a.on_ihave(HONEST.address, listed)
    pushed = [decode_frame(s.frame, task=TASK)[0] for s in answer]
    kinds = sorted(m.message.kind for m in pushed)
    assert kinds == ["update", "want"]  # a's own update, and a want of b's
    (update,) = [m for m in pushed if m.message.kind == "update"]
    assert update.message.sender == ME.address
    assert b.receive(update, 0)[0]
    # The next pull lists what b holds of a: a pushes nothing it already has.
    listed = decode_frame(pull_to(b, ME, 100.0).frame, task=TASK)[0].message.body["ids"]
    assert len(listed) == 2
    assert [s for s in a.on_ihave(HONEST.address, listed)
            if decode_frame(s.frame, task=TASK)[0].message.kind == "update"] == []  # fmt: skip
