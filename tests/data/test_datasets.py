"""Tests for fedledger.data.datasets: the Dataset record and its loaders."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from fedledger.data import (
    DATASETS,
    Dataset,
    load_breast_cancer,
    load_csv,
    load_dataset,
    load_digits,
    load_npz,
)
from fedledger.errors import DataError


def _tiny(n: int = 6, *, num_classes: int = 3) -> Dataset:
    return Dataset(
        name="tiny",
        x=np.arange(n * 4, dtype=np.float32).reshape(n, 4),
        y=np.arange(n, dtype=np.int64) % num_classes,
        num_classes=num_classes,
        feature_shape=(4,),
        image_shape=(1, 2, 2),
    )


# --- Dataset ------------------------------------------------------------------------------------


def test_dataset_len_subset_and_class_counts() -> None:
    ds = _tiny(6)
    assert len(ds) == 6
    assert ds.class_counts().tolist() == [2, 2, 2]
    assert ds.class_counts().dtype == np.int64
    sub = ds.subset(np.array([5, 0, 0]))
    assert len(sub) == 3
    assert sub.y.tolist() == [2, 0, 0]
    np.testing.assert_array_equal(sub.x[0], ds.x[5])
    assert sub.class_counts().tolist() == [2, 0, 1]
    assert (sub.name, sub.num_classes, sub.feature_shape, sub.image_shape) == (
        "tiny",
        3,
        (4,),
        (1, 2, 2),
    )
    assert sub.x.flags.c_contiguous
    # A copy: changing the subset leaves the original alone.
    sub.x[0, 0] = -1.0
    assert ds.x[5, 0] == 20.0


def test_dataset_allows_empty() -> None:
    empty = _tiny(6).subset(np.array([], dtype=np.int64))
    assert len(empty) == 0
    assert empty.x.shape == (0, 4)
    assert empty.class_counts().tolist() == [0, 0, 0]
    # An untyped empty list is fine too (np.asarray([]) is float64).
    assert len(_tiny(6).subset(np.asarray([]))) == 0


def test_dataset_repr_is_short() -> None:
    text = repr(load_digits())
    assert "n=1797" in text
    assert len(text) < 200


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"name": ""}, "name"),
        ({"x": np.zeros((6, 4), dtype=np.float64)}, "float32"),
        ({"y": np.zeros(6, dtype=np.int32)}, "int64"),
        ({"y": [0, 1, 2, 0, 1, 2]}, "int64"),
        ({"x": np.zeros((6, 5), dtype=np.float32)}, r"shape \(6, 5\)"),
        ({"x": np.zeros(6, dtype=np.float32), "feature_shape": (1,), "image_shape": None}, "shape"),
        ({"y": np.zeros(5, dtype=np.int64)}, "6 rows but y has 5"),
        ({"y": np.zeros((6, 1), dtype=np.int64)}, "one-dimensional"),
        ({"y": np.array([0, 1, 2, 3, 0, 1], dtype=np.int64)}, r"\[0, 3\)"),
        ({"y": np.array([0, -1, 2, 0, 1, 2], dtype=np.int64)}, r"\[-1, 2\]"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"feature_shape": [4]}, "feature_shape"),
        ({"feature_shape": (0,)}, "feature_shape"),
        ({"image_shape": (1, 2, 3)}, "image_shape"),
        ({"x": np.full((6, 4), np.nan, dtype=np.float32)}, "non-finite"),
    ],
)
def test_dataset_rejects_bad_fields(changes: dict[str, Any], match: str) -> None:
    fields: dict[str, Any] = {
        "name": "tiny",
        "x": np.zeros((6, 4), dtype=np.float32),
        "y": np.array([0, 1, 2, 0, 1, 2], dtype=np.int64),
        "num_classes": 3,
        "feature_shape": (4,),
        "image_shape": (1, 2, 2),
    }
    fields.update(changes)
    with pytest.raises(DataError, match=match):
        Dataset(**fields)


def test_dataset_rejects_non_contiguous_x() -> None:
    x = np.zeros((4, 6), dtype=np.float32).T  # Fortran order
    assert not x.flags.c_contiguous
    with pytest.raises(DataError, match="C-contiguous"):
        Dataset(
            name="t",
            x=x,
            y=np.zeros(6, dtype=np.int64),
            num_classes=1,
            feature_shape=(4,),
        )


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        (np.array([0, 6]), r"\[0, 6\)"),
        (np.array([-1]), r"\[0, 6\)"),
        (np.array([0.0, 1.0]), "integers"),
        (np.array([[0, 1]]), "one-dimensional"),
    ],
)
def test_subset_rejects_bad_indices(indices: NDArray[Any], match: str) -> None:
    with pytest.raises(DataError, match=match):
        _tiny(6).subset(indices)


# --- bundled data sets --------------------------------------------------------------------------


def test_load_digits() -> None:
    ds = load_digits()
    assert ds.name == "digits"
    assert ds.x.shape == (1797, 64)
    assert ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64
    assert float(ds.x.min()) == 0.0
    assert float(ds.x.max()) == 16.0
    assert np.array_equal(ds.x, np.round(ds.x))  # native integer intensities
    assert ds.num_classes == 10
    assert ds.feature_shape == (64,)
    assert ds.image_shape == (1, 8, 8)
    assert sorted(np.unique(ds.y).tolist()) == list(range(10))
    assert ds.class_counts().sum() == 1797
    assert ds.x.reshape(-1, *ds.image_shape).shape == (1797, 1, 8, 8)


def test_load_breast_cancer() -> None:
    ds = load_breast_cancer()
    assert ds.name == "breast_cancer"
    assert ds.x.shape == (569, 30)
    assert ds.x.dtype == np.float32
    assert ds.num_classes == 2
    assert ds.feature_shape == (30,)
    assert ds.image_shape is None
    assert ds.class_counts().tolist() == [212, 357]
    # Raw, unscaled features: some exceed 1000 (area).
    assert float(ds.x.max()) > 1000.0


# --- CSV ----------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_csv_round_trip_with_string_labels(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "pets.csv",
        "weight,species,height\n1.5,dog,2\n0.5,cat,1e1\n\n3,bird,-4\n2.25,cat,0\n",
    )
    ds = load_csv(path, label_column="species")
    assert ds.name == "pets"
    assert ds.num_classes == 3
    assert ds.feature_shape == (2,)
    assert ds.image_shape is None
    # Sorted labels: bird -> 0, cat -> 1, dog -> 2; the blank line is skipped.
    assert ds.y.tolist() == [2, 1, 0, 1]
    np.testing.assert_array_equal(
        ds.x, np.array([[1.5, 2], [0.5, 10], [3, -4], [2.25, 0]], dtype=np.float32)
    )
    assert ds.x.dtype == np.float32


def test_load_csv_integer_labels_sort_numerically(tmp_path: Path) -> None:
    path = _write(tmp_path / "n.csv", "a,label\n0,10\n1,2\n2, 2\n3,-1\n")
    ds = load_csv(os.fspath(path), label_column="label")
    # -1 -> 0, 2 -> 1, 10 -> 2 (as strings "10" would sort before "2").
    assert ds.y.tolist() == [2, 1, 1, 0]
    assert ds.num_classes == 3


def test_load_csv_quoted_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.csv", '"f 1","the label"\n"1.0","a, b"\n"2.0","c"\n')
    ds = load_csv(path, label_column="the label")
    assert ds.y.tolist() == [0, 1]


def test_load_csv_tolerates_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("label,f\nb,1\na,2\n".encode("utf-8-sig"))
    ds = load_csv(path, label_column="label")
    assert ds.y.tolist() == [1, 0]


def test_load_csv_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(DataError, match=r"absent\.csv.*does not exist") as info:
        load_csv(path, label_column="y")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_load_csv_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read") as info:
        load_csv(tmp_path, label_column="y")
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("a,y\n", "no data rows"),
        ("a,b\n1,2\n", r"label column 'y' not found; available columns: 'a', 'b'"),
        ("a,y,a\n1,0,2\n", "duplicate column name 'a'"),
        ("y\n0\n1\n", "no feature columns"),
        ("a,b,y\n1,2,0\n3,oops,1\n", r"line 3, column 'b': non-numeric feature value 'oops'"),
        ("a,b,y\n1,2,0\n3,,1\n", r"line 3, column 'b': non-numeric"),
        ("a,b,y\n1,2,0\n3,4\n", "line 3: expected 3 fields as in the header, got 2"),
        ("a,b,y\n1,2,0\n3,4,1,5\n", "line 3: expected 3 fields as in the header, got 4"),
        ("a,y\n1,0\n2,0\n", "at least 2 classes.*found 1"),
        ("a,y\n1,cat\n2,\n", "line 3: empty label in column 'y'"),
        ("a,y\n1,0\nnan,1\n", r"line 3, column 'a': non-finite feature value 'nan'"),
        ("a,y\n1,0\n2,1\ninf,1\n", r"line 4, column 'a': non-finite"),
        ("a,y\n1e39,0\n2,1\n", r"line 2, column 'a': non-finite feature value '1e39'"),
    ],
)
def test_load_csv_errors(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=match) as info:
        load_csv(path, label_column="y")
    assert "bad.csv" in str(info.value)


def test_load_csv_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"a,y\n1,caf\xe9\n2,b\n")
    with pytest.raises(DataError, match=r"latin\.csv") as info:
        load_csv(path, label_column="y")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_load_csv_parser_error_is_translated(tmp_path: Path) -> None:
    import csv

    limit = csv.field_size_limit()
    path = _write(tmp_path / "huge.csv", "a,y\n" + "1" * (limit + 1) + ",0\n")
    with pytest.raises(DataError, match=r"huge\.csv") as info:
        load_csv(path, label_column="y")
    assert isinstance(info.value.__cause__, csv.Error)


# --- NPZ ----------------------------------------------------------------------------------------


def test_load_npz_round_trip_tabular(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5))
    y = np.arange(20) % 4
    path = tmp_path / "tab.npz"
    np.savez(path, x=x, y=y.astype(np.int32), extra=np.zeros(3))
    ds = load_npz(path)
    assert ds.name == "tab"
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))
    np.testing.assert_array_equal(ds.y, y)
    assert ds.y.dtype == np.int64
    assert ds.num_classes == 4
    assert ds.feature_shape == (5,)
    assert ds.image_shape is None


def test_load_npz_images(tmp_path: Path) -> None:
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    gray = tmp_path / "gray.npz"
    np.savez_compressed(gray, x=np.zeros((4, 7, 5), dtype=np.uint8), y=y)
    ds = load_npz(str(gray))
    assert ds.feature_shape == (7, 5)
    assert ds.image_shape == (1, 7, 5)
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, x=np.ones((4, 3, 2, 2), dtype=np.float16), y=y)
    ds = load_npz(rgb)
    assert ds.feature_shape == (3, 2, 2)
    assert ds.image_shape == (3, 2, 2)
    assert ds.num_classes == 2


def test_load_npz_num_classes_is_max_label_plus_one(tmp_path: Path) -> None:
    path = tmp_path / "gap.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.array([0, 4, 4]))
    ds = load_npz(path)
    assert ds.num_classes == 5
    assert ds.class_counts().tolist() == [1, 0, 0, 0, 2]


def test_load_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothere\.npz.*does not exist"):
        load_npz(tmp_path / "nothere.npz")


def test_load_npz_text_file_is_not_npz(tmp_path: Path) -> None:
    path = _write(tmp_path / "fake.npz", "this is not numpy data\n")
    with pytest.raises(DataError, match=r"fake\.npz.*not a readable NPZ") as info:
        load_npz(path)
    assert info.value.__cause__ is not None


def test_load_npz_npy_file_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "single.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(DataError, match="not an NPZ archive"):
        load_npz(path)


def test_load_npz_corrupt_zip(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    data = good.read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated\.npz"):
        load_npz(path)


def test_load_npz_corrupt_member(tmp_path: Path) -> None:
    path = tmp_path / "member.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", b"not an npy header")
        zf.writestr("y.npy", b"nor this")
    with pytest.raises(DataError, match=r"member\.npz.*member 'x' is not a valid \.npy array"):
        load_npz(path)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((3, 2))}, r"missing array\(s\) 'y'; found 'x'"),
        ({"y": np.zeros(3, dtype=np.int64)}, r"missing array\(s\) 'x'"),
        ({"a": np.zeros(1)}, r"missing array\(s\) 'x', 'y'"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, "'x' has 3 rows but 'y' has 2"),
        ({"x": np.zeros((3, 2)), "y": np.array([0.0, 1.0, 1.0])}, "integer dtype, got float64"),
        ({"x": np.zeros((3, 2)), "y": np.array([True, False, True])}, "integer dtype, got bool"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, -1, 1])}, r"found range \[-1, 1\]"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 10**9])}, "class indices"),
        ({"x": np.zeros((3, 2)), "y": np.array([1, 1, 1])}, "at least 2 distinct labels"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0, dtype=np.int64)}, "empty"),
        ({"x": np.zeros(3), "y": np.array([0, 1, 1])}, "shape \\(n, features...\\)"),
        ({"x": np.zeros((3, 2)), "y": np.array([[0, 1, 1]])}, "one-dimensional"),
        ({"x": np.array([["a"], ["b"], ["c"]]), "y": np.array([0, 1, 1])}, "numeric"),
        ({"x": np.array([[1.0], [np.inf], [0.0]]), "y": np.array([0, 1, 1])}, "finite in float32"),
        ({"x": np.array([[1.0], [np.nan], [0.0]]), "y": np.array([0, 1, 1])}, "finite in float32"),
        ({"x": np.array([[1.0], [1e300], [0.0]]), "y": np.array([0, 1, 1])}, "finite in float32"),
    ],
)
def test_load_npz_errors(tmp_path: Path, arrays: dict[str, Any], match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as info:
        load_npz(path)
    assert "bad.npz" in str(info.value)


class _Tripwire:
    """Unpickling this creates a directory: evidence that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("key", ["x", "y"])
