"""The escape battery's report: the table (or JSON), the progress line, and the verdict.

Owns how an outcome is shown: rows grouped by rule in catalogue order (the entry group, "E",
last), one line each with the attempt, its ABI, the backend (the jail shape it ran as:
"ns", "trace", or what the plan made of the backend asked for, e.g. "auto/hybrid"), the
result and its time; an ESCAPED or error row says why on the same line. Then a line for each
backend that did not run as itself (the same jail as another; one the host cannot run, with
the plan's refusal), the skips counted per backend and reason, and the summary line, last.

And the verdict (`failure`, `exit_status`): the battery fails, in one line saying why, when
anything escaped, a jail did not run (an error row), a backend this host can run had every
one of its rows skipped, or nothing ran at all (no row held or escaped). A backend the host
cannot run does not by itself fail the run.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from hyjail.check.attempts import RACE_ROUNDS, SWAP_ROUNDS
from hyjail.check.runner import Outcome, Row, race_rounds

# The rules of SPEC section 1, then "E": the entry path (the host's way into a jail).
RULE_ORDER = ("R1", "R2", "R3", "R4", "R5", "R6", "R7", "E")
BACKEND_WIDTH = len("auto/hybrid")


def _printable(text: str) -> str:
    """A detail may quote what a jail wrote (a probe's answer, a refusal's line): control
    characters become '?', so none reaches the administrator's terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


def table(outcome: Outcome) -> str:
    lines = [f"{'RULE':<4}  {'ATTEMPT':<52}  {'ABI':<6}  {'BACKEND':<{BACKEND_WIDTH}}  "
             f"{'TIME':>6}  RESULT"]
    for row in sorted(outcome.rows, key=lambda r: RULE_ORDER.index(r.rule)):
        result = row.result + (f": {_printable(row.detail)}" if row.detail else "")
        lines.append(f"{row.rule:<4}  {row.attempt[:52]:<52}  {row.abi:<6}  "
                     f"{row.backend:<{BACKEND_WIDTH}}  {row.seconds:>5.2f}s  {result}")
    lines += [_printable(note) for p in outcome.planned if (note := p.note())]
    counted = skips(outcome)
    if counted:
        lines.append("skipped, by backend and reason:")
        lines += [f"  {s['count']:>4}  {s['backend']:<{BACKEND_WIDTH}}  "
                  f"{_printable(s['reason'])}" for s in counted]
    lines.append(summary(outcome))
    return "\n".join(lines)


def _labels(outcome: Outcome) -> list[str]:
    """The backends as the rows name them, in the order asked for (none twice)."""
    return [p.label for p in outcome.planned if not p.same_as]


def skips(outcome: Outcome) -> list[dict]:
    """How many rows were skipped for each (backend, reason): per backend in the order
    asked for, the commonest reason first."""
    counts = Counter((row.backend, row.detail) for row in outcome.rows
                     if row.result == "skipped")
    order = _labels(outcome)
    ranked = sorted(counts.items(), key=lambda item: (
        order.index(item[0][0]) if item[0][0] in order else len(order), -item[1], item[0][1]))
    return [{"backend": backend, "reason": reason, "count": n}
            for (backend, reason), n in ranked]


def summary(outcome: Outcome) -> str:
    rows = outcome.rows
    counts = Counter(row.result for row in rows)
    distinct = len({(row.rule, row.attempt) for row in rows})
    backends = ", ".join(_labels(outcome)) or "no backend"
    paced = ""
    if outcome.slow != 1:
        rounds = race_rounds(outcome.slow)
        races = (f"races of {rounds['race_rounds']} rounds (fd swaps {rounds['swap_rounds']}), "
                 f"not {RACE_ROUNDS} ({SWAP_ROUNDS})" if rounds["race_rounds"] < RACE_ROUNDS
                 else "races at full length (a weakened jail's)")
        paced = (f"; paced for a host {outcome.slow:g}x slower (HYJAIL_CHECK_SLOW): timeouts "
                 f"x{outcome.slow:g}, {races}")
    return (f"{len(rows)} runs of {distinct} attempts on {backends}: {counts['held']} held, "
            f"{counts['ESCAPED']} escaped, {counts['skipped']} skipped, "
            f"{counts['error']} errors{paced}")


def failure(outcome: Outcome) -> str | None:
    """Why this battery fails, in one line; None when it passes."""
    rows = outcome.rows
    counts = Counter(row.result for row in rows)
    why = []
    if counts["ESCAPED"]:
        why.append(f"{counts['ESCAPED']} escaped")
    if counts["error"]:
        why.append(f"{counts['error']} error{'s' * (counts['error'] > 1)} (jails that did not "
                   f"run)")
    for planned in outcome.planned:
        if planned.shape is None:  # not run as itself: refused here, or another's twin
            continue
        mine = [row for row in rows if row.backend == planned.label]
        if mine and all(row.result == "skipped" for row in mine):
            reasons = Counter(row.detail for row in mine)
            reason, n = reasons.most_common(1)[0]
            others = len(reasons) - 1
            runs = "its one run was" if len(mine) == 1 else f"all {len(mine)} of its runs were"
            why.append(f"{planned.label} can run on this host, but {runs} skipped "
                       f"({n}: {_printable(reason)}"
                       + (f"; and {others} other reason{'s' * (others > 1)})" if others else ")"))
    if not why and not counts["held"] + counts["ESCAPED"]:
        if outcome.pattern and not rows:
            why.append(f"nothing ran: no attempt matches -k {outcome.pattern!r}")
        elif not any(p.shape for p in outcome.planned):
            refusals = "; ".join(_printable(p.note() or p.backend) for p in outcome.planned)
            why.append(f"nothing ran: this host can run none of the backends asked for "
                       f"({refusals})")
        else:
            why.append("nothing ran: no row held or escaped")
    return "; ".join(why) or None


def as_json(outcome: Outcome) -> str:
    return json.dumps({"rows": [row.to_dict() for row in outcome.rows],
                       "backends": [p.to_dict() for p in outcome.planned],
                       "skipped": skips(outcome), "summary": summary(outcome),
                       "failure": failure(outcome)}, indent=1)


def exit_status(outcome: Outcome) -> int:
    return 1 if failure(outcome) else 0


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
