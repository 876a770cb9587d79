"""Start-up: the whole-run wall time and per-process memory of ``fedledger run`` with one gRPC
process per node, against Flower's simulation of the same task (issue 16, "Start-up").

    python -m benchmarks.startup [--config examples/digits.toml] [--modes fork,exec]
                                 [--repeat 2] [--no-flower] [--out runs/startup]

Measured per run, each as a separate command timed from its launch to its exit:

* ``fedledger run --chain none`` (consensus mode, one OS process per node over gRPC), its node
  processes started as ``FEDLEDGER_NODE_START`` says: ``fork`` (the default: forked from a fork
  server that imported torch and fedledger once, fedledger.run.spawn) or ``exec`` (each a fresh
  ``python -m fedledger node``, as before). Its phases come from the nodes' rounds.jsonl: start-up
  (launch to the last node's end of round 1), rounds, and exit (the last node's last round to
  the command's exit).
* Flower (``flwr[simulation]``, Ray) running FedAvg on the same partition: fedledger's
  partitioner exports every node's split, the initial parameters and the shuffling seeds
  (:func:`export_task`); benchmarks/flower/app.py trains the same MLP with the same settings in
  Flower's simulation engine, in a separate venv (.venv-flower, from the pinned
  benchmarks/flower/requirements.txt; built on first use, or by ``make bench-flower-env``).
  Flower is the baseline of the ratios. Without it (``--no-flower``, or it cannot be
  installed) the ratios are against the brief's quoted figure, labelled so.

Memory: every process of the command's tree is sampled from /proc/PID/smaps_rollup four times a
second; per process the peak RSS, PSS (shared pages divided among their sharers) and USS (its
private pages: what its exit would free), and for the whole tree the peak of the summed PSS.

Written to ``--out``: startup.json and results.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "digits.toml"
FLOWER_VENV = ROOT / ".venv-flower"
FLOWER_REQUIREMENTS = ROOT / "benchmarks" / "flower" / "requirements.txt"
FLOWER_APP = ROOT / "benchmarks" / "flower" / "app.py"
WHEELS = Path("/opt/wheels")

QUOTED_FLOWER_WALL_S = (24.0, 31.0)
QUOTED_FLOWER_MB = 2048.0
"""The brief's figures for Flower 1.42's simulation of examples/digits.toml (30 rounds, 10
clients): 24-31 s and about 2 GB. Used, labelled as quoted, only when Flower is not run here."""

TARGET_RATIO = 1.5
"""The issue's goal: fedledger's whole run at most 1.5x Flower's."""


# -- memory of a process tree ----------------------------------------------------------------


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """RSS, PSS and USS of ``pid`` in kB (from /proc/PID/smaps_rollup); None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0])
    if "Rss" not in fields:
        return None
    return {
        "rss": fields["Rss"],
        "pss": fields.get("Pss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


def process_table() -> dict[int, tuple[int, str]]:
    """Every process's parent and command line, by pid."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        table[int(entry.name)] = (ppid, cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return table


def descendants(root: int, table: Mapping[int, tuple[int, str]]) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table or pid == root:
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def role_of(pid: int, root: int, table: Mapping[int, tuple[int, str]]) -> str:
    """launcher, fork-server, resource-tracker, node (a fedledger node process) or other."""
    ppid, cmd = table.get(pid, (0, ""))
    if pid == root:
        return "launcher"
    if "multiprocessing.forkserver" in cmd:  # the fork server, or a fork of it: a node
        forked = "multiprocessing.forkserver" in table.get(ppid, (0, ""))[1]
        return "node" if forked else "fork-server"
    if "resource_tracker" in cmd:
        return "resource-tracker"
    return "node" if "fedledger node" in cmd else "other"


