"""fastText detector with a real model trained inside the test on tiny data."""

import hashlib
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

fasttext = pytest.importorskip("fasttext")
pytestmark = pytest.mark.fasttext

from corpusfilter.batch import Batch  # noqa: E402
from corpusfilter.blocks.fasttext import FastTextDetector  # noqa: E402
from corpusfilter.errors import CorpusfilterError, RecipeError  # noqa: E402

MORAL = [
    "be kind and honest",
    "compassion and mercy matter",
    "forgive others and be kind",
    "honesty is a virtue",
]
TECH = [
    "install the package with pip",
    "the function returns a list",
    "compile the kernel module",
    "run the tests",
]
MORAL_WORDS = (
    "kind honest honesty compassion mercy forgive virtue love care gentle truthful humble generous".split()
)
TECH_WORDS = "install package pip function returns list compile kernel module run tests config file".split()


def train(path: Path, flip: bool = False, **options: int) -> Path:
    """Train a small real model.

    thread=10: fastText 0.9.x random-initializes only thread/10 of the input matrix
    (DenseMatrix::uniformThread's block size is m*n/10), and with fewer threads training on small
    data often stops with "Encountered NaN" (seen here with the numpy2 wheel and a source build).
    """
    rng = random.Random(0)
    fill = "the a and of to with is it this that we you be".split()
    lines = []
    for i in range(600):
        moral = i % 2 == 0
        words = MORAL_WORDS if moral else TECH_WORDS
        label = "moral" if moral != flip else "tech"
        lines.append(
            f"__label__{label} " + " ".join(rng.choice(words + fill) for _ in range(rng.randint(4, 12)))
        )
    data = path.with_suffix(".txt")
    data.write_text("\n".join(lines) + "\n")
    model = fasttext.train_supervised(str(data), epoch=10, thread=10, verbose=0, **options)
    model.save_model(str(path))
    return path


SCHEMA = pa.schema([("text", pa.string())])


