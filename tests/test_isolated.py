"""Graph transforms run in a child process: results and exceptions come back, a dead child is named."""

import math
import os

import pytest

from lucid_eval.isolated import IsolatedError, run_isolated


def test_result_comes_back():
    assert run_isolated(math.sqrt, 6.25) == 2.5


def test_exception_is_raised_in_the_parent():
    with pytest.raises(ValueError, match="invalid literal"):
        run_isolated(int, "not a number")


def test_a_child_that_dies_is_an_error_not_a_hang():
    with pytest.raises(IsolatedError, match="_exit died in its child process .exit status 7"):
        run_isolated(os._exit, 7)
