"""The C-parsed YAML source: exact positions, YAML 1.2 scalars, duplicates, aliases, merge keys,
limits, and the parallel loader giving exactly what the serial one gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.check.conftest import ROOT, RunCli

from lossless.check import yaml_source
from lossless.check.yaml_source import Input, Source, load_documents, load_inputs

MANIFEST = """\
# a comment
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  template:
    spec:
      containers:
        - name: app   # trailing comment
          image: "web:1"
          ports:
          - containerPort: 8080
          args: [--a, --b]
"""


def where(text: str, *path: str | int) -> tuple[int, int, int]:
    [document], errors = load_documents(Source("x.yaml", text))
    assert errors == []
    return document.locate((), path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("kind",), (2, 0, 4)),
        (("metadata", "name"), (3, 11, 4)),
        (("metadata", "labels", "app"), (3, 31, 3)),
        (("spec", "template", "spec", "containers", 0), (8, 10, 1)),
        (("spec", "template", "spec", "containers", 0, "image"), (9, 10, 5)),
        (("spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"), (11, 12, 13)),
        (("spec", "template", "spec", "containers", 0, "args", 1), (12, 22, 1)),
        # The deepest existing step answers for a missing field.
        (("spec", "template", "spec", "containers", 0, "lifecycle"), (8, 10, 1)),
        (("status",), (1, 0, 0)),
    ],
)
def test_every_key_and_item_has_its_written_position(
    path: tuple[str | int, ...], expected: tuple[int, int, int]
) -> None:
    assert where(MANIFEST, *path) == expected


def test_yaml_12_core_scalars() -> None:
    text = "a: yes\nb: 0x1F\nc: 010\nd: 1.5\ne: ~\nf: '8080'\ng: true\nh: 2024-01-01\ni: !!str 5\n"
    [document], _ = load_documents(Source("x.yaml", text))
    assert document.data == {
        "a": "yes",
        "b": 31,
        "c": 10,
        "d": 1.5,
        "e": None,
        "f": "8080",
        "g": True,
        "h": "2024-01-01",
        "i": "5",
    }


def test_duplicate_key_last_wins_with_its_position() -> None:
    text = "x: 0\nspec:\n  replicas: 1\n  other: 2\n  replicas: 3\n"
    [document], _ = load_documents(Source("x.yaml", text))
    assert document.data["spec"] == {"replicas": 3, "other": 2}
    [dup] = document.duplicates
    assert (dup.key, dup.line, dup.column, dup.first_line) == ("replicas", 4, 2, 2)
    assert document.locate((), ("spec", "replicas")) == (4, 2, 8)
    assert document.locate((), ("spec", "other")) == (3, 2, 5)


def test_aliases_and_merge_keys() -> None:
    text = (
        "base: &base\n  image: web\n  port: 80\n"
        "a:\n  <<: *base\n  port: 81\n"
        "b: *base\n"
        "c: [*base, 2]\n"
    )
    [document], _ = load_documents(Source("x.yaml", text))
    assert document.data["a"] == {"port": 81, "image": "web"}
    assert document.data["b"] is document.data["base"]
    assert document.locate((), ("a", "port")) == (5, 2, 4)
    assert document.locate((), ("a", "image")) == (1, 2, 5)  # from the merged map
    assert document.locate((), ("b", "port")) == (2, 2, 4)  # through the alias
    assert document.locate((), ("c", 1)) == (7, 11, 1)


def test_documents_offsets_and_list_items() -> None:
    text = "---\napiVersion: v1\nkind: List\nitems:\n- kind: A\n  x: 1\n- kind: B\n  y: 2\n---\n"
    text += "\n# only a comment\n---\nkind: C\n"
    documents, errors = load_documents(Source("x.yaml", text))
    assert errors == []
    assert [d.index for d in documents] == [0, 2]
    assert (documents[0].start, documents[0].end) == (1, 8)
    assert documents[0].locate(("items", 1), ("y",)) == (7, 2, 1)
    assert documents[0].locate(("items", 1), ()) == (6, 2, 0)
    assert documents[1].locate((), ("kind",)) == (12, 0, 4)


def test_too_deep_is_one_error_with_a_line() -> None:
    text = "ok: 1\n---\n" + "a: " + "[" * 300 + "]" * 300 + "\n"
    documents, errors = load_documents(Source("x.yaml", text))
    assert len(documents) == 1
    [error] = errors
    assert "nests too deeply" in error.message and error.line == 3


def many_files(directory: Path) -> list[Input]:
    """Thirty files, one of them broken at a known line, and one big file of many documents."""
    inputs = []
    for i in range(30):
        path = directory / f"f{i:02d}.yaml"
        body = MANIFEST.replace("name: web", f"name: web{i}")
        if i == 7:
            body += "---\nkind: X\nbad: [\n"
        path.write_text(body + "---\n" + body, encoding="utf-8")
        inputs.append(Input(str(path), "yaml"))
    big = directory / "big.yaml"
    # Non-ASCII text and a BOM: the pieces are cut by characters but read by bytes.
    pieces = [MANIFEST.replace("a comment", f"café ☕ {i}") for i in range(400)]
    pieces[250] = "kind: Broken\nx: {\n"
    big.write_text("\ufeff" + "---\n".join(pieces), encoding="utf-8")
    inputs.append(Input(str(big), "yaml"))
    return inputs


def summary(loaded: list[yaml_source.Loaded]) -> list[object]:
    out: list[object] = []
    for item in loaded:
        documents = [
            (d.index, d.start, d.end, d.data, list(d.positions), d.source.path, d.duplicates)
            for d in item.documents
        ]
        out.append((item.input.path, documents, [str(e) for e in item.errors]))
    assert out[-1][1], "the big file has documents"
    return out


def test_parallel_loading_equals_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small limits so thirty small files go to the pool and the big file is cut into pieces.
    monkeypatch.setattr(yaml_source, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(yaml_source, "CHUNK_BYTES", 20_000)
    inputs = many_files(tmp_path)
    serial = load_inputs(inputs, jobs=1)
    parallel = load_inputs(inputs, jobs=3)
    assert summary(parallel) == summary(serial)
    big = serial[-1]
    # Documents before the broken one are kept, the error names its line in the whole file.
    assert len(big.documents) == 250
    [error] = big.errors
    assert error.line == 250 * (MANIFEST.count("\n") + 1) + 3  # the line after "x: {"
    assert len(serial[7].documents) == 1 and serial[7].errors[0].line == 17


def test_check_output_is_the_same_on_one_or_many_cores(cli: RunCli, tmp_path: Path) -> None:
    for i in range(40):
        text = (ROOT / "bench" / "data" / "microservices-demo.yaml").read_text(encoding="utf-8")
        text = re.sub(r"^metadata:\n", f"metadata:\n  namespace: ns{i}\n", text, flags=re.M)
        (tmp_path / f"m{i}.yaml").write_text(text, encoding="utf-8")
    one = cli(".", "--format", "json", "--jobs", "1", cwd=tmp_path)
    many = cli(".", "--format", "json", "--jobs", "2", cwd=tmp_path)
    assert one.returncode == many.returncode == 1
    assert one.stdout == many.stdout and '"line"' in one.stdout
    assert one.stderr == many.stderr == ""


def test_jobs_must_be_positive(cli: RunCli, tmp_path: Path) -> None:
    result = cli(".", "--jobs", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "lossless check: error: --jobs must be >= 1"


def test_check_starts_without_the_runtime() -> None:
    """``lossless check`` loads neither asyncio nor the runtime (process start is part of CI time),
    and the package root still gives the runtime API on first use."""
    import subprocess
    import sys

    code = (
        "import sys, io, contextlib\n"
        "from lossless.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['check', '--list-rules']) == 0\n"
        "print(sorted(m for m in ('asyncio', 'lossless.lifecycle', 'lossless.asgi') "
        "if m in sys.modules))\n"
        "import lossless\n"
        "print(lossless.Lifecycle.__name__, lossless.LosslessMiddleware.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert out == "[]\nLifecycle LosslessMiddleware\n"


def test_a_released_text_is_read_again_only_while_the_file_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big file's text is dropped once parsed and read back on demand; if the file changed in
    between, it reads as empty (nothing is mapped or fixed against text the check did not see)."""
    monkeypatch.setattr(yaml_source, "RELEASE_BYTES", 10)
    path = tmp_path / "big.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    source = yaml_source.read_source(str(path))
    assert isinstance(source, Source)
    [_document], _ = load_documents(source)
    source.release()
    assert source._text is None
    assert source.text == MANIFEST and source.lines[1] == "apiVersion: apps/v1"
    source.release()
    path.write_text(MANIFEST.replace("web", "api"), encoding="utf-8")
    assert source.text == ""
    stdin = Source("-", MANIFEST)
    stdin.release()  # stdin cannot be read again: kept
    assert stdin._text == MANIFEST


