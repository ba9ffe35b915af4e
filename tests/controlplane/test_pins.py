"""Unit checks of the pinned versions and the generated certificates (no cluster needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelops_testenv import ETCD_VERSION, K8S_VERSION, KWOK_VERSION, certs

ROOT = Path(__file__).resolve().parents[2]
GO_MOD = (ROOT / "hack" / "k8s" / "go.mod").read_text()

# The staging modules of k8s.io/kubernetes v1.36 (its go.mod maps each to ./staging).
STAGING_136 = [
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "cri-streaming",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
    "streaming",
]


@pytest.mark.unit
def test_python_pins_match_go_mod() -> None:
    assert re.search(rf"^\tk8s\.io/kubernetes {re.escape(K8S_VERSION)}\b", GO_MOD, re.M)
    assert re.search(rf"^\tgo\.etcd\.io/etcd/server/v3 {re.escape(ETCD_VERSION)}\b", GO_MOD, re.M)
    script = (ROOT / "hack" / "build-k8s.sh").read_text()
    assert f'KWOK_VERSION="{KWOK_VERSION}"' in script


@pytest.mark.unit
def test_every_staging_module_is_replaced_at_the_matching_version() -> None:
    staging = "v0." + K8S_VERSION.removeprefix("v1.")
    replaced = dict(re.findall(r"^\tk8s\.io/(\S+) => k8s\.io/\S+ (\S+)$", GO_MOD, re.M))
    assert sorted(replaced) == sorted(STAGING_136)
    assert len(replaced) == 33
    assert set(replaced.values()) == {staging}


@pytest.mark.unit
def test_certificates(tmp_path: Path) -> None:
    files = certs.generate(tmp_path)
    serving = x509.load_pem_x509_certificate(files.serving_cert.read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    admin = x509.load_pem_x509_certificate(files.admin_cert.read_bytes())
    orgs = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    client_ca = x509.load_pem_x509_certificate(files.client_ca.read_bytes())
    assert admin.issuer == client_ca.subject
    assert files.sa_key.stat().st_mode & 0o077 == 0


@pytest.mark.unit
def test_the_real_nodes_binaries_are_built_and_documented_at_their_pins() -> None:
    from modelops_testenv.binaries import CNI_PLUGINS

    tools = re.search(r"^tool \((.*?)^\)", GO_MOD, re.M | re.S)
    assert tools is not None
    for cmd in ("kubelet", "kube-proxy", "kubectl"):
        assert f"k8s.io/kubernetes/cmd/{cmd}\n" in tools.group(1)
        assert (
            cmd in (ROOT / "hack" / "build-k8s.sh").read_text().split("BINARIES=(")[1].split(")")[0]
        )
    script = (ROOT / "hack" / "build-node.sh").read_text()
    pins = dict(re.findall(r'^([A-Z]+)_VERSION="(v[0-9.]+)"$', script, re.M))
    assert set(pins) == {"CONTAINERD", "RUNC"}
    # CoreDNS: the wrapper module's requirement (only the plugins the node uses).
    coredns = (ROOT / "hack" / "coredns" / "go.mod").read_text()
    found = re.search(r"^require github\.com/coredns/coredns (v[0-9.]+)$", coredns, re.M)
    assert found is not None and "coredns/go.mod" in script
    pins["COREDNS"] = found.group(1)
    doc = (ROOT / "docs" / "real-node.md").read_text()
    for version in pins.values():
        assert f"**{version}**" in doc
    plugins = re.search(r"^CNI_PLUGINS=\((.*)\)$", script, re.M)
    assert plugins is not None and tuple(plugins.group(1).split()) == CNI_PLUGINS
