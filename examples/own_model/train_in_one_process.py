"""The library path: the three sites' own CSV files and model, all in this process.

python examples/own_model/setup_sites.py --out runs/own_model     # the sites' files
python examples/own_model/train_in_one_process.py --sites runs/own_model
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mymodel import build

import fedledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=Path, default=Path("runs/own_model"))
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    task = fedledger.load_config(Path(__file__).resolve().parent / "task.toml")
    if args.rounds is not None:
        from dataclasses import replace

        task = replace(task, rounds=args.rounds)
    data = [args.sites / site / "data.csv" for site in ("site_a", "site_b", "site_c")]
    report = fedledger.run_task(task, out=args.sites / "in_process", model=build, data=data,
                                label_column="diagnosis")  # fmt: skip
    final = report.final
    print(f"{final['rounds_completed']} rounds, models agree: {final['model_digests_agree']}, "
          f"validation accuracy {final['acc_mean']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