def test_slimmed_kinds_keep_metadata_positions_and_duplicates() -> None:
    """A kind no rule reads the body of keeps only apiVersion/kind/metadata, at their written
    positions, and a duplicate key in its dropped body is still reported."""
    text = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: '1'\n  a: '2'\n"
        "metadata:\n  name: cm\n  annotations: {x: y}\n"
    )
    slim = frozenset({"ConfigMap"})
    [service, config], _ = load_documents(Source("x.yaml", text), slim=slim)
    [full_service, full_config], _ = load_documents(Source("x.yaml", text))
    assert config.data == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": full_config.data["metadata"],
    }
    assert service.data == full_service.data
    for path in [("kind",), ("metadata", "name"), ("metadata", "annotations", "x"), ("data",)]:
        assert config.locate((), path) == full_config.locate((), path if path != ("data",) else ())
    assert [(d.key, d.line) for d in config.duplicates] == [("a", 8)]


@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_a_big_file_parsed_from_disk_equals_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bom: str
) -> None:
    """A big ASCII file is parsed from the file itself (no UTF-8 copy of its text): same data,
    positions and duplicates as parsing the text, on the fast path and after a retry on the
    careful one (aliases), with or without a BOM; a file changed since it was read is not used."""
    monkeypatch.setattr(yaml_source, "RELEASE_BYTES", 10)
    text = MANIFEST + "---\n" + "base: &b {x: 1}\nuse: *b\nk: 1\nk: 2\n"
    path = tmp_path / "big.yaml"
    path.write_text(bom + text, encoding="utf-8")
    source = yaml_source.read_source(str(path))
    assert isinstance(source, Source)
    from_file, _ = load_documents(source, file=str(path))
    from_text, _ = load_documents(Source(str(path), text))
    assert [(d.data, list(d.positions), d.duplicates) for d in from_file] == [
        (d.data, list(d.positions), d.duplicates) for d in from_text
    ]
    path.write_text("kind: Other\n" * 20, encoding="utf-8")
    changed, _ = load_documents(source, file=str(path))
    assert [d.data for d in changed] == [d.data for d in from_text]
