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


def test_block_config_errors_name_the_key_and_allowed_keys() -> None:
    from corpusfilter.blocks.keyword import KeywordDetector
    from corpusfilter.registry import from_config

    with pytest.raises(RecipeError, match=r"keywords\.lexcon: unknown key \(allowed: .*lexicon.*when"):
        KeywordDetector.from_params({"name": "k", "lexcon": "virtue"}, path="keywords")
    cfg = KeywordDetector(name="k", lexicon="virtue").to_config()
    with pytest.raises(
        RecipeError, match=r"block\.extra: unknown key \(a block config has type and params\)"
    ):
        from_config({**cfg, "extra": 1})
    with pytest.raises(RecipeError, match=r"block: give exactly one of 'lexicon' or 'terms'"):
        from_config({"type": "keywords", "params": None})  # no parameters: a recipe error, not a TypeError


def test_a_block_class_defined_again_replaces_itself() -> None:
    """Re-running a notebook cell that defines a block registers the new class; another class may
    not take a registered name."""
    import dataclasses

    from corpusfilter.blocks.base import Detector
    from corpusfilter.registry import lookup, register

    def define() -> type[Detector]:
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class P:
            name: str = "x"

        @register("cell_block_test", 1)
        class CellBlock(Detector):
            Params = P

        return CellBlock

    from corpusfilter.registry import _REGISTRY

    try:
        first, second = define(), define()
        assert first is not second and lookup("cell_block_test", "b") is second

        class Other(Detector):
            Params = second.Params

        with pytest.raises(ValueError, match="cell_block_test@1 registered twice"):
            register("cell_block_test", 1)(Other)
    finally:  # other tests list every registered block
        _REGISTRY.pop(("cell_block_test", 1), None)