@dataclass
class TreeMemory:
    """Peaks of a process tree's memory, sampled by :meth:`sample`."""

    root: int
    peaks: dict[int, dict[str, int]] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    peak_total_pss: int = 0
    peak_total_rss: int = 0
    samples: int = 0

    def sample(self) -> None:
        table = process_table()
        total_pss = total_rss = 0
        for pid in descendants(self.root, table):
            mem = smaps_rollup(pid)
            if mem is None:
                continue
            self.roles.setdefault(pid, role_of(pid, self.root, table))
            peak = self.peaks.setdefault(pid, {"rss": 0, "pss": 0, "uss": 0})
            for k, v in mem.items():
                peak[k] = max(peak[k], v)
            total_pss += mem["pss"]
            total_rss += mem["rss"]
        self.peak_total_pss = max(self.peak_total_pss, total_pss)
        self.peak_total_rss = max(self.peak_total_rss, total_rss)
        self.samples += 1

    def summary(self) -> dict[str, Any]:
        """Per role: processes, and the mean and max of their peaks (MB); the tree's peaks."""
        by_role: dict[str, dict[str, Any]] = {}
        for role in sorted(set(self.roles.values())):
            peaks = [self.peaks[p] for p, r in self.roles.items() if r == role]
            entry: dict[str, Any] = {"processes": len(peaks)}
            for k in ("rss", "pss", "uss"):
                values = [p[k] / 1024 for p in peaks]
                entry[f"{k}_mb_mean"] = statistics.fmean(values)
                entry[f"{k}_mb_max"] = max(values)
            by_role[role] = entry
        return {"roles": by_role, "processes": len(self.peaks), "samples": self.samples,
                "total_pss_mb": self.peak_total_pss / 1024,
                "total_rss_mb": self.peak_total_rss / 1024}  # fmt: skip


def run_sampled(
    cmd: Sequence[str], *, env: Mapping[str, str], log: Path, interval: float = 0.25
) -> tuple[int, float, float, dict[str, Any]]:
    """Run ``cmd`` to its end (output to ``log``), sampling its tree's memory: its exit
    status, its wall time, its launch (epoch seconds) and :meth:`TreeMemory.summary`."""
    with log.open("wb") as out:
        launched = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=dict(env),
                                cwd=ROOT)  # fmt: skip
        memory = TreeMemory(proc.pid)
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                memory.sample()
                done.wait(interval)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        done.set()
        watcher.join()
    return code, wall, launched, memory.summary()


# -- fedledger -------------------------------------------------------------------------------


def phases(ends: Sequence[float], launched: float, wall: float) -> dict[str, float]:
    """Start-up (launch to the end of round 1), rounds (to the end of the last round) and
    exit (to the command's exit), in seconds, from the rounds' ends (epoch seconds)."""
    if not ends:
        return {"startup_s": math.nan, "rounds_s": math.nan, "exit_s": math.nan}
    first, last = ends[0] - launched, ends[-1] - launched
    return {"startup_s": first, "rounds_s": last - first, "exit_s": wall - last}


