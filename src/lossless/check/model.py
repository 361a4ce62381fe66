"""The checker's vocabulary: severities, locations, findings, input errors and the rule registry.

A rule is a function decorated with :func:`rule`. The decorator records it in :data:`REGISTRY`
under a code (``LL201``) that is never reused, with a family, a default severity and a status
(ruff's model). The function's docstring is the single source of its documentation page: it must
have the sections "What it does", "Why is this bad?", "Example" and "Use instead" (checked by
:func:`rule` at import time, and rendered by ``python -m lossless.check.docs``).

A rule function takes the :class:`~lossless.check.engine.Context` of one run and yields
:class:`Hit` objects (a location and a specific message); the engine turns hits into
:class:`Finding` objects (severity from the configuration, suppression from annotations).
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossless.check.engine import Context

__all__ = [
    "DOC_SECTIONS",
    "REGISTRY",
    "Finding",
    "Hit",
    "InputError",
    "Location",
    "Rule",
    "Severity",
    "Status",
    "Suppression",
    "all_rules",
    "rule",
]


class Severity(enum.IntEnum):
    """How bad a finding is; ordered so that ``--fail-on`` can compare."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def sarif_level(self) -> str:
        return {"INFO": "note", "WARNING": "warning", "ERROR": "error"}[self.name]

    @classmethod
    def parse(cls, text: str) -> Severity:
        """``"error"`` → ``Severity.ERROR``; raises ``ValueError`` naming the valid values."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            valid = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of: {valid})") from None


class Status(enum.Enum):
    """A rule's life cycle: codes are never reused, removed rules keep their page."""

    STABLE = "stable"
    PREVIEW = "preview"
    DEPRECATED = "deprecated"
    REMOVED = "removed"


@dataclass(frozen=True, order=True)
class Location:
    """A 1-based line and column in a file (``path`` as the user should open it).

    ``end_line``/``end_column`` (exclusive end, SARIF's convention) are set when the offending
    token's extent is known. ``rendered`` is the position in the file actually read when the
    location was mapped back to a Helm template or a kustomize origin.
    """

    path: str
    line: int = 1
    column: int = 1
    end_line: int | None = field(default=None, compare=False)
    end_column: int | None = field(default=None, compare=False)
    rendered: Location | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Hit:
    """What a rule reports: where, what (specific to this case), and on which object.

    ``subject`` is the object whose suppression annotation or comment applies (a
    :class:`~lossless.check.k8s.K8sObject` or :class:`~lossless.check.dockerfile.Dockerfile`), or
    ``None``.
    """

    location: Location
    message: str
    subject: Any = None


@dataclass(frozen=True)
class Suppression:
    """Why a finding is not counted: ``kind`` is SARIF's ``inSource`` for annotations/comments."""

    reason: str
    kind: str = "inSource"


@dataclass(frozen=True)
class Finding:
    """One reported problem."""

    rule: Rule
    message: str
    location: Location
    severity: Severity
    subject: str = ""
    suppression: Suppression | None = None

    @property
    def code(self) -> str:
        return self.rule.code

    def sort_key(self) -> tuple[str, int, int, str]:
        loc = self.location
        return (loc.path, loc.line, loc.column, self.rule.code)


@dataclass(frozen=True)
class InputError:
    """An input that could not be checked (not YAML, too big, unrendered template...).

    Reported as one line ``path:line: message``; the run goes on with the other inputs and exits 2.
    """

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


RuleFunc = Callable[["Context"], Iterator[Hit]]

#: The fixed sections of a rule's docstring, in order (ruff's layout).
DOC_SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead")


@dataclass(frozen=True)
class Rule:
    """A registered rule: ``code`` (``LL201``), kebab-case ``name``, ``family``, defaults."""

    code: str
    name: str
    family: str
    severity: Severity
    summary: str
    func: RuleFunc
    status: Status = Status.STABLE

    @property
    def doc(self) -> str:
        """The rule's documentation (its docstring without the summary line), as Markdown."""
        text = inspect.cleandoc(self.func.__doc__ or "")
        return text.split("\n", 1)[1].strip() if "\n" in text else ""

    def with_severity(self, severity: Severity) -> Rule:
        return replace(self, severity=severity)


#: Every rule, by code, in registration order (the order of the rules table).
REGISTRY: dict[str, Rule] = {}

_CODE = re.compile(r"^LL\d{3}$")


def rule(
    code: str,
    name: str,
    *,
    family: str,
    severity: Severity,
    status: Status = Status.STABLE,
) -> Callable[[RuleFunc], RuleFunc]:
    """Register the decorated function as rule ``code``.

    Raises ``ValueError`` at import time when the code is malformed or already taken, or when the
    docstring lacks a summary line or one of :data:`DOC_SECTIONS` (so a rule cannot ship
    undocumented).
    """

    def register(func: RuleFunc) -> RuleFunc:
        if not _CODE.match(code):
            raise ValueError(f"malformed rule code {code!r}")
        if code in REGISTRY:
            raise ValueError(f"rule code {code} registered twice")
        doc = inspect.cleandoc(func.__doc__ or "")
        summary = doc.split("\n", 1)[0].strip()
        if not summary:
            raise ValueError(f"rule {code} has no docstring summary")
        for section in DOC_SECTIONS:
            if f"## {section}" not in doc:
                raise ValueError(f"rule {code} docstring lacks the section '## {section}'")
        REGISTRY[code] = Rule(code, name, family, severity, summary, func, status)
        return func

    return register


def all_rules() -> list[Rule]:
    """Every rule, in code order. The rule modules register on import; this imports them."""
    import lossless.check.rules  # noqa: F401 - importing the package registers every rule

    return sorted(REGISTRY.values(), key=lambda r: r.code)
