"""In-memory classification data sets and their loaders.

A :class:`Dataset` is a validated pair of arrays: float32 features ``x`` of shape
``(n, *feature_shape)`` and int64 labels ``y`` in ``[0, num_classes)``. Loaders read only local
files: scikit-learn's bundled data sets, a CSV file or an NPZ archive. Nothing is downloaded.

Every problem with the input is raised as :class:`~fedledger.errors.DataError`; errors from the
libraries underneath (``OSError``, ``csv.Error``, ``zipfile.BadZipFile``, numpy's ``ValueError``)
are translated at this boundary and kept as ``__cause__``.
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import numpy as np
from numpy.typing import NDArray

from fedledger.errors import DataError

__all__ = [
    "DATASETS",
    "Dataset",
    "load_breast_cancer",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_npz",
]

DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "csv", "npz")
"""Names accepted by :func:`load_dataset`."""

# Labels in an NPZ file are class indices; a larger one is almost surely a mistake and would make
# ``class_counts`` allocate a huge array.
_MAX_CLASSES = 1_000_000

_K = TypeVar("_K", int, str)


def _is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _check_shape(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(_is_int(d) and int(d) > 0 for d in value):
        raise DataError(f"{what} must be a tuple of positive ints, got {value!r}")
    return tuple(int(d) for d in value)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Dataset:
    """A labelled classification data set held in memory.

    ``x`` is float32, C-contiguous, shape ``(n, *feature_shape)`` and finite; ``y`` is int64,
    shape ``(n,)``, values in ``[0, num_classes)``. ``n`` may be 0 (an empty validation split).
    ``image_shape`` is the per-sample shape a CNN reshapes ``x`` to (``(1, 8, 8)`` for digits),
    or ``None`` for tabular data.

    Equality is identity (arrays do not compare with ``==``); compare ``x`` and ``y`` explicitly.
    """

    name: str
    x: NDArray[np.float32]
    y: NDArray[np.int64]
    num_classes: int
    feature_shape: tuple[int, ...]
    image_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DataError(f"Dataset name must be a non-empty string, got {self.name!r}")
        where = f"dataset {self.name!r}"
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise DataError(f"{where}: num_classes must be an int >= 1, got {self.num_classes!r}")
        feature_shape = _check_shape(self.feature_shape, f"{where}: feature_shape")
        if not feature_shape:
            raise DataError(f"{where}: feature_shape must have at least one dimension")
        if self.image_shape is not None:
            image_shape = _check_shape(self.image_shape, f"{where}: image_shape")
            if math.prod(image_shape) != math.prod(feature_shape):
                raise DataError(
                    f"{where}: image_shape {image_shape} holds {math.prod(image_shape)} values "
                    f"but feature_shape {feature_shape} holds {math.prod(feature_shape)}"
                )
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise DataError(f"{where}: x must be a float32 ndarray, got {_describe(x)}")
        if not isinstance(y, np.ndarray) or y.dtype != np.int64:
            raise DataError(f"{where}: y must be an int64 ndarray, got {_describe(y)}")
        if x.shape[1:] != feature_shape or x.ndim < 2:
            raise DataError(
                f"{where}: x has shape {x.shape}, expected (n, *{feature_shape}) "
                f"for feature_shape {feature_shape}"
            )
        if not x.flags.c_contiguous:
            raise DataError(f"{where}: x must be C-contiguous (use np.ascontiguousarray)")
        if y.ndim != 1:
            raise DataError(f"{where}: y must be one-dimensional, got shape {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{where}: x has {len(x)} rows but y has {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise DataError(
                f"{where}: labels must lie in [0, {self.num_classes}), "
                f"found range [{int(y.min())}, {int(y.max())}]"
            )
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise DataError(f"{where}: x contains {bad} non-finite values (NaN or Inf)")

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, feature_shape={self.feature_shape}, "
            f"num_classes={self.num_classes}, image_shape={self.image_shape})"
        )

    def subset(self, indices: NDArray[np.integer[Any]]) -> Dataset:
        """Rows ``indices`` (a 1-D array of non-negative ints; repeats allowed) as a new Dataset.

        The metadata (name, num_classes, shapes) is kept; the arrays are copies.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise DataError(f"subset indices must be one-dimensional, got shape {idx.shape}")
        if idx.size == 0:
            idx = idx.astype(np.int64)
        elif not np.issubdtype(idx.dtype, np.integer):
            raise DataError(f"subset indices must be integers, got dtype {idx.dtype}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise DataError(
                f"subset indices must lie in [0, {len(self)}) for dataset {self.name!r}, "
                f"found range [{int(idx.min())}, {int(idx.max())}]"
            )
        return Dataset(
            name=self.name,
            x=np.ascontiguousarray(self.x[idx]),
            y=np.ascontiguousarray(self.y[idx]),
            num_classes=self.num_classes,
            feature_shape=self.feature_shape,
            image_shape=self.image_shape,
        )

    def class_counts(self) -> NDArray[np.int64]:
        """Number of samples of each class, an int64 array of length ``num_classes``."""
        return np.bincount(self.y, minlength=self.num_classes).astype(np.int64)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray of dtype {value.dtype}"
    return type(value).__name__


