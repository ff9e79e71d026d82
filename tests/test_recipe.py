from pathlib import Path

import pytest

from corpusfilter.errors import RecipeError
from corpusfilter.recipe import load_recipe, plan
from corpusfilter.registry import from_config

from .conftest import recipe_dict


def test_unknown_keys_are_errors_naming_the_path(corpus: Path, tmp_path: Path) -> None:
    r = recipe_dict(corpus, tmp_path / "out")
    r["blocks"][1]["drop"]["reasn"] = "x"
    with pytest.raises(RecipeError, match=r"blocks\[1\]\.drop\.reasn: unknown key"):
        load_recipe(r)
    r = recipe_dict(corpus, tmp_path / "out")
    r["input"]["text_colum"] = "t"
    with pytest.raises(RecipeError, match=r"input\.text_colum: unknown key"):
        load_recipe(r)
    r = recipe_dict(corpus, tmp_path / "out", sed=3)
    with pytest.raises(RecipeError, match="sed: unknown key"):
        load_recipe(r)


def test_wrong_types_and_unknown_blocks(corpus: Path, tmp_path: Path) -> None:
    r = recipe_dict(corpus, tmp_path / "out")
    r["input"]["batch_size"] = "big"
    with pytest.raises(RecipeError, match=r"input\.batch_size: expected an integer"):
        load_recipe(r)
    r = recipe_dict(corpus, tmp_path / "out")
    r["blocks"].append({"dorp": {}})
    with pytest.raises(RecipeError, match=r"blocks\[2\]: unknown block 'dorp' \(known: .*drop") as err:
        load_recipe(r)
    # the control arm's block is registered (manifests name it) but is not offered to recipes
    assert "matched_control" not in str(err.value) and "upsample" in str(err.value)


def test_condition_errors_surface_at_validation(corpus: Path, tmp_path: Path) -> None:
    r = recipe_dict(corpus, tmp_path / "out")
    r["blocks"][1]["drop"]["where"] = "moral_hitz >= 2"
    recipe = load_recipe(r)
    with pytest.raises(RecipeError, match=r"blocks\[1\]\.drop\.where: unknown column 'moral_hitz'"):
        plan(recipe)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("input: x\nblocks: [\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml: line \d+ invalid YAML"):
        load_recipe(p)


def test_set_overrides_and_relative_paths(corpus: Path, tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(
        "input: in\noutput: out\nblocks:\n  - keywords: {name: m, terms: [virtue]}\n"
        "  - drop: {where: 'm_hits >= 1', reason: m}\n"
    )
    rec = load_recipe(p, overrides=["blocks.1.drop.where=m_hits >= 5", "seed=7"])
    assert rec.input.path == str(corpus)
    assert rec.output.path == str(tmp_path / "out")
    assert rec.seed == 7
    assert rec.blocks[1].params.where == "m_hits >= 5"
    for bad in ("9", "-1"):
        with pytest.raises(RecipeError, match="not an index"):
            load_recipe(p, overrides=[f"blocks.{bad}.drop.where=x"])
    # the wrong index names what is there instead of failing on a two-key block later
    with pytest.raises(
        RecipeError, match=r"--set blocks\.0\.drop\.where: blocks\.0 is a 'keywords' item, not 'drop'"
    ):
        load_recipe(p, overrides=["blocks.0.drop.where=x"])
    assert load_recipe(p, overrides=["blocks.0.keywords.terms=[kind]"]).blocks[0].params.terms == ("kind",)
    # an error in what --set put there says so, rather than blaming the file alone
    with pytest.raises(
        RecipeError, match=r"r\.yaml: nokey: unknown key .*\(the recipe as changed by --set nokey=1\)"
    ):
        load_recipe(p, overrides=["nokey=1"])


def test_every_block_config_round_trips(corpus: Path, tmp_path: Path) -> None:
    rec = load_recipe(recipe_dict(corpus, tmp_path / "out"))
    for b in rec.blocks:
        again = from_config(b.to_config())
        assert type(again) is type(b)
        assert again.to_config() == b.to_config()


def test_set_reaches_into_the_path_shorthand(corpus: Path, tmp_path: Path) -> None:
    r = recipe_dict(corpus, tmp_path / "out")
    r["output"] = str(tmp_path / "out")
    rec = load_recipe(r, overrides=[f"output.path={tmp_path / 'elsewhere'}"])
    assert rec.output.path == str(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        # a drop after copies would drop copies, which the control arm cannot mirror
        (
            [
                {"upsample": {"where": "moral_hits >= 1", "weight": "3"}},
                {"drop": {"where": "moral_hits >= 2", "reason": "m"}},
            ],
            r"3\.drop: drop/keep blocks must come before 2\.upsample, a drop after it would remove copies",
        ),
        # a target share is of the final output: nothing that copies may follow it
        (
            [
                {"upsample": {"where": "moral_hits >= 1", "target_share": 0.2}},
                {"upsample": {"where": "moral_hits = 0", "weight": "3"}},
            ],
            r"3\.upsample: no upsample or backfill may follow 2\.upsample: its target_share",
        ),
        (
            [
                {"upsample": {"where": "moral_hits >= 1", "target_share": 0.2}},
                {"upsample": {"where": "moral_hits = 0", "target_share": 0.1}},
            ],
            r"3\.upsample: no upsample or backfill may follow 2\.upsample",
        ),
        # a fixed weight after a solved block is not replayed by the solver
        (
            [{"backfill": {}}, {"upsample": {"where": "moral_hits >= 1", "weight": "2"}}],
            r"3\.upsample: a fixed-weight upsample must come before 2\.backfill",
        ),
        (
            [{"backfill": {}}, {"keywords": {"name": "more", "terms": ["x"]}}],
            r"3\.keywords:more: detectors must come before 2\.backfill",
        ),
        # two upsamples of one (default) name drew the same numbers: no document got exactly 2 of 1.5 x 1.5
        (
            [{"upsample": {"weight": "1.5"}}, {"upsample": {"weight": "1.5"}}],
            r"3\.upsample: name 'upsample' is also 2\.upsample's; a resampler's name salts its random draws",
        ),
    ],
)
def test_block_orders_the_solvers_and_the_control_cannot_state_are_refused(
    corpus: Path, tmp_path: Path, blocks: list, message: str
) -> None:
    r = recipe_dict(corpus, tmp_path / "out")
    r["blocks"] = [r["blocks"][0], {"tokens": {}}, *blocks]
    with pytest.raises(RecipeError, match=message):
        load_recipe(r)