def test_probabilities_per_label_typed_and_newlines_handled(tmp_path: Path) -> None:
    model = train(tmp_path / "m.bin")
    d = FastTextDetector(name="ft", model=str(model))
    d.validate(SCHEMA, "b")
    assert d.field_types() == {"moral": pa.float32(), "tech": pa.float32()}
    d.ensure_setup()
    out = d.process(
        Batch(pa.table({"text": ["be kind\nand honest", "install\n\nthe package"]}), "s", 2)
    ).table
    moral, tech = out.column("ft_moral").to_numpy(), out.column("ft_tech").to_numpy()
    assert out.schema.field("ft_moral").type == pa.float32()
    assert moral[0] > 0.5 > moral[1] and tech[1] > 0.5
    np.testing.assert_allclose(moral + tech, 1.0, atol=1e-3)
    assert d.provenance()["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_a_retrained_model_at_the_same_path_is_not_served_from_a_cache(tmp_path: Path) -> None:
    path = train(tmp_path / "m.bin")
    first = FastTextDetector(name="ft", model=str(path))
    first.validate(SCHEMA, "b")
    first.ensure_setup()
    before = first.score(pa.array(["be kind and honest"]))["moral"][0]
    train(path, flip=True)
    with pytest.raises(CorpusfilterError, match="changed since the run was validated"):
        first._ready = False
        first.ensure_setup()
    second = FastTextDetector(name="ft", model=str(path))
    second.validate(SCHEMA, "b")
    second.ensure_setup()
    after = second.score(pa.array(["be kind and honest"]))["moral"][0]
    assert before > 0.5 > after


def test_scores_equal_fasttexts_own_predict(tmp_path: Path) -> None:
    path = train(tmp_path / "m.bin")
    d = FastTextDetector(name="ft", model=str(path))
    d.validate(SCHEMA, "b")
    d.ensure_setup()
    texts = ["be kind\nand honest", "install the package", "mercy", "  run\r\nthe tests  "]
    ours = d.score(pa.array(texts))
    model = fasttext.load_model(str(path))
    for i, t in enumerate(texts):
        labels, probs = model.predict(t.replace("\n", " "), k=-1)
        expected = dict(zip(labels, probs))
        assert ours["moral"][i] == pytest.approx(expected["__label__moral"], abs=1e-6)
        assert ours["tech"][i] == pytest.approx(expected["__label__tech"], abs=1e-6)


def test_quantized_ftz_model_loads_and_scores(tmp_path: Path) -> None:
    path = train(tmp_path / "m.bin", wordNgrams=2, bucket=2000)  # quantizing needs >= 256 matrix rows
    model = fasttext.load_model(str(path))
    model.quantize(input=str(path.with_suffix(".txt")), retrain=False)
    model.save_model(str(tmp_path / "m.ftz"))
    d = FastTextDetector(name="ft", model=str(tmp_path / "m.ftz"))
    d.validate(SCHEMA, "b")
    d.ensure_setup()
    out = d.score(pa.array(["be kind and honest", "install the package"]))
    assert out["moral"][0] > 0.5 > out["moral"][1]
    assert (tmp_path / "m.ftz").stat().st_size < path.stat().st_size


def test_label_subset_and_errors(tmp_path: Path) -> None:
    model = train(tmp_path / "m.bin")
    d = FastTextDetector(name="ft", model=str(model), labels=["tech"])
    assert list(d.field_types()) == ["tech"]
    with pytest.raises(RecipeError, match=r"labels \['nope'\] are not in"):
        FastTextDetector(name="ft", model=str(model), labels=["nope"]).validate(SCHEMA, "b")
    with pytest.raises(RecipeError, match="fastText model not found"):
        FastTextDetector(name="ft", model=str(tmp_path / "missing.bin")).validate(SCHEMA, "b")


def test_in_a_recipe_run_with_a_cascade(tmp_path: Path) -> None:
    from corpusfilter.recipe import load_recipe
    from corpusfilter.runner import run

    from ..conftest import write_shards

    model = train(tmp_path / "m.bin")
    docs = [(f"d{i}", t, "s") for i, t in enumerate(MORAL + TECH)]
    inp = write_shards(tmp_path / "in", docs, n_shards=2)
    recipe = {
        "input": str(inp),
        "output": str(tmp_path / "out"),
        "blocks": [
            {
                "keywords": {
                    "name": "kw",
                    "terms": ["kind", "honest", "honesty", "compassion", "forgive", "pip"],
                }
            },
            {"fasttext": {"name": "ft", "model": str(model), "when": "kw_hits >= 1"}},
            {"drop": {"where": "ft_moral > 0.5", "reason": "moral"}},
        ],
    }
    res = run(load_recipe(recipe), progress=False)
    assert res.accounting["rejected"] == {"moral": 4}
    (ft,) = [b for b in res.manifest["blocks"] if b["label"] == "1.fasttext:ft"]
    assert ft["stats"]["scored"] == 5  # 4 moral texts + the one with "pip"
    assert ft["provenance"]["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_unicode_whitespace_and_nul_split_words_as_in_training(tmp_path: Path) -> None:
    """`corpusfilter train` splits words on every whitespace character (and NUL); fastText itself only
    on ASCII ones: a no-break space had glued two words into one the model never saw."""
    d = FastTextDetector(name="ft", model=str(train(tmp_path / "m.bin")))
    d.validate(SCHEMA, "b")
    d.ensure_setup()
    plain = "be kind and honest"
    texts = [plain, "be\u00a0kind\u2003and\x00honest", "\u3000be kind\u2028and\x1chonest\u00a0\n"]
    scores = d.score(pa.array(texts))["moral"]
    assert scores[0] > 0.5 and len(set(scores.tolist())) == 1


def test_fasttext_lines_are_the_trainers_words_and_rename_label_tokens() -> None:
    """One function writes the training lines and the lines scored: whitespace runs (any Unicode
    whitespace) and NULs are one space, and a word starting with `__label__` is renamed."""
    import re
    import sys

    from corpusfilter.blocks.fasttext import _SPACE, fasttext_lines

    assert all(not re.fullmatch(r"\s", chr(i)) for i in range(0x3001, sys.maxunicode + 1))
    assert _SPACE == "".join(c for c in map(chr, range(0x3001)) if re.fullmatch(r"\s", c))
    texts = [
        "  a\tb\n\nc\r\n d  ",
        "x\x00y \x00 z\x00",
        "\u00a0p\u2003 q\u3000\x1cr\x85",
        "__label__good docs: __label__good and x__label__y ___label__z\n__label__",
        "one",
        " \x00 ",
    ]
    got = fasttext_lines(pa.array(texts)).to_pylist()
    words = [re.sub(r"[\s\x00]+", " ", t).strip() for t in texts]  # the trainer's words before
    assert got[:3] + got[4:] == words[:3] + words[4:]
    assert got[3] == "_label__good docs: _label__good and x__label__y ___label__z _label__"
    assert fasttext_lines(pa.array([], pa.string())).to_pylist() == []


def test_the_scored_words_are_the_training_lines_words() -> None:
    """Scoring normalizes less than training (only what fastText does not split on itself), for
    speed; the words fastText reads must be the same. Random strings over every separator."""
    import random
    import re

    from corpusfilter.blocks.fasttext import _SPACE, fasttext_lines, fasttext_words

    rng = random.Random(0)
    alphabet = [*"ab_ l", *_SPACE, "\x00", "__label__", "x", "é"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(30))) for _ in range(5000)]

    def words(s: str) -> list[str]:  # fastText's readWord: ASCII whitespace and NUL separate words
        return [w for w in re.split(r"[ \t\n\v\f\r\x00]+", s) if w]

    trained = fasttext_lines(pa.array(texts)).to_pylist()
    scored = fasttext_words(pa.array(texts))
    assert all("\n" not in s for s in scored)
    assert [words(s) for s in scored] == [words(s) for s in trained]