def _from_sklearn(loader: Callable[[], Any], name: str) -> tuple[NDArray[Any], NDArray[Any]]:
    try:
        bunch = loader()
        data = np.asarray(bunch.data)
        target = np.asarray(bunch.target)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load scikit-learn's bundled {name!r} data set: {exc}") from exc
    return data, target


def load_digits() -> Dataset:
    """scikit-learn's 8x8 handwritten digits: 1797 samples, 64 pixel intensities in 0..16.

    Native units, as scikit-learn ships them: the reference task (SGD lr 0.05) is calibrated on
    them; scaling to [0, 1] would cut the first layer's effective learning rate 16-fold.
    """
    from sklearn import datasets

    data, target = _from_sklearn(datasets.load_digits, "digits")
    return Dataset(
        name="digits",
        x=np.ascontiguousarray(data, dtype=np.float32),
        y=target.astype(np.int64),
        num_classes=10,
        feature_shape=(64,),
        image_shape=(1, 8, 8),
    )


def load_breast_cancer() -> Dataset:
    """scikit-learn's Wisconsin breast cancer data: 569 samples, 30 raw features, 2 classes.

    The features are on very different scales; use ``federate(..., standardize=True)``.
    """
    from sklearn import datasets

    data, target = _from_sklearn(datasets.load_breast_cancer, "breast_cancer")
    return Dataset(
        name="breast_cancer",
        x=np.ascontiguousarray(data, dtype=np.float32),
        y=target.astype(np.int64),
        num_classes=2,
        feature_shape=(30,),
    )


