"""What a published update leaks, and what fedledger's privacy leaves of it.

    python -m benchmarks.leakage [--config examples/digits.toml] [--samples 4]
                                 [--epsilon 8] [--out runs/leakage]

**Gradient inversion.** The attacker sees a node's update and the round's base model (every
member does) and the task's learning rate (it is in the task), so it knows the gradient the
node's SGD steps summed: ``(base - update) / lr``. It guesses the label from the last layer's
bias gradient (iDLG: the only negative entry for one sample) and optimizes a dummy input, from
uniform noise, until its gradient matches, two ways: DLG (L2 distance, L-BFGS; Zhu et al.
2019) and inverting gradients (cosine distance, Adam; Geiping et al. 2020); each reported. The
victim's updates are made by fedledger's own trainer and privacy code:

* ``single``: one SGD step on one image (batch size 1): the textbook leak;
* ``shipped``: what a node of the task publishes in round 1: one epoch of mini-batches over its
  whole data, then ``[privacy]`` with the target epsilon (clip, calibrated noise);
* ``single_dp``: the single-image update through the same privacy mechanism;
* ``epoch``: the round-1 update without ``[privacy]`` (several local steps alone);
* ``masked``: the single-image update as secure aggregation publishes it (masked for a round of
  four members, ``fedledger.privacy.secagg_round``), read by the attacker as a model.

Each reconstruction is scored by PSNR against the true image (pixels scaled to [0, 1]), beside
the PSNR of uniform random images against the same targets (chance). A PNG grid shows truths
and reconstructions.

**Membership inference** (loss threshold; Yeom et al. 2018). The target is a site's model
trained on its own data for as many epochs as the task's rounds give it, released plainly or
through the privacy mechanism (one release); members are the site's training images,
non-members the test images of the same classes. Reported: the true-positive rate at a 1 %
false-positive rate, and the ROC AUC.

Written to ``--out``: leakage.json, leakage.png and results.md. Nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch.nn import functional

from fedledger.config import PrivacyConfig, TaskConfig, load_config
from fedledger.data import Dataset
from fedledger.learning import Params
from fedledger.learning.models import build_model
from fedledger.learning.torch_trainer import TorchTrainer
from fedledger.privacy import GaussianStream, noise_key, plan, privatize
from fedledger.seeds import derive_seed
from fedledger.task import prepare_task

ROOT = Path(__file__).resolve().parents[1]
PIXEL_MAX = 16.0
"""scikit-learn's digits: pixel intensities 0..16."""
MASK_SCOPE = "31337:0x000000000000000000000000000000000000beef"
SECRET = bytes(range(32))
"""The victim node's noise secret (any 32 bytes: the attacker never uses it)."""


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images with pixels in [0, PIXEL_MAX]."""
    mse = float(np.mean(((a - b) / PIXEL_MAX) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def chance_psnr(targets: Sequence[np.ndarray], draws: int = 200) -> float:
    """Mean PSNR of uniform random images against ``targets``."""
    gen = np.random.default_rng(0)  # a baseline, not a secret
    return float(np.mean([psnr(gen.uniform(0, PIXEL_MAX, t.shape), t)
                          for t in targets for _ in range(draws // len(targets))]))  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Victim:
    """The task, its first node's data, a trainer for it and the initial model."""

    task: TaskConfig
    node: Any
    test: Dataset
    trainer: TorchTrainer
    base: Params

    @classmethod
    def of(cls, task: TaskConfig) -> Victim:
        prepared = prepare_task(task)
        node = prepared.data.nodes[0]
        trainer = TorchTrainer.for_dataset(task.model, node.train)
        return cls(task=task, node=node, test=prepared.data.test, trainer=trainer,
                   base=trainer.init_params(derive_seed(task.seed, "init")))  # fmt: skip

    def module(self, params: Params) -> torch.nn.Module:
        """The task's model holding ``params``."""
        data = self.node.train
        torch.manual_seed(0)
        model = build_model(self.task.model, feature_shape=data.feature_shape,
                            num_classes=data.num_classes,
                            image_shape=data.image_shape)  # fmt: skip
        with torch.no_grad():
            for t, p in zip(model.state_dict().values(), params, strict=True):
                t.copy_(torch.from_numpy(np.asarray(p, dtype=np.float32)))
        return model


