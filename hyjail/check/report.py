"""The escape battery's report: the table (or JSON), the progress line, and the exit status.

Owns how rows are shown: grouped by rule in catalogue order (the entry group, "E", last),
one line each with the attempt,
its ABI, the backend (the jail shape it ran as), the result and its time; an ESCAPED or error
row says why on the same line. Exit 0 only when nothing escaped and every jail ran.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from hyjail.check.runner import Row

# The rules of SPEC section 1, then "E": the entry path (the host's way into a jail).
RULE_ORDER = ("R1", "R2", "R3", "R4", "R5", "R6", "R7", "E")


def _printable(text: str) -> str:
    """A detail may quote what a jail wrote (a probe's answer, a refusal's line): control
    characters become '?', so none reaches the administrator's terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


def table(rows: list[Row]) -> str:
    lines = [f"{'RULE':<4}  {'ATTEMPT':<52}  {'ABI':<6}  {'BACKEND':<7}  {'TIME':>6}  RESULT"]
    for row in sorted(rows, key=lambda r: RULE_ORDER.index(r.rule)):
        result = row.result + (f": {_printable(row.detail)}" if row.detail else "")
        lines.append(f"{row.rule:<4}  {row.attempt[:52]:<52}  {row.abi:<6}  {row.backend:<7}  "
                     f"{row.seconds:>5.2f}s  {result}")
    lines.append(summary(rows))
    return "\n".join(lines)


def summary(rows: list[Row]) -> str:
    counts = Counter(row.result for row in rows)
    distinct = len({(row.rule, row.attempt) for row in rows})
    backends = ", ".join(sorted({row.backend for row in rows}))
    return (f"{len(rows)} runs of {distinct} attempts on {backends}: {counts['held']} held, "
            f"{counts['ESCAPED']} escaped, {counts['skipped']} skipped, "
            f"{counts['error']} errors")


def as_json(rows: list[Row]) -> str:
    return json.dumps({"rows": [row.to_dict() for row in rows], "summary": summary(rows)},
                      indent=1)


def exit_status(rows: list[Row]) -> int:
    return 0 if all(row.result in ("held", "skipped") for row in rows) else 1


def progress(done: int, total: int, row: Row) -> None:
    """One line, rewritten in place on a terminal."""
    if not sys.stderr.isatty():
        return
    mark = "" if row.result in ("held", "skipped") else f"  last {row.result}: {row.attempt}"
    sys.stderr.write(f"\r\033[Khyjail check: {done}/{total}  {row.rule} {row.attempt[:40]}"
                     f"{mark}")
    if done == total:
        sys.stderr.write("\r\033[K")
    sys.stderr.flush()