def round_ends(out: Path) -> list[float]:
    """When each round ended on its last node (epoch seconds), from the nodes' rounds.jsonl."""
    ends: dict[int, float] = {}
    for path in sorted(out.glob("node-*/state/rounds.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                ends[record["round"]] = max(ends.get(record["round"], 0.0), record["t"])
    return [ends[r] for r in sorted(ends)]


def measure_fedledger(config: Path, out: Path, *, start: str, rounds: int | None = None,
                      nodes: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One ``fedledger run --chain none`` (gRPC, one process per node), nodes started ``start``
    (fork or exec); ``rounds`` and ``nodes``: instead of the task's."""
    env = {**os.environ, "FEDLEDGER_NODE_START": start}
    cmd = [sys.executable, "-m", "fedledger", "run", "--config", str(config), "--chain", "none",
           "--transport", "grpc", "--out", str(out)]  # fmt: skip
    for flag, value in (("--rounds", rounds), ("--nodes", nodes)):
        if value is not None:
            cmd += [flag, str(value)]
    out.mkdir(parents=True, exist_ok=True)
    code, wall, launched, memory = run_sampled(cmd, env=env, log=out.parent / f"{out.name}.log")
    if code != 0:
        raise SystemExit(f"fedledger run ({start}) failed with status {code}: see {out}.log")
    final = json.loads((out / "report.json").read_text())["final"]
    return {"system": f"fedledger ({start})", "start": start, "wall_s": wall,
            "acc": final["acc_mean"], "rounds": final["rounds_completed"],
            "phases": phases(round_ends(out), launched, wall), "memory": memory}  # fmt: skip


# -- Flower ----------------------------------------------------------------------------------


def export_task(config: Path, path: Path, *, rounds: int | None = None, nodes: int | None = None
                ) -> dict[str, Any]:  # fmt: skip
    """The task's partition from fedledger's own partitioner, for the Flower app: each node's
    training split (``x{i}``, ``y{i}``), the test set, the initial parameters (``init{k}``),
    the training settings and each round's shuffling seed of each node (``fit_seeds``, as
    fedledger's FedAvg loop derives them). Returns the settings."""
    import numpy as np

    from fedledger.config import load_config
    from fedledger.seeds import derive_seed
    from fedledger.task import prepare_task

    cfg = load_config(config)
    cfg = replace(cfg, rounds=rounds or cfg.rounds, nodes=nodes or cfg.nodes)
    task = prepare_task(cfg)
    if cfg.model.name != "mlp" or cfg.train.optimizer != "sgd" or cfg.train.momentum:
        raise SystemExit("the Flower app implements the MLP with plain SGD only")
    members = task.data.nodes
    arrays: dict[str, Any] = {}
    for node in members:
        arrays[f"x{node.node}"] = node.train.x
        arrays[f"y{node.node}"] = node.train.y
    init = task.trainer.init_params(derive_seed(cfg.seed, "init"))
    for k, p in enumerate(init):
        arrays[f"init{k}"] = p
    seeds = [[derive_seed(cfg.seed, "fit", r, n.node) for n in members]
             for r in range(1, cfg.rounds + 1)]  # fmt: skip
    settings = {"nodes": len(members), "rounds": cfg.rounds, "lr": cfg.train.lr,
                "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs,
                "hidden": list(cfg.model.hidden), "num_classes": task.data.num_classes,
                "feature_shape": list(task.data.feature_shape), "n_params": len(init)}  # fmt: skip
    arrays.update({k: np.array(v) for k, v in settings.items()})
    arrays.update(test_x=task.data.test.x, test_y=task.data.test.y,
                  fit_seeds=np.array(seeds, dtype=np.int64))  # fmt: skip
    np.savez(path, **arrays)
    return settings


def flower_install_command(venv: Path) -> list[str]:
    """pip's command that installs the pinned Flower environment into ``venv``."""
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check", "-r", str(FLOWER_REQUIREMENTS)]  # fmt: skip
    if WHEELS.is_dir():
        cmd += ["--find-links", str(WHEELS)]
    return cmd


def ensure_flower(venv: Path = FLOWER_VENV) -> tuple[Path | None, str]:
    """The Flower venv's python (built from the pinned requirements if it lacks flwr), or None
    and why it cannot be had."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import flwr, ray, torch; print(flwr.__version__)"]
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return python, "installed"
    if not WHEELS.is_dir():
        return None, (f"{WHEELS} (the CPU build of torch) is missing, and pip would pull a CUDA "
                      "torch from the index")  # fmt: skip
    print(f"building {venv} from {FLOWER_REQUIREMENTS} (once)", flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)], flower_install_command(venv), check]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"`{' '.join(step[:4])} ...` failed: {tail}"
    return python, "built"


def measure_flower(python: Path, data: Path, out: Path, *, cpus_per_client: float = 1.0
                   ) -> dict[str, Any]:  # fmt: skip
    """One run of benchmarks/flower/app.py."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(python), str(FLOWER_APP), "--data", str(data), "--out", str(out / "flower.json"),
           "--cpus-per-client", str(cpus_per_client)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    code, wall, launched, memory = run_sampled(cmd, env=env, log=out / "flower.log")
    if code != 0:
        raise SystemExit(f"the Flower run failed with status {code}: see {out / 'flower.log'}")
    result = json.loads((out / "flower.json").read_text())
    ends = [r["t"] for r in result["rounds"]]
    return {"system": f"Flower {result['flwr']} simulation", "wall_s": wall,
            "acc": result["final_acc"], "rounds": result["rounds_completed"],
            "phases": phases(ends, launched, wall), "memory": memory,
            "cpus_per_client": cpus_per_client}  # fmt: skip


# -- report ----------------------------------------------------------------------------------


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per system: its runs' wall times (all, and the median), memory, accuracy."""
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        row = rows.setdefault(run["system"], {"system": run["system"], "walls": [], "runs": []})
        row["walls"].append(run["wall_s"])
        row["runs"].append(run)
    for row in rows.values():
        row["wall_s"] = statistics.median(row["walls"])
        last = row["runs"][-1]
        row["acc"] = last["acc"]
        row["phases"] = {k: statistics.median(r["phases"].get(k, math.nan) for r in row["runs"])
                         for k in ("startup_s", "rounds_s", "exit_s")}  # fmt: skip
        row["memory"] = max((r["memory"] for r in row["runs"]),
                            key=lambda m: m["total_pss_mb"])  # fmt: skip
    return list(rows.values())


def _node_memory(memory: Mapping[str, Any]) -> dict[str, Any] | None:
    """The per-process memory to show: a fedledger node's, or else Flower's largest process."""
    roles = memory["roles"]
    return roles.get("node") or roles.get("other")  # type: ignore[no-any-return]


def table(rows: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any]) -> list[str]:
    """Markdown; ratios of wall time and of the tree's total PSS against ``baseline``."""
    base_wall = baseline["wall_s"]
    base_pss = baseline["total_pss_mb"]
    label = baseline["label"]
    lines = [
        f"| system | wall s (runs) | x {label} | start-up s | rounds s | exit s | processes | "
        "RSS / PSS / USS MB per process | total PSS MB | x | accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        mem = row["memory"]
        per = _node_memory(mem)
        per_text = (
            "-"
            if per is None
            else " / ".join(f"{per[f'{k}_mb_mean']:.0f}" for k in ("rss", "pss", "uss"))
        )
        ph = row["phases"]
        walls = ", ".join(f"{w:.1f}" for w in row["walls"])
        lines.append(
            f"| {row['system']} | {row['wall_s']:.1f} ({walls}) | {row['wall_s'] / base_wall:.2f} "
            f"| {ph['startup_s']:.1f} | {ph['rounds_s']:.1f} | {ph['exit_s']:.1f} | "
            f"{mem['processes']} | {per_text} | {mem['total_pss_mb']:.0f} | "
            f"{mem['total_pss_mb'] / base_pss:.2f} | {row['acc']:.4f} |"
        )
    return lines


def baseline_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Flower's row measured in this run, or the brief's quoted figure (labelled so)."""
    for row in rows:
        if row["system"].startswith("Flower"):
            return {"label": "Flower", "wall_s": row["wall_s"],
                    "total_pss_mb": row["memory"]["total_pss_mb"], "measured": True}  # fmt: skip
    low, high = QUOTED_FLOWER_WALL_S
    return {"label": "Flower (quoted)", "wall_s": (low + high) / 2,
            "total_pss_mb": QUOTED_FLOWER_MB, "measured": False}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--modes", default="fork,exec",
                   help="how fedledger starts its node processes: fork, exec, or both")  # fmt: skip
    p.add_argument("--rounds", type=int, help="instead of the task's (a quick look)")
    p.add_argument("--nodes", type=int, help="instead of the task's")
    p.add_argument("--repeat", type=int, default=2, help="runs of each system, interleaved")
    p.add_argument("--no-flower", action="store_true", help="compare with the quoted figure")
    p.add_argument("--flower-cpus-per-client", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "startup")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"fork", "exec"}:
        raise SystemExit(f"--modes: fork and/or exec, got {args.modes!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    flower: Path | None = None
    why = "--no-flower"
    if not args.no_flower:
        flower, why = ensure_flower()
        if flower is None:
            print(f"Flower is not available ({why}): comparing with the brief's quoted figure")
    data = args.out / "task.npz"
    if flower is not None:
        export_task(args.config, data, rounds=args.rounds, nodes=args.nodes)
    jobs: list[tuple[str, Callable[[Path], dict[str, Any]]]] = []
    if flower is not None:
        cpus = args.flower_cpus_per_client
        jobs.append(("flower", functools.partial(measure_flower, flower, data,
                                                 cpus_per_client=cpus)))  # fmt: skip
    for mode in modes:
        jobs.append((mode, functools.partial(measure_fedledger, args.config, start=mode,
                                             rounds=args.rounds, nodes=args.nodes)))  # fmt: skip
    runs: list[dict[str, Any]] = []
    for i in range(1, args.repeat + 1):
        for name, job in jobs:
            result = job(args.out / f"{name}-{i}")  # the run's own directory
            result["load_before"] = os.getloadavg()[0]
            runs.append(result)
            print(f"{result['system']} run {i}: {result['wall_s']:.1f} s, total PSS "
                  f"{result['memory']['total_pss_mb']:.0f} MB, accuracy {result['acc']:.4f}",
                  flush=True)  # fmt: skip
    rows = summarize(runs)
    baseline = baseline_of(rows)
    lines = table(rows, baseline)
    print("\n".join(lines))
    if not baseline["measured"]:
        print(f"(Flower not run here: {why}; its figure is the brief's, quoted, not measured)")
    (args.out / "startup.json").write_text(json.dumps(
        {"baseline": baseline, "flower": why, "target_ratio": TARGET_RATIO, "runs": runs,
         "rows": [{k: v for k, v in r.items() if k != "runs"} for r in rows]},
        indent=2) + "\n")  # fmt: skip
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"written: {args.out / 'startup.json'}, results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
