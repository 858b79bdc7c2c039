"""What a check finds: one :class:`Problem` per node or layer at fault, and :class:`Problems`,
where the checks put them. A compile (``export``) raises the first as the one-line
:class:`~danet_deploy.errors.UserError` it always did; ``danet-deploy check`` keeps every one
and goes on where the rest of the graph can still be checked (docs/compile.md, "check").

Each check is one function that returns or reports its problems; the compile and ``check``
call the same functions, so that a problem reads the same in both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.table import Table

from .errors import UserError


@dataclass(frozen=True)
class Problem:
    """One thing a compile would refuse: the node at fault, what is wrong, the value against its
    limit (where one is exceeded) and what to do. ``message`` is the one-line error."""

    node: str  # the node or layer at fault; "" for the whole network
    what: str
    remedy: str = ""
    value: str = ""  # e.g. "70 > 62 steps"
    noun: str = "node"  # how the message names it: node, layer or population
    kind: str = ""  # the node's type, where the message names it
    joint: str = "; "  # between what and the remedy in the message (" " before a parenthesis)

    @property
    def message(self) -> str:
        kind = f" ({self.kind})" if self.kind else ""
        head = f"{self.noun} {self.node!r}{kind}: " if self.node else ""
        return head + self.what + (self.joint + self.remedy if self.remedy else "")

    def error(self) -> UserError:
        """The one-line error a compile raises for it."""
        return ProblemError(self)


class ProblemError(UserError):
    """A :class:`Problem` raised where it is found, deep in a stage; a collecting caller catches
    it to record the problem and go on with the next node."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class ChecksStopped(Exception):
    """The problems found so far leave nothing for the later checks to run on (``why``)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass
class Problems:
    """Where checks report what they find. Raising (the compile's): the first problem is raised
    as a one-line error. Collecting (``collect``, ``check``'s): every problem is kept, once."""

    collect: bool = False
    found: list[Problem] = field(default_factory=list)
    skipped: str = ""  # why the later checks did not run, where they did not
    subject: dict[str, str] = field(default_factory=dict)  # what was checked: model, target, ...

    def report(self, problems: Iterable[Problem], count_rest: str = "") -> None:
        """Keep ``problems``, or raise the first; ``count_rest`` (e.g. "more"): the raised
        message ends with how many others there are, "(and 2 more)"."""
        problems = list(problems)
        if problems and not self.collect:
            rest = len(problems) - 1
            raise UserError(
                problems[0].message + (f" (and {rest} {count_rest})" if count_rest and rest else "")
            )
        self.found.extend(p for p in dict.fromkeys(problems) if p not in self.found)

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Within: a :class:`ProblemError` is reported and the code after the block goes on
        (collecting), or it is raised as it is (raising)."""
        try:
            yield
        except ProblemError as e:
            self.report([e.problem])

    def stop_if_found(self, since: int, why: str) -> None:
        """End the checks (:class:`ChecksStopped`) if problems were found since ``found[since]``:
        the later checks need what they are about (``why`` says what)."""
        if len(self.found) > since:
            raise ChecksStopped(why)


def raising(problems: Problems | None) -> Problems:
    """``problems``, or a raising collector where the caller gave none (a compile)."""
    return problems if problems is not None else Problems()


COLUMNS = ("layer/node", "problem", "limit/value", "what to do")


def as_json(problems: Problems) -> dict[str, Any]:
    """``check --format json``: what was checked, every problem and what was skipped
    (docs/compile.md, "check": its keys)."""
    return {
        **problems.subject,
        "ok": not problems.found,
        "problems": [
            {
                "node": p.node,
                "kind": p.kind,
                "problem": p.what,
                "value": p.value,
                "remedy": p.remedy,
                "message": p.message,
            }
            for p in problems.found
        ],
        "skipped": problems.skipped or None,
    }


def as_table(problems: Problems) -> Table:
    """One row per problem (:data:`COLUMNS`); the network as a whole is ``(network)``."""
    table = Table(*COLUMNS, box=box.SIMPLE_HEAD)
    for p in problems.found:
        node = p.node + (f" ({p.kind})" if p.kind else "") if p.node else "(network)"
        table.add_row(node, p.what, p.value or "-", _remedy(p) or "-")
    return table


def summary(problems: Problems) -> str:
    """The line under the table, or the one line of a model without problems."""
    s = problems.subject
    checked = f"{s.get('model', 'MODEL')} for {s.get('target')} ({s.get('profile')})"
    if not problems.found:
        return f"{checked}: no problems"
    n = len(problems.found)
    line = f"{checked}: {n} problem{'s' if n > 1 else ''}"
    return line + (f"; later checks skipped: {problems.skipped}" if problems.skipped else "")


def _remedy(p: Problem) -> str:
    """The remedy as a table cell: without the parentheses it has inside a message."""
    if p.remedy.startswith("(") and p.remedy.endswith(")"):
        return p.remedy[1:-1]
    return p.remedy
