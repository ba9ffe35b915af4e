"""Loading and validating the training data (built-in Iris, a CSV file, or a CSV URL)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from modelops_contract.urls import url_problem

# The course project's CSV columns, in model input order.
FEATURE_COLUMNS: tuple[str, ...] = (
    "sepal length (cm)",
    "sepal width (cm)",
    "petal length (cm)",
    "petal width (cm)",
)
LABEL_COLUMN = "species"
BUILTIN_IRIS = "builtin:iris"
MIN_ROWS = 10
URL_TIMEOUT_SECONDS = 30.0
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_CHUNK = 64 * 1024


class DataError(ValueError):
    """The training data cannot be used; the message names the problem."""


@dataclass(frozen=True)
class DownloadPolicy:
    """What a dataset URL may be and how much of it is read: the operator's admin settings.

    `hosts` empty allows any host; an entry starting with "." also allows its subdomains.
    Every redirect is checked against the same policy.
    """

    max_bytes: int = MAX_DOWNLOAD_BYTES
    timeout_seconds: float = URL_TIMEOUT_SECONDS
    schemes: tuple[str, ...] = ("https", "http")
    hosts: tuple[str, ...] = ()

    def check(self, url: str) -> None:
        problem = url_problem(url, self.schemes, self.hosts)
        if problem is not None:
            raise DataError(problem)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, policy: DownloadPolicy) -> None:
        self.policy = policy

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        self.policy.check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True)
class Dataset:
    source: str
    features: npt.NDArray[np.float64]  # shape (rows, 4); NaN marks a missing cell
    labels: npt.NDArray[np.str_]
    sha256: str

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def classes(self) -> list[str]:
        return sorted({str(label) for label in self.labels})


def load_dataset(source: str = BUILTIN_IRIS, policy: DownloadPolicy | None = None) -> Dataset:
    """Load and validate a dataset; raise :class:`DataError` with a one-line reason."""
    if source == BUILTIN_IRIS:
        return _validated(source, _builtin_iris_csv())
    if "://" in source:
        return _validated(source, _download(source, policy or DownloadPolicy()))
    path = Path(source)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"dataset file {source} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read dataset file {source}: {exc.strerror or exc}") from None
    return _validated(source, raw)


def _builtin_iris_csv() -> bytes:
    """scikit-learn's bundled Iris rendered in the seed's CSV form.

    Read from the package data file directly: importing sklearn.datasets costs ~0.5 s.
    The checksum then identifies the data, not the loader.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("scikit-learn is not installed; it ships the built-in Iris data")
    raw = (Path(spec.origin).parent / "datasets" / "data" / "iris.csv").read_text()
    lines = raw.strip().splitlines()
    target_names = lines[0].split(",")[2:]  # header: rows, columns, class names...
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*FEATURE_COLUMNS, LABEL_COLUMN])
    for line in lines[1:]:
        *values, target = line.split(",")
        writer.writerow([*(f"{float(v):g}" for v in values), target_names[int(target)]])
    return out.getvalue().encode()


def _download(url: str, policy: DownloadPolicy) -> bytes:
    policy.check(url)
    opener = urllib.request.build_opener(_CheckedRedirects(policy))
    deadline = time.monotonic() + policy.timeout_seconds
    too_big = DataError(f"dataset {url} is larger than the limit of {policy.max_bytes} bytes")
    try:
        with opener.open(url, timeout=policy.timeout_seconds) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise too_big
            chunks: list[bytes] = []
            size = 0
            # The socket timeout bounds each read; the deadline bounds the whole download
            # (a server trickling bytes would otherwise hold the Job until its own deadline).
            while chunk := response.read1(_CHUNK):
                size += len(chunk)
                if size > policy.max_bytes:
                    raise too_big
                if time.monotonic() > deadline:
                    raise DataError(
                        f"dataset {url} took longer than {policy.timeout_seconds:g} s to download"
                    )
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise DataError(f"cannot download dataset {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = f"no answer within {policy.timeout_seconds:g} s"
        raise DataError(f"cannot download dataset {url}: {reason}") from None
    return b"".join(chunks)


def _validated(source: str, raw: bytes) -> Dataset:
    sha256 = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"dataset {source} is not UTF-8 text") from None
    if not text.strip():
        raise DataError(f"dataset {source} is empty")
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader)]
    missing = [c for c in (*FEATURE_COLUMNS, LABEL_COLUMN) if c not in header]
    if missing:
        raise DataError(
            f"dataset {source} lacks column(s) {', '.join(repr(c) for c in missing)}; "
            f"expected {', '.join(repr(c) for c in (*FEATURE_COLUMNS, LABEL_COLUMN))}"
        )
    index = [header.index(c) for c in FEATURE_COLUMNS]
    label_index = header.index(LABEL_COLUMN)

    features: list[list[float]] = []
    labels: list[str] = []
    for line_no, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) < len(header):
            raise DataError(
                f"dataset {source} line {line_no}: {len(row)} cells, header has {len(header)}"
            )
        values = []
        for column, i in zip(FEATURE_COLUMNS, index, strict=True):
            values.append(_parse_cell(source, line_no, column, row[i]))
        label = row[label_index].strip()
        if not label:
            raise DataError(f"dataset {source} line {line_no}: empty {LABEL_COLUMN!r}")
        features.append(values)
        labels.append(label)

    if len(features) < MIN_ROWS:
        raise DataError(
            f"dataset {source} has {len(features)} data row(s); at least {MIN_ROWS} are needed"
        )
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(
            f"dataset {source} has only one class ({classes[0]!r}); a classifier needs two or more"
        )
    matrix = np.asarray(features, dtype=np.float64)
    if np.isnan(matrix).all(axis=0).any():
        empty = [FEATURE_COLUMNS[i] for i in np.flatnonzero(np.isnan(matrix).all(axis=0))]
        raise DataError(f"dataset {source} column(s) {', '.join(map(repr, empty))} have no values")
    return Dataset(source=source, features=matrix, labels=np.asarray(labels), sha256=sha256)


def _parse_cell(source: str, line_no: int, column: str, cell: str) -> float:
    cell = cell.strip()
    if cell == "" or cell.lower() in {"na", "nan", "null"}:
        return math.nan  # missing: the pipeline's mean imputation fills it
    try:
        value = float(cell)
    except ValueError:
        raise DataError(
            f"dataset {source} line {line_no}: column {column!r} has non-numeric value {cell!r}"
        ) from None
    if not math.isfinite(value):
        raise DataError(
            f"dataset {source} line {line_no}: column {column!r} has non-finite value {cell!r}"
        )
    return value
