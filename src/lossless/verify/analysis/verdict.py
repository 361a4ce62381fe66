"""The verdict of a run: pass, fail or inconclusive, and why.

A user gates a release on it, so it never says ``pass`` when the run cannot know:

- **fail** (exit 1): more than ``max_failures`` requests failed, counting the requests a proxy
  saved only by retrying them (``retried``) unless ``allow_retries``, and the long-lived
  clients' failed sessions (``--streams``, ``--websockets``);
- **inconclusive** (exit 3), when nothing failed beyond the tolerance but the run did not test
  what it promised: the generator fell behind its schedule (more than ``max_late_ratio`` of the
  requests, and at least :data:`MIN_LATE` and 100 ms of the schedule's worth, sent more than
  ``late_threshold`` late), a replica never answered on its port (every
  request to it refused: the command does not listen on ``{port}``/``$PORT``), or fewer than
  ``min_window_requests`` requests were due while the rollout went on;
- **pass** (exit 0) otherwise.

A failed request sent on time is a fact even when the generator was late elsewhere, so ``fail``
takes precedence over lateness and a short rollout window. A failed request sent more than
``late_threshold`` after its intended time is not: the lab's clients apply their view changes
on the same event loop that was held, so a request sent late may have used a view the model had
already changed (a replica removed, a connection closed) and failed where a real client would
not have. When the requests sent on time stay within ``max_failures`` and only late ones go past
it, the run is **inconclusive**, with both reasons. A replica that never answered on its port
makes the run inconclusive even with failures (the lab was misconfigured, the upgrade was not
tested).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from lossless.verify.analysis.report import Report

__all__ = ["EXIT_CODES", "Outcome", "Verdict", "VerdictPolicy", "judge"]


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


EXIT_CODES: dict[Outcome, int] = {Outcome.PASS: 0, Outcome.FAIL: 1, Outcome.INCONCLUSIVE: 3}

# fewer late requests than this, or than 100 ms of the schedule, are one hiccup of the machine,
# not a generator that fell behind (at 200 req/s one 50 ms stall delays 10 requests)
MIN_LATE = 10
MIN_LATE_SCHEDULE = 0.1  # seconds of the schedule


@dataclasses.dataclass(frozen=True)
class VerdictPolicy:
    """The thresholds of the verdict (``lossless verify`` and ``lossless report`` flags)."""

    max_failures: int = 0
    allow_retries: bool = False
    late_threshold: float = 0.010  # seconds: a request sent later than this is late
    max_late_ratio: float = 0.01  # the share of late requests that makes the run inconclusive
    min_window_requests: int = 10  # requests due during the rollout, at least

    def __post_init__(self) -> None:
        if self.max_failures < 0 or self.min_window_requests < 0:
            raise ValueError("max_failures and min_window_requests must be >= 0")
        if not (self.late_threshold >= 0 and 0 <= self.max_late_ratio <= 1):
            raise ValueError("late_threshold must be >= 0 and max_late_ratio within 0..1")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """``outcome`` and its exit code; ``counted`` failures against ``max_failures`` (service
    failures plus retried requests unless allowed, plus failed stream sessions); ``reasons`` one sentence each (why it failed
    or is inconclusive; empty on a pass); ``late`` requests sent more than the threshold late and
    their share ``late_ratio``."""

    outcome: Outcome
    counted: int
    reasons: list[str]
    late: int
    late_ratio: float
    policy: VerdictPolicy

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.outcome.value,
            "exit_code": self.exit_code,
            "counted_failures": self.counted,
            "reasons": self.reasons,
            "late": self.late,
            "late_ratio": round(self.late_ratio, 6),
            "max_failures": self.policy.max_failures,
            "allow_retries": self.policy.allow_retries,
            "late_threshold_s": self.policy.late_threshold,
            "max_late_ratio": self.policy.max_late_ratio,
            "min_window_requests": self.policy.min_window_requests,
        }


def judge(report: Report, policy: VerdictPolicy, *, uncounted: int = 0) -> Verdict:
    """The verdict of ``report`` under ``policy`` (see the module docstring). ``uncounted``
    failed requests are left out of the count: those of the faults the user injected, unless
    ``--faults-count`` (lossless.verify.stress_command)."""
    a = report.analysis
    counted_late = a.late_count(policy.late_threshold)
    if counted_late is None:  # a threshold below the lag tail's 1 ms floor
        counted_late = report.late_counts.get(policy.late_threshold)
    if counted_late is None:  # not counted while the records streamed: count them now
        records = report.run.records
        if len(records) != a.requests:
            raise ValueError(
                f"late threshold {policy.late_threshold} s: the records were streamed without "
                "counting it (analyse_dir(late_threshold=...))"
            )
        counted_late = sum(1 for r in records if r.sent - r.intended > policy.late_threshold)
    late = counted_late
    ratio = late / a.requests if a.requests else 0.0
    retried = 0 if policy.allow_retries else a.retried
    # the long-lived clients' failed sessions count like failed requests (issue 13 item 3)
    stream_failures = report.streams.failures if report.streams is not None else 0
    failed = max(0, a.failures - uncounted)  # the upgrade's, without the injected faults'
    counted = failed + retried + stream_failures
    silent = ""
    if a.silent_replicas:
        one = len(a.silent_replicas) == 1
        silent = (
            f"{', '.join(a.silent_replicas)} never answered on {'its port' if one else 'their ports'}"
            f": every request to {'it' if one else 'them'} was refused; does the command listen "
            "on {port} or $PORT?"
        )
    if counted > policy.max_failures:
        parts = [_n(failed, "failed request")]
        if retried:
            parts.append(f"{_n(retried, 'request')} saved only by proxy retries")
        if stream_failures:
            parts.append(f"{_n(stream_failures, 'failed stream session')}")
        reason = f"{' + '.join(parts)} > --max-failures {policy.max_failures}"
        late_failed = min(failed, sum(1 for c in a.contexts if c.lag > policy.late_threshold))
        if not silent and late_failed and counted - late_failed <= policy.max_failures:
            stalled = (
                f"the load generator fell behind when it mattered: {late_failed} of the "
                f"{_n(failed, 'failed request')} {'was' if late_failed == 1 else 'were'} sent "
                f"more than {policy.late_threshold * 1000:g} ms late, and without "
                f"{'it' if late_failed == 1 else 'them'} the run is within --max-failures; "
                "a request sent late may have used a view the lab had already changed: lower "
                "--rate or give the generator a core, and run again"
            )
            return Verdict(Outcome.INCONCLUSIVE, counted, [stalled, reason], late, ratio, policy)
        if not silent:
            return Verdict(Outcome.FAIL, counted, [reason], late, ratio, policy)
        # a replica that never listened failed requests the upgrade did not: the lab was
        # misconfigured, so the run cannot judge the service
        return Verdict(Outcome.INCONCLUSIVE, counted, [silent, reason], late, ratio, policy)
    reasons: list[str] = [silent] if silent else []
    floor = max(MIN_LATE, a.rate_sent * MIN_LATE_SCHEDULE)
    if a.requests and ratio > policy.max_late_ratio and late >= floor:
        reasons.append(
            f"the load generator fell behind: {late} of {a.requests} requests "
            f"({ratio * 100:.1f} %) were sent more than {policy.late_threshold * 1000:g} ms late "
            f"(limit {policy.max_late_ratio * 100:g} %; achieved {a.rate_achieved:g} of "
            f"{a.rate_sent:g} req/s): lower --rate or give the generator a core"
        )
    if a.window_requests is not None and a.window_requests < policy.min_window_requests:
        reasons.append(
            f"only {_n(a.window_requests, 'request')} due during the rollout (at least "
            f"{policy.min_window_requests}): raise --rate"
        )
    if not a.requests:
        reasons.append("no request was sent")
    if report.streams is not None and not any(
        s.established is not None for s in report.streams.sessions_list
    ):
        reasons.append("no long-lived stream was ever established (--streams, --websockets)")
    outcome = Outcome.INCONCLUSIVE if reasons else Outcome.PASS
    return Verdict(outcome, counted, reasons, late, ratio, policy)


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