class Inverter:
    """Gradient inversion against the task's model at a given base."""

    def __init__(self, victim: Victim) -> None:
        data, base = victim.node.train, victim.base
        self.model = victim.module(base)
        self.params = list(self.model.parameters())
        self.base = base
        self.features = int(np.prod(data.feature_shape))

    def observed_gradient(self, update: Params, lr: float) -> list[torch.Tensor]:
        return [torch.from_numpy((np.asarray(b, np.float64) - np.asarray(u, np.float64)) / lr)
                .float() for b, u in zip(self.base, update, strict=True)]  # fmt: skip

    def _grads(self, x: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = functional.cross_entropy(self.model(x), label)
        return torch.autograd.grad(loss, self.params, create_graph=True)

    def invert(self, observed: list[torch.Tensor], *, method: str, seed: int) -> np.ndarray:
        """The input whose gradient best matches ``observed`` (``method``: dlg or cosine)."""
        label = torch.tensor([int(torch.argmin(observed[-1]))])  # iDLG
        gen = torch.Generator().manual_seed(seed)
        x = (torch.rand((1, self.features), generator=gen) * PIXEL_MAX).requires_grad_(True)
        if method == "dlg":
            opt: torch.optim.Optimizer = torch.optim.LBFGS([x], lr=0.5, max_iter=20,
                                                           history_size=50)  # fmt: skip
            rounds = 25
        else:
            opt = torch.optim.Adam([x], lr=0.1)
            rounds = 600

        def distance() -> torch.Tensor:
            grads = self._grads(x, label)
            pairs = list(zip(grads, observed, strict=True))
            if method == "dlg":
                return torch.stack([((g - o) ** 2).sum() for g, o in pairs]).sum()
            dot = torch.stack([(g * o).sum() for g, o in pairs]).sum()
            gn = torch.stack([(g**2).sum() for g, _ in pairs]).sum().sqrt()
            on = torch.stack([(o**2).sum() for _, o in pairs]).sum().sqrt()
            return 1 - dot / (gn * on + 1e-12)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            d = distance()
            d.backward()  # type: ignore[no-untyped-call]
            return d

        for _ in range(rounds):
            opt.step(closure)  # type: ignore[arg-type]
            with torch.no_grad():
                x.clamp_(0, PIXEL_MAX)
        out: np.ndarray = x.detach().numpy()[0].astype(np.float64)
        return out


def _one(data: Dataset, i: int) -> Dataset:
    return replace(data, name=f"{data.name}[{i}]", x=data.x[i : i + 1], y=data.y[i : i + 1])


class Masker:
    """A secure-aggregation round of four members (the victim and three others): what the
    victim publishes, as the attacker decodes it into parameters (the masked ring values as
    signed fixed point)."""

    def __init__(self, rounds: int) -> None:
        from fedledger.privacy.secagg_keys import channel_private, make_key_blob, public_bytes

        self.keys = {f"0x{i:040x}": bytes([i + 1]) * 32 for i in range(4)}
        channels = {a: public_bytes(channel_private(k, MASK_SCOPE)) for a, k in self.keys.items()}
        self.blobs = {a: make_key_blob(k, scope=MASK_SCOPE, member=a, first_round=1,
                                       last_round=rounds, recipients=channels)
                      for a, k in self.keys.items()}  # fmt: skip
        self.victim = min(self.keys)

    def seen(self, update: Params, *, rnd: int) -> Params:
        from fedledger.aggregation import fixedpoint as fx
        from fedledger.aggregation.validation import spec_of, unflatten
        from fedledger.privacy.secagg import decode_sum
        from fedledger.privacy.secagg_round import mask_update

        peers = {a: b.keys_of(rnd).mask_key for a, b in self.blobs.items()}
        masked = mask_update(self.keys[self.victim], scope=MASK_SCOPE, rnd=rnd, me=self.victim,
                             params=update, weight=1, peers=peers)  # fmt: skip
        return unflatten(fx.dequantize(decode_sum(masked), np.float64), spec_of(update))


def inversion(victim: Victim, *, samples: int, epsilon: float,
              echo: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    task, node, trainer, base = victim.task, victim.node, victim.trainer, victim.base
    privacy = plan(PrivacyConfig(clip=0.5, epsilon=epsilon), task.rounds)
    lr = task.train.lr
    single = replace(task.train, batch_size=1, epochs=1)
    attack = Inverter(victim)

    def released(params: Params, rnd: int) -> Params:
        key = noise_key(SECRET, task=task.name, rnd=rnd, base="init")
        return privatize(base, params, clip=privacy.clip,
                         noise_multiplier=privacy.noise_multiplier,
                         noise=GaussianStream(key)).params  # fmt: skip

    epoch = trainer.fit(base, node.train, task.train, seed=1).params
    shipped = released(epoch, 0)
    picks = list(range(samples))
    truths = [node.train.x[i].astype(np.float64) for i in picks]
    results: dict[str, dict[str, list[float]]] = {}
    images: dict[str, list[np.ndarray]] = {}
    masker = Masker(rounds=samples)
    for scenario in ("single", "single_dp", "epoch", "shipped", "masked"):
        results[scenario] = {"dlg": [], "cosine": []}
        for k, i in enumerate(picks):
            if scenario in ("epoch", "shipped"):  # one update of the whole data, every target
                update = epoch if scenario == "epoch" else shipped
            else:
                update = trainer.fit(base, _one(node.train, i), single, seed=0).params
                if scenario == "single_dp":
                    update = released(update, 1 + k)
                elif scenario == "masked":
                    update = masker.seen(update, rnd=1 + k)
            observed = attack.observed_gradient(update, lr)
            for method in ("dlg", "cosine"):
                guess = attack.invert(observed, method=method, seed=k)
                if not np.all(np.isfinite(guess)):  # the optimizer diverged: a blank guess
                    guess = np.zeros_like(truths[k])
                results[scenario][method].append(psnr(guess, truths[k]))
                if method == "dlg":
                    images.setdefault(scenario, []).append(guess)
        echo(f"inversion {scenario:9}: PSNR dB, DLG "
             f"{np.mean(results[scenario]['dlg']):.1f}, cosine "
             f"{np.mean(results[scenario]['cosine']):.1f}")  # fmt: skip
    chance = chance_psnr(truths)
    echo(f"inversion chance   : PSNR {chance:.1f} dB (uniform random images)")
    return {"psnr": results, "chance_psnr": chance, "truths": truths, "images": images,
            "noise_multiplier": privacy.noise_multiplier, "clip": privacy.clip}  # fmt: skip


def membership(victim: Victim, *, epsilon: float,
               echo: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    task, node, test, trainer, base = (victim.task, victim.node, victim.test, victim.trainer,
                                       victim.base)  # fmt: skip
    local = trainer.fit(base, node.train, replace(task.train, epochs=task.rounds), seed=2).params
    privacy = plan(PrivacyConfig(clip=0.5, epsilon=epsilon), task.rounds)
    dp = privatize(base, local, clip=privacy.clip, noise_multiplier=privacy.noise_multiplier,
                   noise=GaussianStream(noise_key(SECRET, task=task.name, rnd=1,
                                                  base="init"))).params  # fmt: skip
    classes = np.unique(node.train.y)
    keep = np.isin(test.y, classes)
    outside = replace(test, name="non-members", x=test.x[keep], y=test.y[keep])
    out: dict[str, Any] = {"members": len(node.train), "non_members": int(keep.sum())}
    for name, params in (("plain", local), ("dp", dp)):
        model = victim.module(params)
        scores = [-_losses(model, d) for d in (node.train, outside)]
        labels = np.concatenate([np.ones(len(scores[0])), np.zeros(len(scores[1]))])
        score = np.concatenate(scores)
        fpr, tpr, _ = roc_curve(labels, score)
        at = float(np.max(tpr[fpr <= 0.01])) if np.any(fpr <= 0.01) else 0.0
        out[name] = {"tpr_at_1pct_fpr": at, "auc": float(roc_auc_score(labels, score)),
                     "accuracy": trainer.evaluate(params, test)["accuracy"]}  # fmt: skip
        echo(f"membership {name:5}: TPR at 1% FPR {at:.3f}, AUC {out[name]['auc']:.3f} "
             f"(model accuracy {out[name]['accuracy']:.3f})")  # fmt: skip
    return out


def _losses(model: torch.nn.Module, data: Dataset) -> np.ndarray:
    """Each example's cross-entropy loss under ``model``."""
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(data.x)))
        loss = functional.cross_entropy(logits, torch.from_numpy(data.y), reduction="none")
    out: np.ndarray = loss.numpy().astype(np.float64)
    return out


def write_grid(path: Path, truths: Sequence[np.ndarray],
               images: dict[str, list[np.ndarray]]) -> None:  # fmt: skip
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [("truth", list(truths)), *images.items()]
    fig, axes = plt.subplots(len(rows), len(truths), figsize=(1.4 * len(truths), 1.5 * len(rows)),
                             squeeze=False)  # fmt: skip
    for r, (name, row) in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(np.asarray(img).reshape(8, 8), cmap="gray_r", vmin=0, vmax=PIXEL_MAX)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(*, config: Path, samples: int, epsilon: float, out: Path,
        echo: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    task = load_config(config)
    if task.data.dataset != "digits":
        raise SystemExit("error: the leakage benchmark needs an image task (dataset = digits)")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    victim = Victim.of(task)
    inv = inversion(victim, samples=samples, epsilon=epsilon, echo=echo)
    mia = membership(victim, epsilon=epsilon, echo=echo)
    write_grid(out / "leakage.png", inv["truths"], inv["images"])
    mean = {s: {m: float(np.mean(v)) for m, v in r.items()} for s, r in inv["psnr"].items()}
    result = {"task": task.name, "epsilon": epsilon, "clip": inv["clip"],
              "noise_multiplier": inv["noise_multiplier"], "samples": samples,
              "psnr": inv["psnr"], "psnr_mean": mean, "chance_psnr": inv["chance_psnr"],
              "membership": mia}  # fmt: skip
    (out / "leakage.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    return result


def markdown(r: dict[str, Any]) -> str:
    lines = ["| update the attacker sees | DLG PSNR (dB) | inverting gradients PSNR (dB) |",
             "| --- | ---: | ---: |"]  # fmt: skip
    names = {"single": "one SGD step on one image, no DP",
             "single_dp": f"the same, through DP (epsilon {r['epsilon']:g})",
             "epoch": "a node's round-1 update (one epoch of mini-batches over its data), no DP",
             "shipped": f"a node's round-1 update (one epoch of its data) with DP "
                        f"(epsilon {r['epsilon']:g})",
             "masked": "one SGD step on one image, masked by secure aggregation "
                       "(4 members)"}  # fmt: skip
    for s, m in r["psnr_mean"].items():
        lines.append(f"| {names[s]} | {m['dlg']:.1f} | {m['cosine']:.1f} |")
    lines.append(f"| uniform random images (chance) | {r['chance_psnr']:.1f} | "
                 f"{r['chance_psnr']:.1f} |")  # fmt: skip
    lines += ["", "| released model | TPR at 1 % FPR | AUC | test accuracy |",
              "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for name in ("plain", "dp"):
        m = r["membership"][name]
        lines.append(f"| {name} | {m['tpr_at_1pct_fpr']:.3f} | {m['auc']:.3f} | "
                     f"{m['accuracy']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "digits.toml")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("runs/leakage"))
    args = parser.parse_args(argv)
    if args.samples < 1 or not args.epsilon > 0:
        parser.error("--samples must be >= 1 and --epsilon > 0")
    run(config=args.config, samples=args.samples, epsilon=args.epsilon, out=args.out)
    print(f"written: {args.out / 'leakage.json'}, {args.out / 'leakage.png'}, "
          f"{args.out / 'results.md'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
