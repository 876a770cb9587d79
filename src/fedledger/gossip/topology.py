"""Seeded peer graphs: who gossips with whom, and the mixing weights of decentralized averaging.

:func:`build_topology` turns a :class:`TopologySpec` and a node count into neighbour lists,
deterministically from a seed, so every node derives the same graph without talking to the
others. Every graph it returns is simple (no self loops), symmetric and **connected**: on a
disconnected graph, decentralized averaging never reaches consensus.

A gossip-averaging step replaces each node's value with a weighted mean of its own and its
neighbours' values, ``x_i <- sum_j W[i][j] x_j``. With a symmetric, doubly stochastic ``W``
(:func:`metropolis_hastings_weights`), repeated steps converge to the exact average, and the
distance to it shrinks by a factor of about ``1 - spectral_gap(W)`` per step
(:func:`spectral_gap`). A complete graph mixes in one step (gap 1); a ring of ``n`` nodes has
a gap of order ``1/n**2``, because information needs ``n/2`` hops to cross it; random regular
and small-world graphs have short paths and a gap that stays bounded away from 0 as ``n``
grows, which is why they are the practical choices for large networks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedledger.errors import ConfigError
from fedledger.seeds import derive_seed

__all__ = [
    "MAX_ATTEMPTS",
    "TOPOLOGIES",
    "Neighbours",
    "TopologySpec",
    "Weights",
    "build_topology",
    "metropolis_hastings_weights",
    "spectral_gap",
    "uniform_weights",
    "weight_matrix",
]

TOPOLOGIES = ("full", "ring", "regular", "erdos_renyi", "small_world", "two_cliques")
"""The graph kinds :func:`build_topology` knows."""

MAX_ATTEMPTS = 200
"""How many seeds the random kinds try before giving up on a connected graph."""

Neighbours = tuple[tuple[int, ...], ...]
"""``neighbours[i]``: the sorted neighbours of node ``i``."""

Weights = list[dict[int, float]]
"""``weights[i][j]``: the weight node ``i`` gives node ``j`` (``j == i`` included)."""


@dataclass(frozen=True, kw_only=True)
class TopologySpec:
    """Which graph to build.

    ``degree``: for ``regular`` the degree ``k`` of every node; for ``small_world`` the number
    of nearest neighbours each node has in the ring lattice before rewiring (even). ``p``: for
    ``erdos_renyi`` the edge probability; for ``small_world`` the rewiring probability.
    Parameters a kind does not use are still range-checked, so a typo never hides.
    """

    kind: str = "full"
    degree: int = 3
    p: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in TOPOLOGIES:
            raise ConfigError(
                f"unknown topology {self.kind!r}; known: {', '.join(TOPOLOGIES)}",
                field="topology.kind",
            )
        if isinstance(self.degree, bool) or not isinstance(self.degree, int) or self.degree < 1:
            raise ConfigError(f"must be an int >= 1, got {self.degree!r}", field="topology.degree")
        if self.kind == "small_world" and (self.degree < 2 or self.degree % 2):
            raise ConfigError(
                f"small_world needs an even number of lattice neighbours >= 2, got {self.degree}",
                field="topology.degree",
            )
        p = self.p
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"must be a number in [0, 1], got {p!r}", field="topology.p")


def build_topology(spec: TopologySpec, n: int, *, seed: int) -> Neighbours:
    """The neighbours of each of ``n`` nodes: sorted, symmetric, no self loops, connected.

    Deterministic for ``(spec, n, seed)``. A single node has no neighbours, whatever the kind.

    * ``full``: the complete graph;
    * ``ring``: the cycle ``0-1-...-(n-1)-0`` (for ``n == 2`` the single edge);
    * ``regular``: a random ``degree``-regular graph (``networkx.random_regular_graph``),
      redrawn with derived seeds until connected; ``n * degree`` must be even and
      ``degree < n``;
    * ``erdos_renyi``: G(n, p), redrawn with derived seeds until connected (needs ``p`` well
      above ``ln(n) / n``);
    * ``small_world``: ``networkx.connected_watts_strogatz_graph(n, degree, p)``; needs
      ``degree < n``;
    * ``two_cliques``: the "dumbbell" of the decentralized-robustness literature (ClippedGossip's
      experiments among them): complete graphs on ``0..h-1`` and ``h..n-1`` (``h = n // 2``)
      joined by the single edge ``(h-1, h)``. Its one bridge makes mixing between the halves
      slow (a small spectral gap), the hard case for robust gossip.

    Raises :class:`ConfigError` (naming ``task.nodes``, ``topology.degree`` or ``topology.p``)
    when the parameters cannot give a connected graph of that kind.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"must be an int >= 1, got {n!r}", field="task.nodes")
    if n == 1:
        return ((),)
    kind = spec.kind
    if kind == "full":
        return tuple(tuple(j for j in range(n) if j != i) for i in range(n))
    if kind == "ring":
        return tuple(tuple(sorted({(i - 1) % n, (i + 1) % n})) for i in range(n))
    if kind == "regular":
        return _regular(spec.degree, n, seed)
    if kind == "erdos_renyi":
        return _erdos_renyi(spec.p, n, seed)
    if kind == "small_world":
        return _small_world(spec.degree, spec.p, n, seed)
    if kind == "two_cliques":
        return _two_cliques(n)
    raise ConfigError(f"unknown topology {kind!r}", field="topology.kind")  # pragma: no cover