def test_a_key_given_twice_and_parameters_that_are_not_a_map_are_errors(corpus: Path, tmp_path: Path) -> None:
    p = tmp_path / "twice.yaml"
    p.write_text(
        f"input: {corpus}\noutput: {tmp_path / 'o'}\nblocks: []\nblocks:\n  - drop: {{where: x, reason: y}}\n"
    )
    with pytest.raises(RecipeError, match=r"twice\.yaml: line 4 invalid YAML \(key 'blocks' given twice"):
        load_recipe(p)
    p.write_text(
        f"input: {corpus}\noutput: {tmp_path / 'o'}\nblocks:\n  - drop: {{where: a, reason: y, where: b}}\n"
    )
    with pytest.raises(RecipeError, match=r"line 4 invalid YAML \(key 'where' given twice"):
        load_recipe(p)
    # a merge key (`<<: *anchor`) is YAML, not a key given twice; its keys may be overridden
    p.write_text(
        f"input: {corpus}\noutput: {tmp_path / 'o'}\nbase: &kw {{name: m, terms: [kindness]}}\n"
        "blocks:\n  - keywords: {<<: *kw, name: k}\n"
    )
    with pytest.raises(RecipeError, match=r"base: unknown key"):  # the anchor's home is not a recipe key
        load_recipe(p)
    p.write_text(
        f"input: {corpus}\noutput: {tmp_path / 'o'}\nblocks:\n  - keywords: &kw {{name: m, terms: [kindness]}}\n"
        "  - keywords: {<<: *kw, name: k}\n"
    )
    assert [b.params.name for b in load_recipe(p).blocks] == ["m", "k"]
    for params in ("v_hits > 1", [1, 2]):
        r = recipe_dict(corpus, tmp_path / "out")
        r["blocks"][1] = {"drop": params}
        with pytest.raises(RecipeError, match=r"blocks\[1\]\.drop: expected a map of parameters"):
            load_recipe(r)


def test_file_names_beside_the_recipe_resolve_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model: model.bin`` or ``lexicon: my.lex`` next to the recipe are files there, whatever the
    working directory; shipped names (``virtue``) stay names."""
    here = tmp_path / "project"
    here.mkdir()
    (here / "my.lex").write_text("kindness\t1\tcare\n")
    (here / "in").mkdir()
    (here / "r.yaml").write_text(
        "input: in\noutput: out\nblocks:\n  - keywords: {name: a, lexicon: my.lex}\n"
        "  - keywords: {name: b, lexicon: virtue}\n  - fasttext: {name: c, model: model.bin}\n"
    )
    (here / "virtue").mkdir()  # a folder of that name does not shadow the shipped lexicon
    (here / "r2.yaml").write_text(
        "input: in\noutput: out\nblocks:\n  - embedding: {name: e, model: sentence-transformers/all-MiniLM-L6-v2,"
        " positives: [kindness]}\n"
    )
    monkeypatch.chdir(tmp_path)
    data = load_recipe(here / "r.yaml").data["blocks"]
    assert data[0]["keywords"]["lexicon"] == str(here / "my.lex")
    assert data[1]["keywords"]["lexicon"] == "virtue"
    assert data[2]["fasttext"]["model"] == str(here / "model.bin")  # named there, even before it exists
    assert (
        load_recipe(here / "r2.yaml").data["blocks"][0]["embedding"]["model"]
        == "sentence-transformers/all-MiniLM-L6-v2"
    )
    # the Python API takes the same rule: a file name with an extension is a file (here, from the cwd)
    from corpusfilter.blocks.keyword import KeywordDetector

    monkeypatch.chdir(here)
    kw = KeywordDetector(name="v", lexicon="my.lex")
    kw.ensure_setup()
    assert kw.to_config()["params"]["lexicon"] == "my.lex"
