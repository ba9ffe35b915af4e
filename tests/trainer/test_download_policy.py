"""Dataset URLs under the admin's download policy, against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelops_trainer.data import DataError, DownloadPolicy, load_dataset

pytestmark = pytest.mark.integration

IRIS = load_dataset()  # the built-in data, served back as CSV below
ROOT = Path(__file__).resolve().parents[2]


def iris_csv() -> bytes:
    from modelops_trainer.data import _builtin_iris_csv

    return _builtin_iris_csv()


class Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.end_headers()
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            for _ in range(80):  # 80 small pieces, 0.1 s apart: ~8 s in all
                self.wfile.write(b"x" * 16)
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/chunked-big":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the reader must count
            self.wfile.write(b"y" * 300_000)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(iris_csv())))
            self.end_headers()
            self.wfile.write(iris_csv())


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_allowed_url_loads(base: str) -> None:
    data = load_dataset(f"{base}/iris.csv", DownloadPolicy(hosts=("127.0.0.1",)))
    assert data.rows == IRIS.rows and data.sha256 == IRIS.sha256


def test_declared_size_over_the_limit_is_refused(base: str) -> None:
    with pytest.raises(DataError, match="larger than the limit of 1000 bytes"):
        load_dataset(f"{base}/iris.csv", DownloadPolicy(max_bytes=1000))


def test_undeclared_size_is_counted(base: str) -> None:
    with pytest.raises(DataError, match="larger than the limit of 100000 bytes"):
        load_dataset(f"{base}/chunked-big", DownloadPolicy(max_bytes=100_000))


def test_a_trickling_server_hits_the_whole_download_deadline(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(DataError, match=r"took longer than 1 s to download"):
        load_dataset(f"{base}/slow", DownloadPolicy(timeout_seconds=1))
    assert time.monotonic() - started < 6  # stopped well before the server's ~8 s


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (DownloadPolicy(schemes=("https",)), r"scheme 'http' is not allowed \(allowed: https\)"),
        (DownloadPolicy(hosts=("data.example.org",)), "host '127.0.0.1' is not allowed"),
        (DownloadPolicy(hosts=(".example.org",)), "host '127.0.0.1' is not allowed"),
    ],
)
def test_scheme_and_host_rules(base: str, policy: DownloadPolicy, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(f"{base}/iris.csv", policy)


def test_other_schemes_never_read_local_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_bytes(iris_csv())
    with pytest.raises(DataError, match="scheme 'file' is not allowed"):
        load_dataset(f"file://{secret}")


def test_subdomain_rule() -> None:
    policy = DownloadPolicy(hosts=(".example.org",))
    policy.check("https://data.example.org/x.csv")
    policy.check("https://example.org/x.csv")
    with pytest.raises(DataError):
        policy.check("https://badexample.org/x.csv")


def test_redirects_are_checked_too(base: str) -> None:
    port = base.rsplit(":", 1)[1]
    # Allowed host 127.0.0.1 redirecting to localhost (not allowed): refused at the redirect.
    target = f"http://localhost:{port}/iris.csv"
    with pytest.raises(DataError, match="host 'localhost' is not allowed"):
        load_dataset(f"{base}/redirect?to={target}", DownloadPolicy(hosts=("127.0.0.1",)))
    data = load_dataset(
        f"{base}/redirect?to={target}", DownloadPolicy(hosts=("127.0.0.1", "localhost"))
    )
    assert data.sha256 == IRIS.sha256


def test_cli_flags_reach_the_policy(base: str, tmp_path: Path) -> None:
    trainer = str(Path(sys.executable).parent / "modelops-trainer")
    args = [trainer, "train", "--version", "v1", "--output-dir", str(tmp_path / "m")]
    proc = subprocess.run(
        [*args, "--dataset", f"{base}/iris.csv", "--allowed-url-hosts", "data.example.org"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "host '127.0.0.1' is not allowed" in proc.stderr
    proc = subprocess.run(
        [*args, "--dataset", f"{base}/iris.csv", "--max-download-bytes", "100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "larger than the limit of 100 bytes" in proc.stderr
    proc = subprocess.run(
        [*args, "--dataset", f"{base}/iris.csv", "--download-timeout", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "must be a finite number greater than 0" in proc.stderr
