"""Whom a node waits for, and the line that says so.

The round logic (:mod:`fedledger.node.consensus`, :mod:`fedledger.node.gossip_mode`,
:mod:`fedledger.node.ledger_round`) tells what it waits for as data, a :class:`Waiting` in its
own clock (``waiting(now)``); the mode's driver hands it to the core, which writes it to the
node's ``state_dir/status.json`` (:func:`fedledger.node.state.write_status`) with the deadline
as a wall-clock time. ``fedledger run`` reads every node's file (:func:`waiting_line`) and
``fedledger status`` reads the chain; both say it with :func:`describe_waiting`::

    round 4: waiting for update blobs from node 3 (0x3f1a…) until 12:03:10

Nothing here performs I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

SHOWN_MEMBERS = 4
"""Members named in a waiting line; the rest are counted."""


@dataclass(frozen=True, kw_only=True)
class Waiting:
    """A node waits for ``what`` of round ``round`` from ``members``, at most until
    ``deadline``."""

    round: int
    what: str
    """What it waits for, as the line says it: ``updates``, ``models``, ``messages``,
    ``update blobs``, ``reveals``, ``done reports``."""
    members: tuple[str, ...]
    """The members it has not heard from yet (addresses), never empty."""
    deadline: float | None
    """When it stops waiting, in the clock of the logic that made this (the chain's time in
    ledger mode, the node's monotonic clock otherwise); None: no deadline."""


def short_address(address: str) -> str:
    """``0x3f1a…``: an address's first four hex digits."""
    return address[:6] + "…" if len(address) > 8 else address


def describe_waiting(
    rnd: int,
    what: str,
    members: Sequence[str],
    until: float | None,
    *,
    names: Mapping[str, str] | None = None,
    tz: tzinfo | None = None,
) -> str:
    """``round 4: waiting for reveals from node 3 (0x3f1a…), 0x9ab2… until 12:03:10``.

    ``until``: a Unix time (None: no deadline), shown in ``tz`` (default: local time);
    ``names``: labels of some addresses (``node 3``; keys in any case). At most
    :data:`SHOWN_MEMBERS` members are named, then ``and N more``.
    """
    labels = {a.lower(): n for a, n in (names or {}).items()}

    def label(address: str) -> str:
        name = labels.get(address.lower())
        return f"{name} ({short_address(address)})" if name else short_address(address)

    shown = [label(a) for a in members[:SHOWN_MEMBERS]]
    if len(members) > SHOWN_MEMBERS:
        shown.append(f"{len(members) - SHOWN_MEMBERS} more")
    who = ", ".join(shown) if shown else "nobody"
    when = ""
    if until is not None:
        when = " until " + datetime.fromtimestamp(until, tz).strftime("%H:%M:%S")
    return f"round {rnd}: waiting for {what} from {who}{when}"


def waiting_line(
    statuses: Sequence[Mapping[str, Any]],
    *,
    names: Mapping[str, str] | None = None,
    tz: tzinfo | None = None,
) -> str | None:
    """One line for a whole run, from its nodes' status documents (``status.json``'s
    ``waiting``: ``round``, ``what``, ``members``, ``until``; None or absent: not waiting).

    The earliest round any node waits in; of its waits, the kind most nodes share; the
    members they wait for, those most nodes wait for first; the latest deadline. None when no
    node waits for anyone.
    """
    waits = [w for w in statuses if w and w.get("members")]
    if not waits:
        return None
    first = min(int(w["round"]) for w in waits)
    of_round = [w for w in waits if int(w["round"]) == first]
    kinds = Counter(str(w["what"]) for w in of_round)
    what = min(kinds, key=lambda k: (-kinds[k], k))
    group = [w for w in of_round if str(w["what"]) == what]
    counts = Counter(str(m) for w in group for m in w["members"])
    members = sorted(counts, key=lambda m: (-counts[m], m.lower()))
    deadlines = [float(w["until"]) for w in group if w.get("until") is not None]
    return describe_waiting(first, what, members, max(deadlines) if deadlines else None,
                            names=names, tz=tz)  # fmt: skip
