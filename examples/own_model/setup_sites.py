"""Set up three sites on this machine, each with only its own data and key.

    python examples/own_model/setup_sites.py --out runs/own_model

writes runs/own_model/site_a, site_b and site_c, each with:

* ``data.csv``: its own patients (the bundled Wisconsin breast-cancer data split three ways
  with different case mixes), features standardized with a scaling the sites agreed on
  (here: the bundled data set's published means and deviations);
* ``node.key``: its own random key (mode 0600);
* ``mymodel.py``: the model code the sites agreed on (a copy of examples/own_model/mymodel.py);
* ``node.toml``: the node's configuration (its data, its model, its peers' addresses, and a
  rendezvous folder where the three nodes on this machine find each other's ports).

Then run one node per terminal (or ``&``)::

    .venv/bin/fedledger node --config runs/own_model/site_a/node.toml
    .venv/bin/fedledger node --config runs/own_model/site_b/node.toml
    .venv/bin/fedledger node --config runs/own_model/site_c/node.toml
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from fedledger.gossip.identity import Identity

HERE = Path(__file__).resolve().parent
SITES = ("site_a", "site_b", "site_c")
MALIGNANT_SHARE = (0.7, 0.4, 0.15)  # each site's case mix: different label skews


def split(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    bunch = load_breast_cancer()
    x = (bunch.data - bunch.data.mean(axis=0)) / bunch.data.std(axis=0)
    y = bunch.target  # 0 malignant, 1 benign
    rng = np.random.default_rng(seed)
    malignant = rng.permutation(np.flatnonzero(y == 0))
    benign = rng.permutation(np.flatnonzero(y == 1))
    m_parts = np.array_split(malignant, np.cumsum(_shares(len(malignant), MALIGNANT_SHARE))[:-1])
    b_parts = np.array_split(
        benign, np.cumsum(_shares(len(benign), tuple(1 - s for s in MALIGNANT_SHARE)))[:-1]
    )
    out = []
    for m, b in zip(m_parts, b_parts, strict=True):
        rows = np.sort(np.concatenate([m, b]))
        out.append((x[rows], y[rows]))
    return out


def _shares(n: int, weights: tuple[float, ...]) -> list[int]:
    w = np.asarray(weights) / sum(weights)
    counts = np.floor(w * n).astype(int)
    counts[0] += n - counts.sum()
    return [int(c) for c in counts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/own_model"))
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "task.toml", out / "task.toml")
    keys = [Identity.generate() for _ in SITES]
    names = [f"f{i}" for i in range(30)]
    for index, (site, (x, y)) in enumerate(zip(SITES, split(), strict=True)):
        where = out / site
        where.mkdir(exist_ok=True)
        with (where / "data.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([*names, "diagnosis"])
            for row, label in zip(x, y, strict=True):
                writer.writerow([f"{v:.6g}" for v in row] + [int(label)])
        keys[index].save(where / "node.key")
        shutil.copy(HERE / "mymodel.py", where / "mymodel.py")
        peers = "".join(
            f'\n[[peers]]\nindex = {j}\naddress = "{keys[j].address}"\nendpoint = ""\n'
            for j in range(len(SITES))
            if j != index
        )
        (where / "node.toml").write_text(
            f'task = "../task.toml"\nindex = {index}\nkey_file = "node.key"\n'
            'state_dir = "state"\nlisten = "127.0.0.1:0"\nrendezvous = "../endpoints"\n'
            'data = "data.csv"\nlabel_column = "diagnosis"\nmodel = "mymodel:build"\n'
            f"{peers}",
            encoding="utf-8",
        )
        print(f"{site}: {len(y)} patients ({int((y == 0).sum())} malignant), "
              f"address {keys[index].address}")  # fmt: skip
    print("\nnow run, one per terminal:\n" + "\n".join(
        f"  .venv/bin/fedledger node --config {out / s / 'node.toml'}" for s in SITES))  # fmt: skip


if __name__ == "__main__":
    main()
