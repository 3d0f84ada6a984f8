"""jail(8)'s `depend` parameter: which jails an action reaches, and in what order.

Owns the order FreeBSD's usr.sbin/jail/state.c gives jails that depend on others, as pure
functions over names (nothing here looks at a running jail or starts one; `hyjail.jail8`
asks and acts):

- creating a jail first creates the jails it depends on, transitively, each once, the whole
  of one before the next (`creation`); one already running is left alone, but what it
  depends on is still seen to, as FreeBSD's dep_check does;
- removing a jail first removes the jails that depend on it, transitively (`removal`), which
  FreeBSD's dep_check does in reverse for -r whether or not they were named;
- a jail that depends on a name no jail of the configuration has (nor a running jail:
  hyjail's leniency, see `creation`), or that is in a dependency loop, fails before anything
  is done, with state.c's words (`UNDEFINED`, `LOOP`); a jail waiting for one that failed is
  `SKIPPED`, as dep_check and dep_done say.

A `Plan` is the order to act in, what each jail waits for (a failure of one of those skips
it), and the failures known before acting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from hyjail.errors import HyjailError

# state.c's dep_setup and dep_check, each after "NAME: " (its jail_warnx).
UNDEFINED = 'depends on undefined jail "{}"'  # with a configuration
NONEXISTENT = 'depends on nonexistent jail "{}"'  # parameters on the command line, no name
LOOP = "dependency loop"
SKIPPED = "skipped"


class Plan:
    """(A plain class: `jail -c` imports this, and dataclasses costs a start 6-9 ms.)"""

    __slots__ = ("order", "waits", "problems")

    def __init__(self) -> None:
        self.order: list[str] = []  # each after every jail it waits for
        self.waits: dict[str, list[str]] = {}  # jail -> jails of the plan
        self.problems: dict[str, list[str]] = {}  # jail -> messages: it fails


def creation(targets: Iterable[str], depends_on: Callable[[str], Sequence[str]],
             defined: Callable[[str], bool], running: Callable[[str], bool]) -> Plan:
    """The jails to create for targets (configured names), dependencies first: a depth-first
    walk in the order each jail names its dependencies, so the targets keep their order and
    each one's dependencies come right before it.

    depends_on(name): a configured jail's dependencies (a HyjailError is that jail's problem);
    defined(name): whether the configuration has the jail; running(name): whether a jail of
    that name runs. FreeBSD takes only configured names; a dependency on a running jail the
    configuration does not have is satisfied here too (a jail started by `hyjail run` or
    another file), and only one neither configured nor running is UNDEFINED.

    A jail whose own problem or a dependency's dooms it does not pull in the rest of what it
    depends on: nothing is created for a jail that will not be."""
    plan = Plan()
    deps: dict[str, list[str]] = {}
    visiting: list[str] = []
    looped: list[str] = []

    def dependencies(name: str) -> list[str]:
        if name not in deps:
            try:
                given = list(dict.fromkeys(depends_on(name)))
            except HyjailError as e:
                plan.problems.setdefault(name, []).append(str(e))
                given = []
            deps[name] = []
            for dep in given:
                if defined(dep):
                    deps[name].append(dep)
                elif not running(dep):
                    plan.problems.setdefault(name, []).append(
                        f"{name}: {UNDEFINED.format(dep)}")
        return deps[name]

    walked: list[str] = []  # post-order: every jail after its dependencies (loops aside)
    seen: set[str] = set()
    for target in targets:
        if target in seen:
            continue
        # Iterative depth-first walk: a long chain of jails is no recursion limit.
        seen.add(target)
        visiting.append(target)
        stack = [(target, iter(dependencies(target)))]
        while stack:
            name, pending = stack[-1]
            dep = next(pending, None)
            if dep is None:
                stack.pop()
                visiting.pop()
                walked.append(name)
            elif dep in visiting:  # back to a jail still being walked: a loop
                looped.extend(j for j in visiting[visiting.index(dep):] if j not in looped)
            elif dep not in seen:
                seen.add(dep)
                visiting.append(dep)
                stack.append((dep, iter(dependencies(dep))))
    for name in looped:
        plan.problems.setdefault(name, []).append(f"{name}: {LOOP}")

    doomed = set(plan.problems)
    changed = True
    while changed:  # to a fixed point: a loop has no first jail to start from
        changed = False
        for name in walked:
            if name not in doomed and any(d in doomed for d in deps[name]):
                doomed.add(name)
                changed = True
    needed: set[str] = set()
    todo = list(dict.fromkeys(targets))
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            if name not in doomed:
                todo.extend(deps[name])
    plan.order = [name for name in walked if name in needed]
    plan.waits = {name: deps[name] for name in plan.order}
    return plan


def removal(targets: Iterable[str], dependents_of: Callable[[str], Sequence[str]]) -> Plan:
    """The jails to remove for targets, each after the jails that depend on it (transitively,
    named or not): a depth-first walk of dependents, so independent targets keep their order.
    A loop among them is no failure here: what runs can always be removed (FreeBSD's
    dep_setup would refuse even that; -R was its way out)."""
    plan = Plan()
    seen: set[str] = set()
    for target in targets:
        if target in seen:
            continue
        seen.add(target)
        stack = [(target, iter(_unique(dependents_of(target))))]
        while stack:
            name, pending = stack[-1]
            other = next(pending, None)
            if other is None:
                stack.pop()
                plan.order.append(name)
            elif other not in seen:
                seen.add(other)
                stack.append((other, iter(_unique(dependents_of(other)))))
    plan.waits = {name: [d for d in _unique(dependents_of(name)) if d != name]
                  for name in plan.order}
    return plan


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))
