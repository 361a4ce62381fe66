"""Pods with several ports (issue 15, item 8) and replicas that ignore their port (issue 13).

Kubernetes: every container port (named or numbered) is the pod's own; a probe or an ``httpGet``
hook names the port it goes to (``port: probes`` or ``port: 8086``). In the lab each such port
gets a free port per replica, written ``{port:NAME}`` / ``{port:8086}`` in the command.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.manifest import load_deployment
from lossless.verify.lab.pod import PodTemplate
from lossless.verify.lab.prober import HTTPGetAction, ProbeSpec, resolve_port, run_handler
from lossless.verify.lab.process import port_keys, render_command
from lossless.verify.model import EventKind
from tests.verify.conftest import (
    PYTHON,
    assert_nothing_left,
    assert_passed,
    lab_session,
    load_json,
    run_cli,
)


@pytest.mark.parametrize(
    ("template", "ports", "expected"),
    [
        (["app", "--port", "{port}"], {}, ["app", "--port", "1000"]),
        (["run", "--probe-port", "{port:probe}", "--", "app", "$PORT"], {"probe": 2000},
         ["run", "--probe-port", "2000", "--", "app", "1000"]),
        (["x", "--admin={port:8086}", '{"json": {}}'], {"8086": 3000},
         ["x", "--admin=3000", '{"json": {}}']),
    ],
)  # fmt: skip
def test_render_command(template: list[str], ports: dict[str, int], expected: list[str]) -> None:
    assert render_command(template, 1000, ports) == expected


def test_port_keys_and_unknown_keys() -> None:
    assert port_keys(["a", "{port:probe}", "{port:8086}/{port:probe}"]) == ["probe", "8086"]
    with pytest.raises(LosslessError, match=r"\{port:admin\}"):
        render_command(["{port:admin}"], 1, {})


def test_resolve_port_table() -> None:
    ports = {"http": 1000, "8080": 1000, "probes": 2000, "8086": 2000}
    assert resolve_port(None, 1000, ports) == 1000
    assert resolve_port("probes", 1000, ports) == 2000
    assert resolve_port("8086", 1000, ports) == 2000
    assert resolve_port(4321, 1000, ports) == 4321
    with pytest.raises(LosslessError, match="'metrics'"):
        resolve_port("metrics", 1000, ports)
    ok, detail = asyncio.run(run_handler(HTTPGetAction("/", port="metrics"), 1, 0.1, ports))
    assert not ok and "metrics" in detail


def test_a_probe_port_that_is_not_a_container_port_is_an_error() -> None:
    probe = ProbeSpec(HTTPGetAction("/readyz", port="probes"))
    with pytest.raises(LosslessError, match=r"readiness probe port 'probes'.*\{port:probes\}"):
        PodTemplate(("app",), readiness=probe)
    PodTemplate(("app",), readiness=probe, ports=(("probes", "8086"),))  # fine


def test_manifest_ports(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(
        textwrap.dedent(
            """
            kind: Deployment
            spec:
              template:
                spec:
                  containers:
                    - name: app
                      ports:
                        - {name: http, containerPort: 8080}
                        - {name: probes, containerPort: 8086}
                      readinessProbe: {httpGet: {path: /readyz, port: probes}}
                      lifecycle:
                        stopSignal: SIGQUIT
                        preStop: {httpGet: {path: /drain, port: 8080}}
            """
        )
    )
    spec = load_deployment(path)
    assert spec.port_aliases == ("http", "8080")
    assert spec.ports == (("probes", "8086"),)
    assert spec.readiness is not None and spec.readiness.action == HTTPGetAction(
        "/readyz", port="probes"
    )
    assert spec.prestop == HTTPGetAction("/drain", port="8080")
    assert spec.stop_signal == "SIGQUIT"


PROBE_SERVER = textwrap.dedent(
    """
    import os, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    class App(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/" else 404); self.end_headers()
        def log_message(self, *a): pass
    class Probes(App):
        def do_GET(self):
            self.send_response(200 if self.path == "/readyz" else 404); self.end_headers()
    probes = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT_PROBES"])), Probes)
    threading.Thread(target=probes.serve_forever, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), App).serve_forever()
    """
)


def test_the_probe_goes_to_its_own_port(tmp_path: Path) -> None:
    """1. a server answering /readyz only on its probe port (404 on the main one) 2. a readiness
    probe on port ``probes`` 3. result: ready, and the probe went to the probe port."""
    script = tmp_path / "s.py"
    script.write_text(PROBE_SERVER)

    async def main() -> None:
        async with lab_session(tmp_path) as run:
            probe = ProbeSpec(HTTPGetAction("/readyz", port="probes"), period=0.1)
            template = PodTemplate(
                (PYTHON, str(script), "--probe={port:probes}"),
                readiness=probe,
                ports=(("probes",),),
            )
            pod = await run.lab.create(template, "v1-0")
            async with asyncio.timeout(10):
                while not pod.ready:
                    await run.lab.wait_changed(run.lab.generation, 0.1)
            probe_port = pod.ports["probes"]
            assert probe_port != pod.port
            ready = next(e for e in run.events if e.kind is EventKind.READY)
            assert f"on port probes :{probe_port}: 200" in ready.detail
            started = next(e for e in run.events if e.kind is EventKind.STARTED)
            assert f"--probe={probe_port}" in started.detail

    asyncio.run(main())


def test_lossless_run_with_its_probe_port_is_verified(tmp_path: Path) -> None:
    """The usual shape for a binary we cannot change: ``lossless run --probe-port
    {port:probe}`` in front of it; readiness on the probe port; rolling update → 0 failures."""
    out = tmp_path / "run"
    cmd = (
        f"{PYTHON} -m lossless run --probe-port {{port:probe}} --port {{port}} "
        "--drain-delay 3 --shutdown-timeout 10 -- "
        f"{PYTHON} -m uvicorn examples.app:app --host 127.0.0.1 --port {{port}} "
        "--log-level warning"
    )
    result = run_cli(
        "verify", "--cmd", cmd, "--replicas", "2", "--rate", "60", "--before", "1",
        "--after", "1", "--max-surge", "1", "--max-unavailable", "0",
        "--readiness-path", "/readyz", "--readiness-port", "probe", "--readiness-period", "0.5",
        "--out", str(out), "--json",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["failures"] == 0, (result.stderr, doc["causes"])
    assert_passed(result)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["ports"] == [["probe"]]
    events = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    probe_ports = {}
    for e in events:
        if e["kind"] == "started":
            probe_ports[e["replica"]] = int(e["detail"].split("port probe ")[1].split(":")[0])
    readies = [e for e in events if e["kind"] == "ready"]
    assert len(readies) >= 4
    for e in readies:
        assert f"on port probe :{probe_ports[e['replica']]}: 200" in e["detail"]
    assert_nothing_left(out)


def test_a_command_that_ignores_its_port_gets_one_clear_error(tmp_path: Path) -> None:
    """Issue 13: ``python3 -m http.server 18600`` ignores {port}: one line naming {port} and
    $PORT, exit 2, not a "no readiness probe" verdict."""
    out = tmp_path / "ignored"
    result = run_cli(
        "verify", "--cmd", f"{PYTHON} -m http.server 0 --bind 127.0.0.1", "--replicas", "1",
        "--ready-timeout", "3", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "not listening on its assigned port" in lines[0]
    assert "{port}" in lines[0] and "$PORT" in lines[0]
    assert "Traceback" not in result.stderr
    assert_nothing_left(out)