def _to_float32(values: NDArray[Any], where: str) -> NDArray[np.float32]:
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(values, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise DataError(
            f"{where}: features must be finite in float32, found NaN, Inf or a value beyond "
            f"the float32 range at index {tuple(int(i) for i in bad)}"
        )
    return out


def _encode(keys: list[_K]) -> tuple[NDArray[np.int64], list[_K]]:
    classes = sorted(set(keys))
    index = {c: i for i, c in enumerate(classes)}
    codes = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    return codes, classes


def _map_labels(raw: list[str], where: str) -> tuple[NDArray[np.int64], list[str]]:
    """Map label strings to 0..k-1 by sorted order (as integers if they all parse as ints)."""
    try:
        int_keys = [int(label) for label in raw]
    except ValueError:
        y, classes = _encode(raw)
    else:
        y, int_classes = _encode(int_keys)
        classes = [str(c) for c in int_classes]
    if len(classes) < 2:
        raise DataError(
            f"{where}: need at least 2 classes in the label column, found {len(classes)} "
            f"({', '.join(repr(c) for c in classes)})"
        )
    return y, classes


def read_csv_rows(p: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV file's header (names stripped) and every row, the header's included, with its
    line number; blank lines skipped, a BOM tolerated. DataError if unreadable or empty."""
    where = f"CSV file {str(p)!r}"
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:  # tolerate a BOM
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader if row]
    except FileNotFoundError as exc:
        raise DataError(f"{where} does not exist") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {where}: {exc}") from exc
    if not rows:
        raise DataError(f"{where} is empty: a header row is required")
    return [name.strip() for name in rows[0][1]], rows


def load_csv(path: str | os.PathLike[str], *, label_column: str) -> Dataset:
    """A CSV file with a header row: one label column, every other column a numeric feature.

    Labels may be ints or strings; the sorted distinct labels become classes ``0..k-1`` (compared
    as integers when every label parses as one). Blank lines are skipped. The data set is named
    after the file's stem.
    """
    p = Path(path)
    where = f"CSV file {str(p)!r}"
    header, rows = read_csv_rows(p)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"{where}: duplicate column name {name!r} in the header")
        seen.add(name)
    if label_column not in header:
        raise DataError(
            f"{where}: label column {label_column!r} not found; available columns: "
            f"{', '.join(repr(c) for c in header)}"
        )
    label_at = header.index(label_column)
    feature_cols = [i for i in range(len(header)) if i != label_at]
    if not feature_cols:
        raise DataError(f"{where}: no feature columns besides the label column {label_column!r}")
    if len(rows) == 1:
        raise DataError(f"{where} has a header but no data rows")
    features = np.empty((len(rows) - 1, len(feature_cols)), dtype=np.float64)
    labels: list[str] = []
    for r, (line, row) in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataError(
                f"{where}, line {line}: expected {len(header)} fields as in the header, "
                f"got {len(row)}"
            )
        for j, col in enumerate(feature_cols):
            try:
                features[r, j] = float(row[col])
            except ValueError as exc:
                raise DataError(
                    f"{where}, line {line}, column {header[col]!r}: "
                    f"non-numeric feature value {row[col]!r}"
                ) from exc
        label = row[label_at].strip()
        if not label:
            raise DataError(f"{where}, line {line}: empty label in column {label_column!r}")
        labels.append(label)
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.ascontiguousarray(features, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        r, j = (int(i) for i in np.argwhere(~finite)[0])
        raise DataError(
            f"{where}, line {rows[r + 1][0]}, column {header[feature_cols[j]]!r}: "
            f"non-finite feature value {rows[r + 1][1][feature_cols[j]]!r} "
            "(NaN, Inf or beyond the float32 range)"
        )
    y, classes = _map_labels(labels, where)
    return Dataset(
        name=p.stem or "csv",
        x=x,
        y=y,
        num_classes=len(classes),
        feature_shape=(len(feature_cols),),
    )


def load_npz(path: str | os.PathLike[str]) -> Dataset:
    """An NPZ archive with arrays ``x`` (n, ...) and ``y`` (n,); never unpickles anything.

    ``x`` must be numeric (it is cast to float32 and must be finite). ``y`` must have an integer
    dtype with values >= 0; ``num_classes`` is ``max(y) + 1`` and at least 2 distinct labels are
    required. ``image_shape`` is ``(1, h, w)`` for ``x`` of shape ``(n, h, w)``, ``(c, h, w)``
    for ``(n, c, h, w)`` and ``None`` for tabular ``(n, d)``. Other arrays are ignored.
    """
    p = Path(path)
    where = f"NPZ file {str(p)!r}"
    try:
        loaded = np.load(p, allow_pickle=False)
    except FileNotFoundError as exc:
        raise DataError(f"{where} does not exist") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where} is not a readable NPZ archive: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{where} is not an NPZ archive (it holds a single .npy array)")
    with loaded:
        missing = [key for key in ("x", "y") if key not in loaded.files]
        if missing:
            raise DataError(
                f"{where}: missing array(s) {', '.join(repr(k) for k in missing)}; "
                f"found {', '.join(repr(k) for k in loaded.files) or 'none'}"
            )
        try:
            x_raw = loaded["x"]
            y_raw = loaded["y"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{where}: cannot read arrays 'x' and 'y': {exc}") from exc
    for key, arr in (("x", x_raw), ("y", y_raw)):
        if not isinstance(arr, np.ndarray):
            raise DataError(f"{where}: member {key!r} is not a valid .npy array")
    if not (np.issubdtype(x_raw.dtype, np.integer) or np.issubdtype(x_raw.dtype, np.floating)):
        raise DataError(f"{where}: 'x' must be numeric (int or float), got dtype {x_raw.dtype}")
    if x_raw.ndim < 2:
        raise DataError(f"{where}: 'x' must have shape (n, features...), got {x_raw.shape}")
    if y_raw.ndim != 1:
        raise DataError(f"{where}: 'y' must be one-dimensional, got shape {y_raw.shape}")
    if len(x_raw) != len(y_raw):
        raise DataError(f"{where}: 'x' has {len(x_raw)} rows but 'y' has {len(y_raw)} labels")
    if len(y_raw) == 0:
        raise DataError(f"{where}: the arrays are empty")
    if not np.issubdtype(y_raw.dtype, np.integer):
        raise DataError(
            f"{where}: labels 'y' must have an integer dtype, got {y_raw.dtype} "
            "(save them with y.astype(np.int64))"
        )
    lo, hi = int(y_raw.min()), int(y_raw.max())
    if lo < 0 or hi >= _MAX_CLASSES:
        raise DataError(
            f"{where}: labels 'y' must be class indices in [0, {_MAX_CLASSES}), "
            f"found range [{lo}, {hi}]"
        )
    if len(np.unique(y_raw)) < 2:
        raise DataError(f"{where}: need at least 2 distinct labels, all are {lo}")
    x = _to_float32(x_raw, where)
    feature_shape = tuple(int(d) for d in x.shape[1:])
    image_shape: tuple[int, ...] | None = None
    if len(feature_shape) == 2:
        image_shape = (1, *feature_shape)
    elif len(feature_shape) == 3:
        image_shape = feature_shape
    return Dataset(
        name=p.stem or "npz",
        x=x,
        y=y_raw.astype(np.int64),
        num_classes=hi + 1,
        feature_shape=feature_shape,
        image_shape=image_shape,
    )


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    label_column: str | None = None,
) -> Dataset:
    """Load a data set by name (one of :data:`DATASETS`).

    ``"csv"`` needs ``path`` and ``label_column``; ``"npz"`` needs ``path``. The bundled sets
    (``"digits"``, ``"breast_cancer"``) take neither; passing one anyway is an error.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if name in ("digits", "breast_cancer"):
        if path is not None or label_column is not None:
            raise DataError(f"data set {name!r} is bundled: it takes no path or label_column")
        return load_digits() if name == "digits" else load_breast_cancer()
    if path is None:
        raise DataError(f"data set {name!r} needs a path")
    if name == "csv":
        if label_column is None:
            raise DataError("data set 'csv' needs a label_column")
        return load_csv(path, label_column=label_column)
    if label_column is not None:
        raise DataError("data set 'npz' takes no label_column (labels are the array 'y')")
    return load_npz(path)