def _two_cliques(n: int) -> Neighbours:
    h = n // 2
    out: list[tuple[int, ...]] = []
    for i in range(n):
        clique = range(h) if i < h else range(h, n)
        row = {j for j in clique if j != i}
        if i == h - 1:
            row.add(h)
        elif i == h:
            row.add(h - 1)
        out.append(tuple(sorted(row)))
    return tuple(out)


def _neighbours(graph: Any, n: int) -> Neighbours:
    return tuple(tuple(sorted(int(j) for j in graph.neighbors(i) if j != i)) for i in range(n))


def _attempt_seed(seed: int, kind: str, attempt: int) -> int:
    return seed if attempt == 0 else derive_seed(seed, "topology", kind, attempt)


def _regular(degree: int, n: int, seed: int) -> Neighbours:
    if degree >= n:
        raise ConfigError(
            f"a regular graph of {n} nodes needs degree < {n}, got {degree}",
            field="topology.degree",
        )
    if (n * degree) % 2:
        raise ConfigError(
            f"n * degree must be even for a regular graph, got {n} * {degree}",
            field="topology.degree",
        )
    if degree == 1 and n > 2:
        raise ConfigError(
            f"a 1-regular graph of {n} nodes is never connected; use degree >= 2",
            field="topology.degree",
        )
    import networkx as nx  # here: a node process on the full topology never loads it

    if degree == 2:
        # The connected 2-regular graphs are exactly the Hamiltonian cycles: draw one directly
        # (a seeded random ordering closed into a ring) instead of rejecting disconnected
        # unions of cycles, which get likelier as n grows.
        order = list(range(n))
        random.Random(seed).shuffle(order)
        graph = nx.cycle_graph(order)
        return _neighbours(graph, n)
    for attempt in range(MAX_ATTEMPTS):
        graph = nx.random_regular_graph(degree, n, seed=_attempt_seed(seed, "regular", attempt))
        if nx.is_connected(graph):
            return _neighbours(graph, n)
    raise ConfigError(  # pragma: no cover - degree >= 3 is connected with high probability
        f"no connected {degree}-regular graph on {n} nodes after {MAX_ATTEMPTS} attempts",
        field="topology.degree",
    )


def _erdos_renyi(p: float, n: int, seed: int) -> Neighbours:
    threshold = math.log(n) / n
    hint = f"use a larger p (connectivity needs p well above ln(n)/n = {threshold:.3g})"
    if p == 0.0:
        raise ConfigError(f"p = 0 gives no edges; {hint}", field="topology.p")
    import networkx as nx

    for attempt in range(MAX_ATTEMPTS):
        graph = nx.gnp_random_graph(n, p, seed=_attempt_seed(seed, "erdos_renyi", attempt))
        if nx.is_connected(graph):
            return _neighbours(graph, n)
    raise ConfigError(
        f"no connected G({n}, {p}) after {MAX_ATTEMPTS} attempts; {hint}", field="topology.p"
    )


