"""Generate the rule reference from the rules' docstrings: ``python -m lossless.check.docs``.

Writes ``docs/rules/<CODE>.md`` for every registered rule and the rules table of
``docs/check.md`` (between ``<!-- rules-table:start -->`` and ``<!-- rules-table:end -->``).
With ``--check`` nothing is written: the exit code is 1 when a page or the table is out of date
(the test suite runs this), 0 otherwise. ``--root`` names the project directory (default: cwd).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lossless.check.model import Rule, all_rules

__all__ = ["expected_files", "main", "render_page", "render_table"]

TABLE_START = "<!-- rules-table:start -->"
TABLE_END = "<!-- rules-table:end -->"


def render_page(rule: Rule) -> str:
    """The Markdown page of one rule."""
    header = (
        f"# {rule.code}: {rule.name}\n\n"
        f"{rule.summary}\n\n"
        f"| family | default severity | status |\n"
        f"| --- | --- | --- |\n"
        f"| {rule.family} | {rule.severity.label} | {rule.status.value} |\n\n"
    )
    footer = (
        "\n\n## Suppressing\n\n"
        "Add the annotation to the object, with the reason:\n\n"
        "```yaml\nmetadata:\n  annotations:\n"
        f'    lossless/ignore: "{rule.code}: <why this is fine here>"\n```\n\n'
        f'or disable it for a project with `ignore = ["{rule.code}"]` under '
        "`[tool.lossless.check]` in pyproject.toml.\n\n"
        "<!-- Generated from the rule's docstring by `python -m lossless.check.docs`; "
        "edit the docstring, not this page. -->\n"
    )
    return header + rule.doc + footer


def render_table() -> str:
    lines = [
        TABLE_START,
        "| code | name | family | severity | what it flags |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rule in all_rules():
        summary = rule.summary.replace("|", "\\|")
        lines.append(
            f"| [{rule.code}](rules/{rule.code}.md) | {rule.name} | {rule.family} | "
            f"{rule.severity.label} | {summary} |"
        )
    lines.append(TABLE_END)
    return "\n".join(lines)


def expected_files(root: Path) -> dict[Path, str]:
    """Every generated file and its expected content (the check guide included, if present)."""
    files = {root / "docs" / "rules" / f"{r.code}.md": render_page(r) for r in all_rules()}
    guide = root / "docs" / "check.md"
    if guide.is_file():
        text = guide.read_text(encoding="utf-8")
        if TABLE_START in text and TABLE_END in text:
            head, rest = text.split(TABLE_START, 1)
            _, tail = rest.split(TABLE_END, 1)
            files[guide] = head + render_table() + tail
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossless.check.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    parser.add_argument("--root", default=".", help="project directory (default: .)")
    args = parser.parse_args(argv)
    stale = []
    for path, content in expected_files(Path(args.root)).items():
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == content:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    verb = "out of date" if args.check else "written"
    for path in stale:
        print(f"{path}: {verb}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
