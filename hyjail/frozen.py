"""Frozen value classes for a jail's start path, without the dataclasses module.

Owns `frozen`, the class decorator of the value classes every jail's start imports (the spec,
the plan, the record, the mount plan's operations, ...), and `replace` and `asdict` for them
and for the standard library's dataclasses alike. The standard `@dataclass(frozen=True)` costs
a start about 15 ms: its import brings inspect, ast and dis, and each class compiles five
methods from source. Here the methods are shared closures, so a class costs microseconds.

A `@frozen` class is what `@dataclass(frozen=True)` makes of the same body, to the extent the
start path uses it: fields in annotation order (positional or by keyword), defaults,
`hidden(default)` (left out of repr) and `made_by(factory)` (a fresh default per instance;
`kept=True`: a record kept beside the value, out of its repr, equality and hash),
`__match_args__` for `match`, equality and hashing by fields within one class, a repr, and
`FrozenInstanceError` on assignment. Nothing else (no inheritance of fields, no ordering;
every field may be given by keyword, so a class `dataclass` made keyword-only reads the same).
"""

from __future__ import annotations

_MISSING = object()


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen instance."""


class _Field:
    __slots__ = ("default", "factory", "shown", "compared")

    def __init__(self, default=_MISSING, factory=None, shown: bool = True,
                 compared: bool = True) -> None:
        self.default, self.factory, self.shown, self.compared = default, factory, shown, compared


def hidden(default) -> _Field:
    """A field whose default is `default`, left out of the repr (an environment, say)."""
    return _Field(default=default, shown=False)


def made_by(factory, *, kept: bool = False) -> _Field:
    """A field whose default is a fresh factory() for each instance (a dict, say); `kept`: a
    record beside the value (a parsed file's raw copy), not part of its repr, equality or
    hash (dataclasses' `repr=False, compare=False`)."""
    return _Field(factory=factory, shown=not kept, compared=not kept)


def frozen(cls: type) -> type:
    """Make cls a frozen value class of its annotated fields (see the module's docstring)."""
    names = tuple(cls.__dict__.get("__annotations__", ()))
    defaults: dict = {}
    factories: dict = {}
    shown, compared = [], []
    for name in names:
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, _Field):
            if value.factory is not None:
                factories[name] = value.factory
                delattr(cls, name)
            elif value.default is not _MISSING:
                defaults[name] = value.default
                setattr(cls, name, value.default)
            else:
                delattr(cls, name)
            if value.shown:
                shown.append(name)
            if value.compared:
                compared.append(name)
            continue
        if value is not _MISSING:
            defaults[name] = value
        shown.append(name)
        compared.append(name)
        if name not in defaults and (defaults or factories):
            raise TypeError(f"{cls.__name__}: field {name!r} without a default follows one "
                            f"with a default")
    cls.__frozen_fields__ = names
    cls.__match_args__ = names
    cls.__init__ = _init(cls.__name__, names, defaults, factories)
    cls.__repr__ = _repr(tuple(shown))
    cls.__eq__ = _eq(tuple(compared))
    cls.__hash__ = _hash(tuple(compared))
    cls.__setattr__ = _refuse
    cls.__delattr__ = _refuse
    return cls


def is_frozen(value) -> bool:
    return hasattr(type(value), "__frozen_fields__")


def replace(value, **changes):
    """A copy of value (a `@frozen` instance or a standard dataclass's) with changes."""
    if not is_frozen(value):
        import dataclasses
        return dataclasses.replace(value, **changes)
    values = {name: getattr(value, name) for name in type(value).__frozen_fields__}
    values.update(changes)
    return type(value)(**values)


def asdict(value) -> dict:
    """value's fields as a dict, recursively (through lists, tuples, dicts, and standard
    dataclasses too), as `dataclasses.asdict` gives them."""
    if not is_frozen(value) and not hasattr(type(value), "__dataclass_fields__"):
        raise TypeError(f"asdict() of {type(value).__name__}, not a value class")
    return _plain(value)


def _plain(value):
    kind = type(value)
    if hasattr(kind, "__frozen_fields__"):
        return {name: _plain(getattr(value, name)) for name in kind.__frozen_fields__}
    if hasattr(kind, "__dataclass_fields__"):
        import dataclasses
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return kind(*(_plain(item) for item in value))
    if isinstance(value, (list, tuple)):
        return kind(_plain(item) for item in value)
    if isinstance(value, dict):
        return kind((_plain(k), _plain(v)) for k, v in value.items())
    return value


def _init(class_name: str, names: tuple[str, ...], defaults: dict, factories: dict):
    known = frozenset(names)

    def __init__(self, *args, **kwargs) -> None:
        if len(args) > len(names):
            raise TypeError(f"{class_name}() takes {len(names)} positional arguments but "
                            f"{len(args)} were given")
        values = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in known:
                raise TypeError(f"{class_name}() got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{class_name}() got multiple values for argument {key!r}")
            values[key] = value
        for name in names:
            if name not in values:
                if name in defaults:
                    values[name] = defaults[name]
                elif name in factories:
                    values[name] = factories[name]()
                else:
                    raise TypeError(f"{class_name}() missing required argument: {name!r}")
        self.__dict__.update(values)
    return __init__


def _repr(shown: tuple[str, ...]):
    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__qualname__}({inner})"
    return __repr__


def _eq(names: tuple[str, ...]):
    def __eq__(self, other) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in names)
    return __eq__


def _hash(names: tuple[str, ...]):
    def __hash__(self) -> int:
        return hash(tuple(getattr(self, name) for name in names))
    return __hash__


def _refuse(self, name, *value) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")
