"""Dataset loading and the one-line errors for bad data."""

import re

import numpy as np
import pytest

from modelops_trainer.data import (
    BUILTIN_IRIS,
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    DataError,
    load_dataset,
)

from .conftest import write_csv


def test_builtin_iris_matches_sklearn():
    from sklearn.datasets import load_iris

    dataset = load_dataset(BUILTIN_IRIS)
    iris = load_iris()
    assert dataset.rows == 150
    assert dataset.classes == ["setosa", "versicolor", "virginica"]
    np.testing.assert_allclose(dataset.features, iris.data)
    assert list(dataset.labels) == [iris.target_names[t] for t in iris.target]
    assert len(dataset.sha256) == 64


def test_csv_file_equals_builtin(iris_csv):
    from_file = load_dataset(str(iris_csv))
    builtin = load_dataset(BUILTIN_IRIS)
    assert from_file.sha256 == builtin.sha256
    np.testing.assert_array_equal(from_file.features, builtin.features)


def test_missing_cells_become_nan(tmp_path):
    rows = [[5.1, 3.5, "", 0.2, "a"], [6.0, "NA", 4.0, 1.2, "b"]] * 6
    dataset = load_dataset(str(write_csv(tmp_path / "d.csv", rows)))
    assert np.isnan(dataset.features[0, 2])
    assert np.isnan(dataset.features[1, 1])


def test_extra_columns_and_column_order_are_accepted(tmp_path):
    header = ["id", LABEL_COLUMN, *reversed(FEATURE_COLUMNS)]
    rows = [[i, "ab"[i % 2], 0.1, 1.0, 2.0, 3.0 + i] for i in range(12)]
    dataset = load_dataset(str(write_csv(tmp_path / "d.csv", rows, header)))
    assert dataset.features[0].tolist() == [3.0, 2.0, 1.0, 0.1]


def _rows(n: int, classes: str = "ab") -> list[list[object]]:
    return [[5.0 + i / 10, 3.0, 1.5, 0.2, classes[i % len(classes)]] for i in range(n)]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "is empty"),
        ("   \n\n", "is empty"),
        ("sepal length (cm),species\n1,a\n", "lacks column(s) 'sepal width (cm)'"),
        (b"\xff\xfe\x00garbage", "is not UTF-8"),
    ],
)
def test_bad_files(tmp_path, content, expected):
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=re.escape(expected)) as info:
        load_dataset(str(path))
    assert "\n" not in str(info.value)


def test_non_numeric_cell_names_line_and_column(tmp_path):
    rows = _rows(12)
    rows[3][1] = "wide"
    with pytest.raises(
        DataError, match=r"line 5: column 'sepal width \(cm\)' has non-numeric value 'wide'"
    ):
        load_dataset(str(write_csv(tmp_path / "d.csv", rows)))


def test_infinite_value_is_rejected(tmp_path):
    rows = _rows(12)
    rows[0][0] = "inf"
    with pytest.raises(DataError, match="non-finite"):
        load_dataset(str(write_csv(tmp_path / "d.csv", rows)))


def test_too_few_rows(tmp_path):
    with pytest.raises(DataError, match="has 9 data row"):
        load_dataset(str(write_csv(tmp_path / "d.csv", _rows(9))))


def test_one_class_only(tmp_path):
    with pytest.raises(DataError, match="only one class \\('a'\\)"):
        load_dataset(str(write_csv(tmp_path / "d.csv", _rows(20, "a"))))


def test_short_row(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path, _rows(12))
    path.write_text(path.read_text() + "1.0,2.0\n")
    with pytest.raises(DataError, match="line 14: 2 cells"):
        load_dataset(str(path))


def test_empty_label(tmp_path):
    rows = _rows(12)
    rows[2][4] = " "
    with pytest.raises(DataError, match="empty 'species'"):
        load_dataset(str(write_csv(tmp_path / "d.csv", rows)))


def test_column_without_values(tmp_path):
    rows = _rows(12)
    for row in rows:
        row[2] = ""
    with pytest.raises(DataError, match="'petal length \\(cm\\)' have no values"):
        load_dataset(str(write_csv(tmp_path / "d.csv", rows)))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.csv"))


def test_unreachable_url():
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    with pytest.raises(
        DataError, match=re.escape("cannot download dataset http://127.0.0.1:9/x.csv")
    ):
        load_dataset("http://127.0.0.1:9/x.csv")
