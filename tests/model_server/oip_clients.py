"""Drive a running model server with a published Open Inference Protocol client; print JSON.

    OIP_HTTP=http://127.0.0.1:P OIP_GRPC=127.0.0.1:G OIP_ROWS=rows.json python oip_clients.py CLIENT

CLIENT is triton-http, triton-grpc (tritonclient, in the workspace venv) or kserve-rest,
kserve-grpc (the KServe SDK, in its own venv: see kserve_client/pyproject.toml). Each runs in
a process of its own: the clients' generated protobuf modules and the server's define the same
``inference.*`` messages, which one process's protobuf pool cannot hold twice. Settings come
from the environment: importing kserve parses the command line (KServe's server flags).

The script only records what the client returns (readiness, metadata, labels and
probabilities for every row in FP32 and FP64, row by row and as one batch, error messages);
test_oip_clients.py compares it with the model's own predictions.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "iris"
DTYPES = {"FP32": np.float32, "FP64": np.float64}


def _labels(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def _result(labels: Any, proba: Any) -> dict[str, Any]:
    return {"labels": _labels(labels), "proba": np.asarray(proba, dtype=np.float64).tolist()}


def triton(kind: str, http_url: str, grpc_target: str, rows: np.ndarray) -> dict[str, Any]:
    if kind == "triton-http":
        import tritonclient.http as client

        url = http_url.removeprefix("http://")
        c = client.InferenceServerClient(url)
        modes = [  # (input binary, output binary, compression)
            (True, True, None),
            (False, False, None),
            (True, False, "gzip"),
            (False, True, "deflate"),
        ]
    else:
        import tritonclient.grpc as client  # type: ignore[no-redef]

        c = client.InferenceServerClient(grpc_target)
        modes = [(True, True, None)]
    from tritonclient.utils import InferenceServerException

    out: dict[str, Any] = {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "model_ready": c.is_model_ready(MODEL),
        "server_metadata": _plain(c.get_server_metadata()),
        "model_metadata": _plain(c.get_model_metadata(MODEL)),
        "results": {},
    }

    def infer(x: np.ndarray, datatype: str, mode: tuple[bool, bool, str | None]) -> Any:
        in_binary, out_binary, compression = mode
        tensor = client.InferInput("input-0", list(x.shape), datatype)
        extra: dict[str, Any] = {}
        if kind == "triton-http":
            tensor.set_data_from_numpy(x, binary_data=in_binary)
            outputs = [
                client.InferRequestedOutput(name, binary_data=out_binary)
                for name in ("predict", "predict_proba")
            ]
            if compression:
                extra["request_compression_algorithm"] = compression
        else:
            tensor.set_data_from_numpy(x)
            outputs = [client.InferRequestedOutput(n) for n in ("predict", "predict_proba")]
        result = c.infer(MODEL, [tensor], outputs=outputs, **extra)
        return result.as_numpy("predict"), result.as_numpy("predict_proba")

    for datatype, dtype in DTYPES.items():
        x = rows.astype(dtype)
        for i, mode in enumerate(modes):
            out["results"][f"{datatype}/batch/{i}"] = _result(*infer(x, datatype, mode))
        labels, proba = [], []
        for row in x:
            label, p = infer(row[None, :], datatype, modes[0])
            labels += _labels(label)
            proba += np.asarray(p).tolist()
        out["results"][f"{datatype}/rows"] = {"labels": labels, "proba": proba}
    # Default outputs (none named): every output, in binary over HTTP.
    tensor = client.InferInput("input-0", [1, 4], "FP64")
    tensor.set_data_from_numpy(rows[:1].astype(np.float64))
    default = c.infer(MODEL, [tensor])
    out["default_outputs"] = _result(default.as_numpy("predict"), default.as_numpy("predict_proba"))
    errors = {}
    for name, call in {
        "unknown_model": lambda: c.infer("roses", [tensor]),
        "bad_shape": lambda: c.infer(MODEL, [_tensor(client, kind, rows[:1, :3], "FP64")]),
        "bad_datatype": lambda: c.infer(
            MODEL, [_tensor(client, kind, rows[:1].astype(np.int64), "INT64")]
        ),
        "out_of_range": lambda: c.infer(MODEL, [_tensor(client, kind, rows[:1] * 100, "FP64")]),
    }.items():
        try:
            call()
            errors[name] = None
        except InferenceServerException as exc:
            errors[name] = {"status": str(exc.status()), "message": exc.message()}
    out["errors"] = errors
    return out


def _tensor(client: Any, kind: str, x: np.ndarray, datatype: str) -> Any:
    tensor = client.InferInput("input-0", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return value
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(value, preserving_proto_field_name=True)


async def kserve(kind: str, http_url: str, grpc_target: str, rows: np.ndarray) -> dict[str, Any]:
    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest
    from kserve.inference_client import RESTConfig

    if kind == "kserve-rest":
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        base = http_url
        out: dict[str, Any] = {
            "live": await rest.is_server_live(base),
            "ready": await rest.is_server_ready(base),
            "model_ready": await rest.is_model_ready(base, MODEL),
        }

        async def call(request: InferRequest) -> Any:
            return await rest.infer(base, request, model_name=MODEL)
    else:
        grpc_client = InferenceGRPCClient(grpc_target, timeout=30)
        out = {
            "live": await grpc_client.is_server_live(),
            "ready": await grpc_client.is_server_ready(),
            "model_ready": await grpc_client.is_model_ready(MODEL),
        }

        async def call(request: InferRequest) -> Any:
            return await grpc_client.infer(request)

    async def infer(x: np.ndarray, datatype: str, binary: bool) -> tuple[Any, Any]:
        tensor = InferInput("input-0", list(x.shape), datatype)
        tensor.set_data_from_numpy(x, binary_data=binary)
        response = await call(InferRequest(model_name=MODEL, infer_inputs=[tensor]))
        outputs = {o.name: o.as_numpy() for o in response.outputs}
        return outputs["predict"], outputs["predict_proba"]

    modes = [False, True] if kind == "kserve-rest" else [False]
    out["results"] = {}
    for datatype, dtype in DTYPES.items():
        x = rows.astype(dtype)
        for binary in modes:
            out["results"][f"{datatype}/batch/{int(binary)}"] = _result(
                *await infer(x, datatype, binary)
            )
        labels, proba = [], []
        for row in x:
            label, p = await infer(row[None, :], datatype, modes[-1])
            labels += _labels(label)
            proba += np.asarray(p).tolist()
        out["results"][f"{datatype}/rows"] = {"labels": labels, "proba": proba}
    errors = {}
    try:
        tensor = InferInput("input-0", [1, 4], "FP64")
        tensor.set_data_from_numpy(rows[:1].astype(np.float64))
        request = InferRequest(model_name="roses", infer_inputs=[tensor])
        if kind == "kserve-rest":
            await rest.infer(base, request, model_name="roses")
        else:
            await grpc_client.infer(request)
        errors["unknown_model"] = None
    except Exception as exc:
        errors["unknown_model"] = {"message": str(exc)}
    out["errors"] = errors
    return out


def main() -> int:
    clients = ("triton-http", "triton-grpc", "kserve-rest", "kserve-grpc")
    client = sys.argv[1] if len(sys.argv) == 2 else ""
    if client not in clients:
        print(f"usage: {sys.argv[0]} {{{','.join(clients)}}}", file=sys.stderr)
        return 2
    http_url, grpc_target = os.environ["OIP_HTTP"], os.environ["OIP_GRPC"]
    rows = np.asarray(json.loads(Path(os.environ["OIP_ROWS"]).read_text()), dtype=np.float64)
    if client.startswith("triton"):
        result = triton(client, http_url, grpc_target, rows)
    else:
        sys.argv = sys.argv[:1]
        result = asyncio.run(kserve(client, http_url, grpc_target, rows))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
