"""Three hospitals' own records, for trying the deployment walk-through (docs/deploy.md).

    python examples/hospitals/make_sites.py --out hospitals

writes ``hospitals/site_a``, ``site_b`` and ``site_c``, each with

* ``data.csv``: the bundled Wisconsin breast-cancer data (569 patients) split three ways with
  different case mixes (70 %, 40 % and 15 % malignant) and sizes: raw (unscaled) measurements,
  one row per patient, the diagnosis as a word. A real hospital has its own file instead;
* ``task.toml``: a copy of the task every site agrees on (this folder's);
* ``node.toml``: the site's node configuration (this folder's ``site_X.toml``), whose
  ``task_address`` is to be set to the deployed task's.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

HERE = Path(__file__).resolve().parent
SITES = ("site_a", "site_b", "site_c")
MALIGNANT_SHARE = (0.7, 0.4, 0.15)
"""Each site's share of malignant cases: different label skews."""
SIZE_SHARE = (0.25, 0.35, 0.40)
"""Each site's share of the patients."""


def split(seed: int = 0) -> list[np.ndarray]:
    """Row indices of each site: the case mixes of MALIGNANT_SHARE, sizes near SIZE_SHARE."""
    y = load_breast_cancer().target  # 0 malignant, 1 benign
    rng = np.random.default_rng(seed)
    malignant = list(rng.permutation(np.flatnonzero(y == 0)))
    benign = list(rng.permutation(np.flatnonzero(y == 1)))
    sites = []
    for i, (share, size) in enumerate(zip(MALIGNANT_SHARE, SIZE_SHARE, strict=True)):
        n = round(size * len(y))
        if i == len(SITES) - 1:  # the last site takes whatever is left
            m, b = malignant, benign
        else:
            k = min(round(share * n), len(malignant))
            m, b = malignant[:k], benign[: n - k]
        malignant, benign = malignant[len(m) :], benign[len(b) :]
        sites.append(np.sort(np.array(m + b, dtype=np.int64)))
    return sites


def write_sites(out: Path, seed: int = 0) -> list[Path]:
    bunch = load_breast_cancer()
    names = [str(n) for n in bunch.feature_names]
    diagnosis = {0: "malignant", 1: "benign"}
    paths = []
    for site, rows in zip(SITES, split(seed), strict=True):
        folder = out / site
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "data.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["patient", *names, "diagnosis"])
            for r in rows:
                writer.writerow([f"P{r:04d}", *(repr(float(v)) for v in bunch.data[r]),
                                 diagnosis[int(bunch.target[r])]])  # fmt: skip
        shutil.copy(HERE / "task.toml", folder / "task.toml")
        shutil.copy(HERE / f"{site}.toml", folder / "node.toml")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("hospitals"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_sites(args.out, args.seed):
        with path.open(encoding="utf-8") as fh:
            rows = sum(1 for _ in fh) - 1
        print(f"{path}: {rows} patients")


if __name__ == "__main__":
    main()
