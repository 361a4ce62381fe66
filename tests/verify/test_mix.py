"""The request mix: --method, --body TEXT|@FILE, --header, a weighted --mix; idempotency per kind.

1. the generator sends each kind's method, headers and body to a real server (which echoes what
   it received), drawing the kinds with their weights, seeded;
2. ``records.csv`` keeps each request's kind (and older files without the column still read);
3. bad input is a one-line error naming the flag;
4. end to end, a 20 % POST mix behind the ingress on a naive app: the report names each kind,
   whether it is idempotent, and how many of its failures the proxy did not retry.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.load.generator import run, run_load
from lossless.verify.load.mix import RequestKind, RequestMix, parse_body, parse_header
from lossless.verify.model import Clock, Endpoint, ErrorClass
from lossless.verify.results import RunWriter, read_run
from tests.verify.conftest import NAIVE_APP, assert_one_line_error, load_json, run_cli

from .misbehaving import StaticView, serve


def test_each_kind_is_sent_as_written_and_drawn_with_its_weight(tmp_path: Path) -> None:
    body = tmp_path / "order.json"
    body.write_bytes(b'{"item": 42}')
    headers = (parse_header("X-Test: yes"),)
    mix = RequestMix.parse(["80 GET /echo-request", f"20 POST /echo-request @{body}"], headers)
    assert [k.idempotent for k in mix.kinds] == [True, False]

    async def main(port: int) -> list[tuple[int, str, ErrorClass]]:
        view = StaticView([Endpoint("r1", "127.0.0.1", port)], 2)
        records = await run_load(view, Clock(), rate=500, duration=1.0, mix=mix, seed=3)
        return [(r.kind, r.replica, r.error) for r in records]

    with serve() as port:
        seen = run(main(port))
    assert {error for _, _, error in seen} == {ErrorClass.NONE}
    # what the server received, per kind (the server names it in x-lossless-replica)
    assert {replica for kind, replica, _ in seen if kind == 0} == {"GET-0-yes"}
    assert {replica for kind, replica, _ in seen if kind == 1} == {"POST-12-yes"}
    counts = Counter(kind for kind, _, _ in seen)
    assert counts[0] + counts[1] == 500 and 60 <= counts[1] <= 140, (
        counts
    )  # 20 % of 500, within 4.5 standard deviations
    again = RequestMix.parse(["80 GET /a", "20 POST /b"], ())
    first, second = again.chooser(3), again.chooser(3)
    assert [first() for _ in range(50)] == [second() for _ in range(50)]  # seeded


def test_records_keep_their_kind_and_old_files_still_read(tmp_path: Path) -> None:
    from lossless.verify.model import Record

    with RunWriter(tmp_path / "new") as writer:
        writer.record(Record(0, 0.0, 0.0, 0.1, 0.2, 200, 2, ErrorClass.NONE, "r", 1, False, 0, 1))
    assert [r.kind for r in read_run(tmp_path / "new").records] == [1]
    old = tmp_path / "old"
    old.mkdir()
    (old / "records.csv").write_text(
        "seq,intended,sent,first_byte,end,status,bytes,error,replica,conn_id,reused,client\n"
        "0,0.0,0.0,0.1,0.2,200,2,,r,1,0,0\n"
    )
    (old / "timeline.jsonl").write_text("")
    (old / "settings.json").write_text("{}")
    assert [r.kind for r in read_run(old).records] == [0]


def test_request_kind_bytes() -> None:
    kind = RequestKind("POST", "/orders", b"{}", (("X-A", "1"),))
    head = kind.head("127.0.0.1", 8080, close=True)
    assert head.startswith(b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert b"\r\nX-A: 1\r\nContent-Length: 2\r\nConnection: close\r\nx-lossless-seq: " in head
    assert kind.name == "POST /orders" and not kind.idempotent
    assert RequestKind("PUT", "/x").idempotent


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: parse_header("no colon"), "--header 'no colon'"),
        (lambda: parse_header("Host: x"), "set by the load generator"),
        (lambda: parse_body("@/nonexistent/body.json"), "--body @/nonexistent/body.json"),
        (lambda: RequestMix.parse(["x GET /"], ()), "weight 'x' is not a number"),
        (lambda: RequestMix.parse(["10 GET"], ()), "expected 'WEIGHT METHOD PATH"),
        (lambda: RequestMix.parse(["0 GET /"], ()), "weight must be > 0"),
        (lambda: RequestKind("G T", "/"), "not an HTTP method"),
    ],
)
def test_bad_request_specs_name_the_flag(call: object, needle: str) -> None:
    with pytest.raises(LosslessError) as info:
        call()  # type: ignore[operator]
    assert needle in str(info.value)


def test_cli_rejects_bad_mix_flags_in_one_line(tmp_path: Path) -> None:
    result = run_cli("verify", "--cmd", "true", "--header", "bad")
    assert_one_line_error(result, "--header 'bad'")
    result = run_cli("verify", "--cmd", "true", "--mix", "80 GET /", "--method", "POST")
    assert_one_line_error(result, "--mix replaces --method")
    result = run_cli("verify", "--cmd", "true", "--body", f"@{tmp_path / 'missing'}")
    assert_one_line_error(result, "--body @", "cannot read")


@pytest.mark.requires("haproxy")
def test_a_post_mix_behind_the_ingress_reports_each_kind(tmp_path: Path) -> None:
    """4. uvicorn stops listening at SIGTERM while HAProxy still routes to it: the report shows,
    per kind, whether it is idempotent and how its failures and retries went."""
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", NAIVE_APP, "--traffic", "ingress", "--out", str(out), "--json",
        "--mix", "80 GET /", "--mix", '20 POST /orders {"item": 1}',
        "--header", "Content-Type: application/json",
        "--replicas", "2", "--rate", "100", "--before", "1", "--after", "1",
        "--max-surge", "1", "--max-unavailable", "0", "--propagation-delay", "1±0.2",
        "--readiness-path", "/readyz", "--readiness-period", "0.5",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    doc = load_json(result.stdout)
    kinds = doc["request_kinds"]
    assert set(kinds) == {"GET /", "POST /orders"}
    assert kinds["GET /"]["idempotent"] is True and kinds["POST /orders"]["idempotent"] is False
    assert kinds["GET /"]["requests"] + kinds["POST /orders"]["requests"] == doc["requests"]
    assert 0.1 < kinds["POST /orders"]["requests"] / doc["requests"] < 0.3
    for row in kinds.values():  # every failure and every retry is in exactly one kind
        assert {"failures", "retried", "not_retried"} <= set(row)
    assert sum(k["failures"] for k in kinds.values()) == doc["failures"]
    assert sum(k["retried"] for k in kinds.values()) == doc["retried"]
    assert doc["failures"] + doc["retried"] > 0
    text = run_cli("report", str(out)).stdout
    assert "  POST /orders" in text and "not idempotent" in text
    assert "failed without a proxy retry" in text and "saved by a proxy retry" in text
    csv_methods = {line.split(",")[9] for line in _vegeta(out).splitlines()}
    assert csv_methods == {"GET", "POST"}


def _vegeta(out: Path) -> str:
    target = out / "results.csv"
    result = run_cli("report", str(out), "--export", "vegeta-csv", "--output", str(target))
    assert target.exists(), result.stderr
    return target.read_text()
