"""A site's own data in a real deployment (a task whose ``[data]`` says ``dataset = "sites"``).

Nothing is shared: each node reads its own file whole. What must agree across sites is part of
the task (and so of its digest): the feature columns and their order (``features``), the label
column, and the class names (``classes``: class ``i`` is ``classes[i]``).

Standardization, when the task asks for it, uses the *pooled* statistics of every site, not
each site's own: before the first round each node sends the others its count, per-feature mean
and sum of squared deviations (:class:`SiteStats`), and every node combines the members' in the
same order (:func:`pool`) into the same mean and standard deviation. A site's statistics say
how its data is distributed (never a row); docs/deploy.md says so.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedledger.config.task import DataConfig
from fedledger.data.datasets import Dataset, read_csv_rows
from fedledger.errors import DataError

MAX_SITE_EXAMPLES = 2**40
"""The largest example count a site may claim (as the update messages allow)."""


def load_site(path: str | Path, spec: DataConfig, *, name: str | None = None) -> Dataset:
    """A site's file (CSV with a header, or NPZ with ``x`` and ``y``) as the task's ``spec``
    reads it: columns ``spec.features`` in that order, labels mapped to ``spec.classes``."""
    if not spec.is_sites or spec.classes is None:
        raise DataError("not a sites task: its [data] needs dataset = \"sites\", features (or "
                        "image_shape) and classes")  # fmt: skip
    p = Path(path)
    kind = p.suffix.lower()
    if spec.image_shape is not None:
        x, y = _read_images(p, spec)
        return Dataset(name=name or p.name, x=x, y=y, num_classes=len(spec.classes),
                       feature_shape=site_feature_shape(spec),
                       image_shape=tuple(spec.image_shape))  # fmt: skip
    if kind == ".csv":
        x, y = _read_csv(p, spec)
    elif kind == ".npz":
        x, y = _read_npz(p, spec)
    else:
        raise DataError(f"{p}: a site's data file must be .csv or .npz")
    if len(y) == 0:
        raise DataError(f"{p}: no rows")
    return Dataset(name=name or p.stem, x=x, y=y, num_classes=len(spec.classes),
                   feature_shape=site_feature_shape(spec))  # fmt: skip


def site_feature_shape(spec: DataConfig) -> tuple[int, ...]:
    """The shape of one example's features in a sites task: its named features, or an image's
    pixels flattened (the model reshapes them to ``image_shape``)."""
    if spec.image_shape is not None:
        return (math.prod(spec.image_shape),)
    return (len(spec.features or ()),)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _read_images(p: Path, spec: DataConfig) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """A folder with one subfolder per class (named as in ``spec.classes``), each holding
    image files; every image converted to the task's channels and checked for its size."""
    from PIL import Image, UnidentifiedImageError

    assert spec.image_shape is not None
    assert spec.classes is not None
    channels, height, width = spec.image_shape
    where = f"image folder {str(p)!r}"
    if not p.is_dir():
        raise DataError(f"{where}: not a folder (an image task reads one subfolder per class)")
    unknown = sorted(d.name for d in p.iterdir() if d.is_dir() and d.name not in spec.classes)
    if unknown:
        raise DataError(f"{where}: subfolder {unknown[0]!r} is not one of the task's classes "
                        f"({', '.join(spec.classes)})")  # fmt: skip
    xs: list[NDArray[np.float32]] = []
    ys: list[int] = []
    for label, name in enumerate(spec.classes):
        folder = p / name
        if not folder.is_dir():
            continue  # a site may lack a class
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as image:
                    pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise DataError(f"{file}: not a readable image: {exc}") from None
            if pixels.shape[:2] != (height, width):
                raise DataError(f"{file}: {pixels.shape[1]}x{pixels.shape[0]} pixels, the task's "
                                f"images are {width}x{height}")  # fmt: skip
            chw = pixels.reshape(height, width, channels).transpose(2, 0, 1)
            xs.append((chw.astype(np.float32) / 255.0).reshape(-1))
            ys.append(label)
    if not xs:
        raise DataError(f"{where}: no images in its class subfolders "
                        f"({', '.join(spec.classes)})")  # fmt: skip
    return np.ascontiguousarray(np.stack(xs)), np.array(ys, dtype=np.int64)


def _read_csv(p: Path, spec: DataConfig) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    if spec.features is None:
        raise DataError(f"{p}: the task names no features (a CSV site needs them)")
    assert spec.classes is not None
    where = f"CSV file {str(p)!r}"
    if spec.label_column is None:
        raise DataError(f"{where}: the task names no label_column (in its [data])")
    header, rows = read_csv_rows(p)
    missing = [c for c in (*spec.features, spec.label_column) if c not in header]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{where}: missing the task's column(s) "
                        f"{', '.join(repr(c) for c in missing[:5])}{more}")  # fmt: skip
    at = [header.index(c) for c in spec.features]
    label_at = header.index(spec.label_column)
    index = {c: i for i, c in enumerate(spec.classes)}
    x = np.empty((len(rows) - 1, len(at)), dtype=np.float64)
    y = np.empty(len(rows) - 1, dtype=np.int64)
    for r, (line, row) in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataError(f"{where}, line {line}: {len(row)} fields, the header has "
                            f"{len(header)}")  # fmt: skip
        for j, col in enumerate(at):
            try:
                x[r, j] = float(row[col])
            except ValueError:
                raise DataError(f"{where}, line {line}, column {header[col]!r}: not a number: "
                                f"{row[col]!r}") from None  # fmt: skip
        label = row[label_at].strip()
        if label not in index:
            raise DataError(f"{where}, line {line}: label {label!r} is not one of the task's "
                            f"classes ({', '.join(spec.classes)})")  # fmt: skip
        y[r] = index[label]
    return _finite(x, where), y


