"""The OIP gRPC service on its own: generated code, wire compatibility, servicer, status codes.

The published clients are driven end to end in test_oip_clients.py; here the servicer is
called directly (transport-free data plane behind it), and a grpc.aio server in this process is
called with the checked-in messages for status codes and metrics.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from modelops_server.dataplane import DataPlane
from modelops_server.errors import InvalidRequest, NotFound, NotReady
from modelops_server.grpc_service import SERVICE_NAME, InferenceServicer, create_grpc_server
from modelops_server.metrics import Metrics
from modelops_server.oip import open_inference_grpc_pb2 as pb

OIP_DIR = Path(pb.__file__).parent
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
# Prints, for a generated module, every message's fields and the service's methods as JSON.
DESCRIBE = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
def fields(message, out):
    out[message.full_name] = {
        f.name: [f.number, f.type, f.label if hasattr(f, "label") else None]
        for f in message.fields
    }
    for nested in message.nested_types:
        fields(nested, out)
out = {}
for message in module.DESCRIPTOR.message_types_by_name.values():
    fields(message, out)
service = module.DESCRIPTOR.services_by_name["GRPCInferenceService"]
methods = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods}
print(json.dumps({"messages": out, "methods": methods}))
"""


def describe(python: str, module: str) -> dict:
    out = subprocess.run(
        [python, "-c", DESCRIBE, module], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_generated_modules_are_what_the_generator_writes(repo_root, tmp_path):
    subprocess.run([str(repo_root / "hack" / "gen-oip-grpc.sh"), str(tmp_path)], check=True)
    for name in ("open_inference_grpc_pb2.py", "open_inference_grpc_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (OIP_DIR / name).read_bytes(), (
            f"{name} is stale: run hack/gen-oip-grpc.sh"
        )


@pytest.mark.integration
def test_wire_compatible_with_the_published_clients(repo_root):
    ours = describe(sys.executable, "modelops_server.oip.open_inference_grpc_pb2")
    assert sorted(ours["methods"]) == sorted(
        ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"]
    )
    kserve_venv = subprocess.run(
        [str(repo_root / "hack" / "kserve-venv.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    theirs = {
        "tritonclient": describe(sys.executable, "tritonclient.grpc.service_pb2"),
        "kserve": describe(f"{kserve_venv}/bin/python", "kserve.protocol.grpc.grpc_predict_v2_pb2"),
    }
    for client, described in theirs.items():
        for method, types in ours["methods"].items():
            assert described["methods"][method] == types, (client, method)
        for message, fields in ours["messages"].items():
            other = described["messages"].get(message)
            assert other is not None, (client, message)
            for name, spec in fields.items():
                # Same number and type; a field a client does not know is only skipped.
                if name in other:
                    assert other[name] == spec, (client, message, name)
                else:
                    assert message == "inference.InferParameter", (client, message, name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def plane(knn_artifact, knn_model, settings_for):
    settings = settings_for(knn_artifact, host="127.0.0.1", grpc_port=free_port())
    data_plane = DataPlane(settings, knn_model, Metrics())
    asyncio.run(data_plane.start())
    return data_plane


def infer_request(x: np.ndarray, datatype: str = "FP64", raw: bool = True, **extra):
    request = pb.ModelInferRequest(model_name="iris", **extra)
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=list(x.shape))
    dtype = "<f4" if datatype == "FP32" else "<f8"
    if raw:
        request.raw_input_contents.append(x.astype(dtype).tobytes())
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    else:
        tensor.contents.fp64_contents.extend(x.ravel().tolist())
    return request


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_model_infer(plane, knn_model, datatype, raw, knn_pipeline):
    response = InferenceServicer(plane).ModelInfer(infer_request(ROWS, datatype, raw, id="r1"))
    assert (response.model_name, response.model_version, response.id) == ("iris", "knn", "r1")
    assert [o.name for o in response.outputs] == ["predict", "predict_proba"]
    x = ROWS.astype(np.float32).astype(np.float64) if datatype == "FP32" else ROWS
    labels_raw, proba_raw = response.raw_output_contents
    labels, offset = [], 0
    while offset < len(labels_raw):
        size = int.from_bytes(labels_raw[offset : offset + 4], "little")
        labels.append(labels_raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    assert labels == list(knn_pipeline.predict(x))
    proba = np.frombuffer(proba_raw, "<f8").reshape(list(response.outputs[1].shape))
    assert np.array_equal(proba, knn_pipeline.predict_proba(x))


def test_probes_and_metadata(plane):
    servicer = InferenceServicer(plane)
    assert servicer.ServerLive(pb.ServerLiveRequest()).live
    assert servicer.ServerReady(pb.ServerReadyRequest()).ready
    assert servicer.ModelReady(pb.ModelReadyRequest(name="iris")).ready
    assert servicer.ModelReady(pb.ModelReadyRequest(name="iris", version="knn")).ready
    meta = servicer.ModelMetadata(pb.ModelMetadataRequest(name="iris"))
    assert (meta.name, list(meta.versions), meta.platform) == ("iris", ["knn"], "sklearn")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input-0", "FP64", [-1, 4])
    ]
    assert servicer.ServerMetadata(pb.ServerMetadataRequest()).name == "modelops-server"
    plane.stop()
    assert not servicer.ServerReady(pb.ServerReadyRequest()).ready
    assert servicer.ServerLive(pb.ServerLiveRequest()).live  # liveness does not follow readiness
    with pytest.raises(NotReady):
        servicer.ModelReady(pb.ModelReadyRequest(name="iris"))


def test_errors_name_what_is_wrong(plane):
    servicer = InferenceServicer(plane)
    with pytest.raises(NotFound, match="'roses'"):
        servicer.ModelInfer(pb.ModelInferRequest(model_name="roses"))
    with pytest.raises(NotFound, match="'v9'"):
        servicer.ModelMetadata(pb.ModelMetadataRequest(name="iris", version="v9"))
    bad = infer_request(ROWS)
    bad.raw_input_contents[0] = bad.raw_input_contents[0][:-3]
    with pytest.raises(InvalidRequest, match="not a whole number"):
        servicer.ModelInfer(bad)
    with pytest.raises(InvalidRequest, match=r"inputs\[0\]\.datatype"):
        servicer.ModelInfer(infer_request(ROWS.astype(np.int64), "INT64"))
    with pytest.raises(InvalidRequest, match="outside"):
        servicer.ModelInfer(infer_request(ROWS * -1))
    extra = infer_request(ROWS)
    extra.raw_input_contents.append(b"")
    with pytest.raises(InvalidRequest, match="raw_input_contents"):
        servicer.ModelInfer(extra)


def test_status_codes_and_metrics_over_grpc(plane):
    async def scenario() -> dict[str, grpc.StatusCode]:
        server = create_grpc_server(plane)
        await server.start()
        codes = {}
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{plane.settings.grpc_port}"
            ) as channel:
                infer = channel.unary_unary(
                    f"/{SERVICE_NAME}/ModelInfer",
                    request_serializer=pb.ModelInferRequest.SerializeToString,
                    response_deserializer=pb.ModelInferResponse.FromString,
                )
                await infer(infer_request(ROWS))
                codes["ok"] = grpc.StatusCode.OK
                for name, request in {
                    "unknown": pb.ModelInferRequest(model_name="roses"),
                    "invalid": infer_request(ROWS * -1),
                    "too_many": infer_request(np.tile(ROWS, (400, 1))),
                }.items():
                    try:
                        await infer(request)
                    except grpc.aio.AioRpcError as exc:
                        codes[name] = exc.code()
        finally:
            await server.stop(grace=None)
        return codes

    codes = asyncio.run(scenario())
    assert codes == {
        "ok": grpc.StatusCode.OK,
        "unknown": grpc.StatusCode.NOT_FOUND,
        "invalid": grpc.StatusCode.INVALID_ARGUMENT,
        "too_many": grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    text = plane.metrics.render().decode()
    endpoint = f'endpoint="/{SERVICE_NAME}/ModelInfer"'
    assert f'api_requests_total{{code="200",{endpoint}}} 1.0' in text
    assert f'api_requests_total{{code="404",{endpoint}}} 1.0' in text
    assert f'api_errors_total{{{endpoint},kind="invalid_request"}} 1.0' in text
    assert 'api_predictions_total{model_version="knn",species="setosa"} 1.0' in text