def test_load_npz_rejects_object_arrays_without_unpickling(tmp_path: Path, key: str) -> None:
    markers = [tmp_path / f"unpickled-{key}-{i}" for i in range(2)]
    arrays: dict[str, Any] = {"x": np.zeros((2, 1)), "y": np.array([0, 1])}
    arrays[key] = np.array([_Tripwire(m) for m in markers], dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)  # np.savez pickles object arrays

    with pytest.raises(DataError, match=r"evil\.npz") as info:
        load_npz(path)
    assert isinstance(info.value.__cause__, ValueError)
    assert not any(m.exists() for m in markers)

    # Control: the file really does run the pickle when asked to, so the check above is meaningful.
    with np.load(path, allow_pickle=True) as loaded:
        loaded[key]
    assert all(m.exists() for m in markers)


# --- load_dataset -------------------------------------------------------------------------------


def test_datasets_constant() -> None:
    assert DATASETS == ("digits", "breast_cancer", "csv", "npz")


def test_load_dataset_dispatch(tmp_path: Path) -> None:
    assert load_dataset("digits").name == "digits"
    assert len(load_dataset("breast_cancer")) == 569
    csv_path = _write(tmp_path / "d.csv", "f,y\n1,a\n2,b\n")
    assert load_dataset("csv", path=str(csv_path), label_column="y").y.tolist() == [0, 1]
    npz_path = tmp_path / "d.npz"
    np.savez(npz_path, x=np.zeros((2, 3)), y=np.array([1, 0]))
    assert load_dataset("npz", path=str(npz_path)).y.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("mnist", {}, "unknown data set 'mnist'; known: digits, breast_cancer, csv, npz"),
        ("csv", {"label_column": "y"}, "'csv' needs a path"),
        ("csv", {"path": "x.csv"}, "'csv' needs a label_column"),
        ("npz", {}, "'npz' needs a path"),
        ("npz", {"path": "x.npz", "label_column": "y"}, "takes no label_column"),
        ("digits", {"path": "x.csv"}, "bundled"),
        ("breast_cancer", {"label_column": "y"}, "bundled"),
    ],
)
def test_load_dataset_errors(name: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_dataset(name, **kwargs)


def test_data_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("nope")
