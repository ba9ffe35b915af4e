import csv
from pathlib import Path

import pytest

from modelops_trainer.data import FEATURE_COLUMNS, LABEL_COLUMN


def write_csv(path: Path, rows: list[list[object]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or [*FEATURE_COLUMNS, LABEL_COLUMN])
        writer.writerows(rows)
    return path


@pytest.fixture
def iris_csv(tmp_path: Path) -> Path:
    """The built-in Iris data as a CSV file in the seed's format."""
    from modelops_trainer.data import _builtin_iris_csv

    path = tmp_path / "iris.csv"
    path.write_bytes(_builtin_iris_csv())
    return path
