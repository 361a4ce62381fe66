"""Registry URLs, the instance identity and the command-line flags: bad input is one line and
exit 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from tests.discovery.conftest import APPS, ROOT

from lossless.discovery import Instance, registry_from_url
from lossless.discovery.cli import add_arguments, attach_from_args
from lossless.discovery.consul import ConsulRegistrar
from lossless.discovery.etcd import EtcdRegistrar
from lossless.discovery.urls import etcd_from_url
from lossless.discovery.zookeeper import ZooKeeperRegistrar
from lossless.errors import LosslessError
from lossless.etcdv3 import prefix_end
from lossless.lifecycle import Lifecycle
from lossless.settings import Settings

INSTANCE = Instance("orders", "orders-1", "10.0.0.7", 8000, {"version": "2"})


def test_urls_name_the_registry_and_its_options() -> None:
    etcd = registry_from_url("etcd://10.0.0.1:2379,10.0.0.2/apps/?ttl=7", INSTANCE)
    assert isinstance(etcd, EtcdRegistrar)
    assert etcd.client.endpoints == [("10.0.0.1", 2379), ("10.0.0.2", 2379)]
    assert etcd.key == "/apps/orders/orders-1" and etcd.ttl == 7
    zk = registry_from_url("zk://zk1,zk2:2182?session_timeout=5s", INSTANCE)
    assert isinstance(zk, ZooKeeperRegistrar)
    assert zk.hosts == "zk1:2181,zk2:2182" and zk.path == "/services/orders/orders-1"
    assert zk.expires_after == 5
    consul = registry_from_url("consul://[::1]?check=http&ttl=4", INSTANCE)
    assert isinstance(consul, ConsulRegistrar)
    assert (consul.host, consul.port, consul.check) == ("::1", 8500, "http")
    assert consul.definition()["Check"]["HTTP"] == "http://10.0.0.7:8000/readyz"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x", "unknown scheme 'foo'"),
        ("127.0.0.1:2379", "no scheme"),
        ("localhost:2379", "unknown scheme 'localhost'"),
        ("etcd://", "no host"),
        ("etcd://h:99999/x", "bad port '99999'"),
        ("etcd://h:abc", "bad port 'abc'"),
        ("etcd://h/x?bogus=1", "unknown option 'bogus' for etcd"),
        ("etcd://h/x?ttl=soon", "ttl='soon' is not a duration"),
        ("etcd://h/x?ttl=0", "ttl must be at least 1 s"),
        ("etcd://h/x?ttl=1.5", "whole seconds"),
        ("zookeeper://h?session_timeout=-1", "session_timeout must be at least"),
        ("consul://h/path", "takes no path"),
        ("consul://a,b", "one agent"),
        ("consul://h?check=tcp", "check must be 'ttl' or 'http'"),
        ("consul://h?deregister_after=10s", "deregister_after must be at least 60 s"),
        ("etcd://user:pw@h", "credentials"),
    ],
)
def test_bad_urls_are_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(LosslessError) as info:
        registry_from_url(url, INSTANCE)
    text = str(info.value)
    assert message in text and "\n" not in text and url in text
    assert info.value.exit_code == 2


def test_instance_json_round_trip_and_detection() -> None:
    data = json.loads(INSTANCE.to_json())
    assert data == {
        "service": "orders",
        "id": "orders-1",
        "address": "10.0.0.7",
        "port": 8000,
        "metadata": {"version": "2"},
    }
    assert Instance.from_json(INSTANCE.to_json()) == INSTANCE
    env = {"POD_IP": "10.1.2.3", "POD_NAME": "orders-7d9f", "LOSSLESS_ZONE": "z1"}
    found = Instance.detect("orders", 8080, env=env)
    assert (found.address, found.id, dict(found.metadata)) == (
        "10.1.2.3",
        "orders-7d9f",
        {"zone": "z1"},
    )
    env["LOSSLESS_ADVERTISE_ADDRESS"] = "svc.example"
    assert Instance.detect("orders", 8080, env=env).address == "svc.example"
    assert Instance.detect("o", 1, bind_host="10.9.9.9", env={}).address == "10.9.9.9"
    with pytest.raises(LosslessError, match="service name 'a b'"):
        Instance("a b", "x", "h", 1)
    with pytest.raises(ValueError):
        Instance.from_json(b'{"service": "x"}')


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_and_environment() -> None:
    lc = Lifecycle(Settings())
    assert attach_from_args(lc, _args(), 8000, env={}) == []
    with pytest.raises(LosslessError, match="needs --service-name"):
        attach_from_args(lc, _args("--registry", "etcd://h"), 8000, env={})
    with pytest.raises(LosslessError, match="fixed --port"):
        attach_from_args(lc, _args("--registry", "etcd://h", "--service-name", "s"), 0, env={})
    env = {
        "LOSSLESS_REGISTRY": "etcd://h1/a consul://h2",
        "LOSSLESS_SERVICE_NAME": "svc",
        "LOSSLESS_REGISTRY_REQUIRED": "false",
        "LOSSLESS_REGISTRY_TIMEOUT": "500ms",
    }
    attached = attach_from_args(lc, _args(), 8000, env=env)
    assert [a.registrar.kind for a in attached] == ["etcd", "consul"]
    assert [a.check_name for a in attached] == ["registry", "registry-2"]
    assert all(not a.required and a.timeout == 0.5 for a in attached)
    flags = _args("--registry", "etcd://h", "--service-name", "s", "--registry-required")
    (one,) = attach_from_args(Lifecycle(Settings()), flags, 8000, env=env)
    assert one.required and one.registrar.instance.service == "s"
    with pytest.raises(LosslessError, match="LOSSLESS_REGISTRY_REQUIRED"):
        attach_from_args(
            Lifecycle(Settings()), _args(), 1, env={**env, "LOSSLESS_REGISTRY_REQUIRED": "maybe"}
        )


@pytest.mark.parametrize(
    "extra",
    [
        ["--registry", "foo://x", "--service-name", "a"],
        ["--registry", "etcd://127.0.0.1:2379/x?ttl=0", "--service-name", "a"],
        ["--registry", "etcd://127.0.0.1", "--service-name", "not valid"],
        ["--registry", "etcd://127.0.0.1"],
    ],
)
def test_serve_with_a_bad_registry_exits_2_with_one_line(extra: list[str]) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.discovery.serve_with_registry",
            "serve",
            "apps:asgi",
            *("--app-dir", str(APPS), "--port", "1"),
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossless serve: error: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_etcd_from_url_for_readers() -> None:
    client, prefix, ttl = etcd_from_url("etcd://e1:2380/apps?ttl=4")
    assert (client.endpoints, prefix, ttl) == ([("e1", 2380)], "/apps", 4)
    with pytest.raises(LosslessError, match="not an etcd:// URL"):
        etcd_from_url("consul://h")


def test_prefix_end() -> None:
    assert prefix_end("/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