def _read_npz(p: Path, spec: DataConfig) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    if spec.features is None:
        raise DataError(f"{p}: the task names no features (an NPZ site needs them)")
    assert spec.classes is not None
    where = f"NPZ file {str(p)!r}"
    try:
        with np.load(p, allow_pickle=False) as loaded:
            if not {"x", "y"} <= set(loaded.files):
                raise DataError(f"{where}: needs arrays 'x' and 'y', found "
                                f"{', '.join(loaded.files) or 'none'}")  # fmt: skip
            x_raw, y_raw = loaded["x"], loaded["y"]
    except FileNotFoundError:
        raise DataError(f"{where} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise DataError(f"{where} is not a readable NPZ archive: {exc}") from None
    if x_raw.ndim != 2 or x_raw.shape[1] != len(spec.features):
        raise DataError(f"{where}: x must have shape (rows, {len(spec.features)}) for the task's "
                        f"features, got {x_raw.shape}")  # fmt: skip
    if y_raw.ndim != 1 or len(y_raw) != len(x_raw):
        raise DataError(f"{where}: y must be one label per row of x")
    if y_raw.dtype.kind in "iu":
        y = y_raw.astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= len(spec.classes)):
            raise DataError(f"{where}: y must be class indices in [0, {len(spec.classes)})")
    elif y_raw.dtype.kind == "U":
        index = {c: i for i, c in enumerate(spec.classes)}
        unknown = sorted({str(v) for v in y_raw} - set(index))
        if unknown:
            raise DataError(f"{where}: label {unknown[0]!r} is not one of the task's classes")
        y = np.array([index[str(v)] for v in y_raw], dtype=np.int64)
    else:
        raise DataError(f"{where}: y must hold integers or strings, got {y_raw.dtype}")
    if x_raw.dtype.kind not in "iuf":
        raise DataError(f"{where}: x must be numeric, got {x_raw.dtype}")
    return _finite(x_raw.astype(np.float64), where), y


def _finite(x: NDArray[np.float64], where: str) -> NDArray[np.float32]:
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        r, j = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where}: row {r + 1}, feature {j}: not a finite float32 number")
    return out


# -- pooled statistics ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SiteStats:
    """One site's summary of its training rows: count, per-feature mean, and the sum of
    squared deviations from that mean (``m2``)."""

    count: int
    mean: tuple[float, ...]
    m2: tuple[float, ...]

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int):
            raise DataError(f"count must be an integer, got {self.count!r}")
        if not 1 <= self.count <= MAX_SITE_EXAMPLES:
            raise DataError(f"count must be in [1, 2**40], got {self.count}")
        if len(self.mean) != len(self.m2) or not self.mean:
            raise DataError("mean and m2 must have one entry per feature")
        values = np.array([*self.mean, *self.m2], dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError("statistics must be finite")
        if min(self.m2) < 0:
            raise DataError("m2 (a sum of squares) cannot be negative")


def site_stats(data: Dataset) -> SiteStats:
    """The statistics of ``data``'s rows (float64)."""
    if len(data) == 0:
        raise DataError(f"{data.name}: no rows to compute statistics on")
    x = data.x.reshape(len(data), -1).astype(np.float64)
    mean = x.mean(axis=0)
    m2 = ((x - mean) ** 2).sum(axis=0)
    return SiteStats(count=len(data), mean=tuple(map(float, mean)), m2=tuple(map(float, m2)))


def pool(stats: Sequence[SiteStats]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The pooled mean and standard deviation of every site's rows, combined in the given
    order (Chan et al.'s pairwise update, float64): the same inputs in the same order give
    the same bits on every node. A feature constant across all rows gets std 1."""
    if not stats:
        raise DataError("no site statistics to pool")
    width = len(stats[0].mean)
    if any(len(s.mean) != width for s in stats):
        raise DataError("site statistics of different widths")
    n = float(stats[0].count)
    mean = np.array(stats[0].mean, dtype=np.float64)
    m2 = np.array(stats[0].m2, dtype=np.float64)
    for s in stats[1:]:
        k = float(s.count)
        other = np.array(s.mean, dtype=np.float64)
        delta = other - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + np.array(s.m2, dtype=np.float64) + delta * delta * (n * k / total)
        n = total
    std = np.sqrt(m2 / n)
    std = np.where(std > 1e-12, std, 1.0)
    return tuple(map(float, mean)), tuple(map(float, std))


def standardized(data: Dataset, mean: Sequence[float], std: Sequence[float]) -> Dataset:
    """``data`` with every feature shifted by ``mean`` and divided by ``std``."""
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    x = (data.x.reshape(len(data), -1).astype(np.float64) - m) / s
    return Dataset(name=data.name, x=np.ascontiguousarray(x.reshape(data.x.shape),
                                                          dtype=np.float32),
                   y=data.y, num_classes=data.num_classes, feature_shape=data.feature_shape,
                   image_shape=data.image_shape)  # fmt: skip
