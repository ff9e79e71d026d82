import dataclasses
from typing import Literal

import pytest

from corpusfilter.errors import RecipeError
from corpusfilter.params import build_params, describe_params


@dataclasses.dataclass(frozen=True, kw_only=True)
class P:
    n: int
    x: float = 1.0
    mode: Literal["a", "b"] = "a"
    names: list[str] | None = None


def test_types_are_checked_and_converted() -> None:
    p = build_params(P, {"n": 2, "x": 3, "names": ["u"]}, "blk")
    assert p.x == 3.0 and isinstance(p.x, float) and p.names == ("u",)
    with pytest.raises(RecipeError, match="blk.n: expected an integer, got True"):
        build_params(P, {"n": True}, "blk")
    with pytest.raises(RecipeError, match=r"blk.mode: expected one of 'a', 'b'"):
        build_params(P, {"n": 1, "mode": "c"}, "blk")
    with pytest.raises(RecipeError, match=r"blk.names\[1\]: expected str"):
        build_params(P, {"n": 1, "names": ["a", 2]}, "blk")
    with pytest.raises(RecipeError, match="blk.n: required key is missing"):
        build_params(P, {}, "blk")


def test_describe() -> None:
    d = {x["name"]: x for x in describe_params(P)}
    assert d["n"]["required"] and not d["x"]["required"]
    assert d["names"]["type"] == "list[str] | null"
