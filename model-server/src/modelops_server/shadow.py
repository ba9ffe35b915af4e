"""Shadow traffic: a copy of every prediction request goes to a candidate server, off the path.

The handler answers the client first and only puts the request on a bounded queue (a full queue
drops the copy and counts it: a slow candidate can never slow the client or grow memory). A few
workers send the copies over kept-alive connections, compare the candidate's labels with this
server's and count the result (``api_shadow_total``), and keep the candidate's answer with this
server's prediction. When the client's feedback reaches this server, the candidate's answer is
judged here (``api_shadow_feedback_total``: its live accuracy on real clients' traffic, while its
answers are never returned) and the feedback is relayed to the candidate too, for its own
``api_feedback_total``. Judged here, no row is lost when the candidate has several replicas: the
relayed feedback lands on any of them, and only the one that answered the copy can count it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from modelops_contract.oip import decode_bytes_tensor

from .feedback import ShadowAnswer

if TYPE_CHECKING:
    from .feedback import FeedbackStore
    from .metrics import Metrics
    from .model import LoadedModel
    from .settings import ServerSettings

log = logging.getLogger("modelops_server.shadow")
AGREE, DISAGREE, FAILED, DROPPED = "agree", "disagree", "failed", "dropped"
BINARY_HEADER = "inference-header-content-length"
FEEDBACK_PATH = "/feedback"


class _Connection:
    """One kept-alive HTTP/1.1 connection to the shadow (our own server always sends
    Content-Length, so this is all the client it needs).

    The candidate closes a connection that idled past its keep-alive timeout: one whose close
    was already read is replaced before sending, and a request that crossed the close on the
    wire (no byte of an answer on a reused connection) is sent once more on a new one, as
    RFC 9112 §9.3.1 allows. Without that, a worker that idles between copies would count every
    copy after a pause as failed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(
        self, path: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        head = f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers)
        request = f"{head}content-length: {len(body)}\r\n\r\n".encode() + body
        reused = await self._open()
        first = await self._send(request)
        if not first and reused:
            self.close()
            await self._open()
            first = await self._send(request)
        status = int(first.split(b" ", 2)[1])
        assert self.reader is not None
        answer: dict[str, str] = {}
        while line := (await self.reader.readline()).strip():
            name, _, value = line.decode("latin-1").partition(":")
            answer[name.strip().lower()] = value.strip()
        content = await self.reader.readexactly(int(answer.get("content-length", "0")))
        if answer.get("connection", "").lower() == "close":
            self.close()
        return status, answer, content

    async def _open(self) -> bool:
        """Whether the kept-alive connection is still there to reuse (else a new one)."""
        writer, reader = self.writer, self.reader
        alive = writer is not None and not writer.is_closing()
        if alive and reader is not None and not reader.at_eof():
            return True
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return False

    async def _send(self, request: bytes) -> bytes:
        """The answer's status line; empty if the connection closed before any byte of it."""
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(request)
            return await self.reader.readline()
        except ConnectionError:  # reset: the candidate had closed it
            return b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# (path, headers, body, this server's prediction id or "", this server's labels or None)
_Copy = tuple[str, list[tuple[str, str]], bytes, str, list[str] | None]


class Shadow:
    def __init__(self, settings: ServerSettings, metrics: Metrics, store: FeedbackStore) -> None:
        assert settings.shadow_url is not None
        host, _, port = settings.shadow_url.removeprefix("http://").rpartition(":")
        self.host, self.port = host.strip("[]"), int(port or 80)
        self.metrics, self.store = metrics, store
        self.timeout = settings.shadow_timeout
        self.workers = settings.shadow_concurrency
        self.queue: asyncio.Queue[_Copy] = asyncio.Queue(settings.shadow_queue)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, model: LoadedModel) -> None:
        self.tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]
        log.info("shadowing", extra={"shadow": f"{self.host}:{self.port}"})

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()

    def copy(
        self, path: str, headers: dict[str, str], body: bytes, prediction_id: str, labels: list[str]
    ) -> None:
        """Queue a copy of a request this server has answered (never waits)."""
        forwarded = [("content-type", headers.get("content-type", "application/json"))]
        if BINARY_HEADER in headers:
            forwarded.append((BINARY_HEADER, headers[BINARY_HEADER]))
        try:
            self.queue.put_nowait((path, forwarded, body, prediction_id, labels))
        except asyncio.QueueFull:
            self.metrics.count_shadow("", DROPPED)

    def relay_feedback(self, shadow_id: str, species: Sequence[str]) -> None:
        body = orjson.dumps({"prediction_id": shadow_id, "species": list(species)})
        with contextlib.suppress(asyncio.QueueFull):  # the shadow's own metrics show the gap
            self.queue.put_nowait(
                (FEEDBACK_PATH, [("content-type", "application/json")], body, "", None)
            )

    async def _work(self) -> None:
        connection = _Connection(self.host, self.port)
        while True:
            path, headers, body, prediction_id, labels = await self.queue.get()
            try:
                status, answer_headers, answer = await asyncio.wait_for(
                    connection.post(path, headers, body), self.timeout
                )
            except (TimeoutError, OSError, EOFError, ValueError, IndexError) as exc:
                connection.close()
                if labels is not None:
                    self.metrics.count_shadow("", FAILED)
                log.debug("shadow copy failed", extra={"error": repr(exc)})
                continue
            if labels is None:
                continue  # a relayed feedback
            if status != 200:
                self.metrics.count_shadow("", FAILED)
                continue
            self._compare(answer_headers, answer, prediction_id, labels)

    def _compare(
        self, headers: dict[str, str], answer: bytes, prediction_id: str, labels: list[str]
    ) -> None:
        try:
            version, shadow_id, shadow_labels = read_answer(headers, answer)
        except (ValueError, KeyError, TypeError, IndexError):
            self.metrics.count_shadow("", FAILED)
            return
        if prediction_id:
            # Kept for up to FEEDBACK_CAPACITY predictions: the few distinct strings shared.
            kept = tuple(sys.intern(label) for label in shadow_labels)
            self.store.attach_shadow(
                prediction_id, ShadowAnswer(shadow_id, sys.intern(version), kept)
            )
        self.metrics.count_shadow(version, AGREE if shadow_labels == labels else DISAGREE)


def read_answer(headers: dict[str, str], answer: bytes) -> tuple[str, str, list[str]]:
    """(model version, prediction id, labels) of a server's answer to a prediction request:
    seed, batch, or OIP infer (JSON or binary tensor extension)."""
    size = headers.get(BINARY_HEADER)
    raw = b""
    if size is not None:
        answer, raw = answer[: int(size)], answer[int(size) :]
    body: dict[str, Any] = orjson.loads(answer)
    version = str(body.get("model_version") or "")
    if "species" in body:
        return version, str(body.get("prediction_id", "")), [str(body["species"])]
    if "predictions" in body:
        labels = [str(p["species"]) for p in body["predictions"]]
        return version, str(body.get("prediction_id", "")), labels
    shadow_id = str((body.get("parameters") or {}).get("prediction_id", ""))
    offset = 0
    for output in body["outputs"]:
        data_size = (output.get("parameters") or {}).get("binary_data_size")
        if output["name"] == "predict":
            if data_size is None:
                return version, shadow_id, [str(v) for v in output["data"]]
            return version, shadow_id, decode_bytes_tensor(raw[offset : offset + int(data_size)])
        offset += int(data_size or 0)
    raise KeyError("the answer has no predict output")
