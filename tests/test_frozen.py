"""`hyjail.frozen`: the start path's value classes behave as `@dataclass(frozen=True)` would
for what hyjail does with them."""

from __future__ import annotations

import dataclasses

import pytest

from hyjail.frozen import FrozenInstanceError, asdict, frozen, hidden, made_by, replace


@frozen
class Point:
    """A test value."""

    x: int
    y: int = 0
    secret: tuple = hidden(())
    extra: dict = made_by(dict)


@frozen
class Pair:
    """A hashable test value."""

    a: int
    b: tuple


@dataclasses.dataclass(frozen=True)
class Standard:
    point: Point
    items: tuple = ()


def test_fields_by_position_keyword_and_default():
    assert (Point(1).x, Point(1).y, Point(1, 2).y, Point(x=3, y=4).y) == (1, 0, 2, 4)
    with pytest.raises(TypeError, match="missing required argument: 'x'"):
        Point()
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="takes 4 positional arguments"):
        Point(1, 2, 3, 4, 5)


def test_a_factory_default_is_fresh_per_instance():
    a, b = Point(1), Point(1)
    assert a.extra == {} and a.extra is not b.extra


def test_equality_and_hash_by_fields_within_one_class():
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(1, 3)
    assert len({Pair(1, (2,)), Pair(1, (2,)), Pair(1, (3,))}) == 2
    with pytest.raises(TypeError, match="unhashable"):  # a dict field, as a dataclass's
        hash(Point(1))

    @frozen
    class Other:
        """Same fields, another class."""

        x: int
        y: int = 0
        secret: tuple = ()
        extra: dict = made_by(dict)
    assert Point(1) != Other(1)


def test_assignment_is_refused():
    point = Point(1)
    with pytest.raises(FrozenInstanceError):
        point.x = 2
    with pytest.raises(AttributeError):
        del point.y
    assert point.x == 1


def test_repr_leaves_hidden_fields_out():
    assert repr(Point(1, 2, ("key",))) == "Point(x=1, y=2, extra={})"


def test_match_by_position():
    match Point(5, 6):
        case Point(x, y):
            assert (x, y) == (5, 6)
        case _:
            pytest.fail("no match")


def test_replace_for_both_kinds():
    assert replace(Point(1, 2), y=3) == Point(1, 3)
    with pytest.raises(TypeError):
        replace(Point(1), z=1)
    standard = Standard(Point(1))
    assert replace(standard, items=(1,)) == Standard(Point(1), (1,))


def test_asdict_recursively_through_both_kinds():
    value = Standard(Point(1, 2, extra={"a": [Point(3)]}), (Point(4),))
    assert asdict(value) == {
        "point": {"x": 1, "y": 2, "secret": (), "extra": {"a": [
            {"x": 3, "y": 0, "secret": (), "extra": {}}]}},
        "items": ({"x": 4, "y": 0, "secret": (), "extra": {}},)}
    with pytest.raises(TypeError):
        asdict({"not": "a value class"})


def test_a_field_without_a_default_cannot_follow_one_with():
    with pytest.raises(TypeError, match="'b' without a default"):
        @frozen
        class Bad:
            """Wrong order."""

            a: int = 0
            b: int


def test_a_kept_field_is_beside_the_value_not_part_of_it():
    """made_by(kept=True): dataclasses' field(repr=False, compare=False), as hyjail-oci keeps
    a config's raw copy beside its parsed form."""
    @frozen
    class Parsed:
        """A value with its source kept."""

        name: str
        raw: dict = made_by(dict, kept=True)

    one, two = Parsed("a", raw={"x": 1}), Parsed("a", raw={"x": 2})
    assert one == two and hash(one) == hash(two)  # (a dict field alone is unhashable)
    assert repr(one) == "test_a_kept_field_is_beside_the_value_not_part_of_it.<locals>." \
                        "Parsed(name='a')"
    assert one.raw == {"x": 1} and Parsed("b").raw == {} and Parsed("b").raw is not \
        Parsed("b").raw
    assert asdict(one) == {"name": "a", "raw": {"x": 1}}


def test_hyjail_oci_imports_no_dataclasses_nor_typing():
    """Each podman container costs hyjail-oci three calls or more: none pays for them."""
    import subprocess
    import sys
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys\nimport hyjail.oci.cli, hyjail.oci.runtime, "
         "hyjail.oci.mapping, hyjail.oci.config, hyjail.oci.seccomp, hyjail.oci.state\n"
         "print(' '.join(m for m in ('dataclasses', 'typing') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60)
    assert (loaded.returncode, loaded.stdout) == (0, "\n"), loaded.stderr