def _small_world(degree: int, p: float, n: int, seed: int) -> Neighbours:
    if degree >= n:
        raise ConfigError(
            f"a small-world graph of {n} nodes needs degree < {n}, got {degree}",
            field="topology.degree",
        )
    import networkx as nx

    try:
        graph = nx.connected_watts_strogatz_graph(n, degree, p, tries=100, seed=seed)
    except nx.NetworkXError as exc:
        raise ConfigError(
            f"no connected small-world graph for n={n}, degree={degree}, p={p}: {exc}",
            field="topology.p",
        ) from exc
    return _neighbours(graph, n)


def _check_neighbours(neighbours: Sequence[Sequence[int]]) -> None:
    n = len(neighbours)
    sets = [set(row) for row in neighbours]
    for i, row in enumerate(neighbours):
        if len(sets[i]) != len(row):
            raise ConfigError(f"node {i} lists a neighbour twice", field="topology")
        for j in row:
            if not 0 <= j < n:
                raise ConfigError(
                    f"node {i} has neighbour {j} outside 0..{n - 1}", field="topology"
                )
            if j == i:
                raise ConfigError(f"node {i} is its own neighbour", field="topology")
            if i not in sets[j]:
                raise ConfigError(f"edge {i}-{j} is not symmetric", field="topology")


def metropolis_hastings_weights(neighbours: Sequence[Sequence[int]]) -> Weights:
    """Metropolis-Hastings mixing weights: symmetric and doubly stochastic.

    ``W[i][j] = 1 / (1 + max(deg_i, deg_j))`` for each neighbour ``j``, and
    ``W[i][i] = 1 - sum_j W[i][j]`` (always > 0). Each node needs only its neighbours'
    degrees, and repeated averaging with ``W`` converges to the exact mean on any connected
    graph, however irregular.
    """
    _check_neighbours(neighbours)
    deg = [len(row) for row in neighbours]
    weights: Weights = []
    for i, row in enumerate(neighbours):
        w = {j: 1.0 / (1 + max(deg[i], deg[j])) for j in row}
        w[i] = 1.0 - math.fsum(w.values())
        weights.append(w)
    return weights


def uniform_weights(neighbours: Sequence[Sequence[int]]) -> Weights:
    """Equal weights: ``W[i][j] = W[i][i] = 1 / (deg_i + 1)``.

    Row stochastic, but symmetric (and doubly stochastic) only on regular graphs: elsewhere
    repeated averaging converges to a degree-weighted mean, not the plain one.
    """
    _check_neighbours(neighbours)
    weights: Weights = []
    for i, row in enumerate(neighbours):
        share = 1.0 / (len(row) + 1)
        w = dict.fromkeys(row, share)
        w[i] = share
        weights.append(w)
    return weights


def weight_matrix(weights: Sequence[dict[int, float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The dense ``n x n`` matrix of a weight list."""
    n = len(weights)
    matrix = np.zeros((n, n), dtype=np.float64)
    for i, row in enumerate(weights):
        for j, w in row.items():
            matrix[i, j] = w
    return matrix


def spectral_gap(weights: Sequence[dict[int, float]]) -> float:
    """``1 - |lambda_2|``: one minus the second largest eigenvalue modulus of ``W``.

    The distance to consensus shrinks by about ``|lambda_2|`` per averaging step, so a larger
    gap means faster mixing: 1 for the complete graph with Metropolis-Hastings weights (one
    step), about ``(2 pi / n)**2 / 3`` for a ring (``n/2`` hops to cross it), in between for
    random regular and small-world graphs. A disconnected graph has gap 0. One node: 1.
    """
    matrix = weight_matrix(weights)
    n = matrix.shape[0]
    if n <= 1:
        return 1.0
    if np.allclose(matrix, matrix.T):
        moduli = np.abs(np.linalg.eigvalsh(matrix))
    else:
        moduli = np.abs(np.linalg.eigvals(matrix))
    moduli = np.sort(moduli)[::-1]
    return float(max(0.0, 1.0 - moduli[1]))
