"""The admin endpoint (``handle_admin``): who may call it and what it does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.admin import ADMIN_PATH, TOKEN_FILE_ENV, handle_admin
from lossless.lifecycle import Lifecycle
from lossless.settings import Settings

TOKEN = "s3cret-token"


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return str(path)


@pytest.fixture
def lc() -> Lifecycle:
    return Lifecycle(Settings(drain_delay=30, shutdown_timeout=60))


def _call(
    lc: Lifecycle,
    token_file: str | None,
    method: str = "POST",
    *,
    auth: str | None = f"Bearer {TOKEN}",
    client: str = "127.0.0.1",
    path: str = ADMIN_PATH,
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": auth} if auth is not None else {}
    result = handle_admin(lc, method, path, headers, client, token_file=token_file)
    assert result is not None
    return result[0], json.loads(result[1])


def test_other_paths_are_not_handled(lc: Lifecycle, token_file: str) -> None:
    assert handle_admin(lc, "POST", "/", {}, "127.0.0.1", token_file=token_file) is None
    assert handle_admin(lc, "GET", "/readyz", {}, "127.0.0.1", token_file=token_file) is None


def test_post_starts_the_drain_and_get_reports_it(lc: Lifecycle, token_file: str) -> None:
    status, state = _call(lc, token_file, "GET")
    assert status == 200 and state["draining"] is False and state["delay_remaining"] == 0
    status, state = _call(lc, token_file, "POST")
    assert status == 202 and state["draining"] is True and state["started"] is True
    # D = 30 s: the thread may wait for the CPU between the drain and this answer
    assert 20 < float(str(state["delay_remaining"])) <= 30
    assert lc.draining and not lc.is_ready()
    status, state = _call(lc, token_file, "POST")  # idempotent: does not restart the drain
    assert status == 202 and state["started"] is False
    status, state = _call(lc, token_file, "GET", path=ADMIN_PATH + "?x=1")
    assert status == 200 and state["state"] == "draining" and state["since_t0"] is not None


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"client": "10.0.0.7"}, 403),
        ({"client": "::1"}, 202),
        ({"auth": None}, 401),
        ({"auth": "Bearer wrong"}, 401),
        ({"auth": f"Basic {TOKEN}"}, 401),
        ({"auth": f"bearer {TOKEN}"}, 202),
    ],
)
def test_only_loopback_callers_with_the_token(
    lc: Lifecycle, token_file: str, kwargs: dict[str, str | None], status: int
) -> None:
    got, body = _call(lc, token_file, **kwargs)  # type: ignore[arg-type]
    assert got == status, body
    assert lc.draining is (status == 202)


def test_headers_as_pairs_any_case(lc: Lifecycle, token_file: str) -> None:
    result = handle_admin(
        lc,
        "POST",
        ADMIN_PATH,
        [("authorization", f"Bearer {TOKEN}")],
        "127.0.0.1",
        token_file=token_file,
    )
    assert result is not None and result[0] == 202


def test_disabled_without_a_token_file(
    lc: Lifecycle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)
    status, body = _call(lc, None)
    assert status == 404 and TOKEN_FILE_ENV in str(body["error"])
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert _call(lc, str(empty))[0] == 404
    assert _call(lc, str(tmp_path / "missing"))[0] == 404
    assert not lc.draining


def test_token_file_from_the_environment(
    lc: Lifecycle, token_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_FILE_ENV, token_file)
    assert _call(lc, None)[0] == 202


def test_other_methods_are_refused(lc: Lifecycle, token_file: str) -> None:
    assert _call(lc, token_file, "DELETE")[0] == 405
    assert not lc.draining
