"""hyjail.getopt3 parses as getopt(3) does: the standard library's getopt for short options
(the same answers and errors), `--x` as the option character '-', and no `re` imported."""

from __future__ import annotations

import getopt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyjail import getopt3

from conftest import python_prints

WORDS = ("-a", "-b", "-ab", "-ba", "-c", "-cv", "-acv", "-bc", "v", "w", "--", "-", "-x",
         "-ax", "-:", "")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=6))
def test_short_options_as_the_standard_getopt_reads_them(argv):
    try:
        expected = getopt.getopt(argv, "abc:")
    except getopt.GetoptError as e:
        with pytest.raises(getopt3.OptionError) as raised:
            getopt3.parse(argv, "abc:")
        wanted = "option requires an argument" if "requires" in e.msg else "illegal option"
        assert (raised.value.reason, raised.value.character) == (wanted, e.opt)
        return
    assert getopt3.parse(argv, "abc:") == (list(expected[0]), expected[1])


@pytest.mark.parametrize(("argv", "says"), [
    (["--version"], "illegal option -- -"),
    (["-l", "--help"], "illegal option -- -"),
    (["-u"], "option requires an argument -- u"),
])
def test_no_long_options_and_getopt3s_wording(argv, says):
    with pytest.raises(getopt3.OptionError, match=f"^{says}$"):
        getopt3.parse(argv, "d:lnu:U:")


def test_it_imports_neither_getopt_nor_re():
    assert python_prints(
        "import sys; from hyjail import getopt3; getopt3.parse(['-lu', 'root', 'j'], 'lu:'); "
        "print(sorted(m for m in ('getopt', 'gettext', 're') if m in sys.modules))") == "[]\n"
