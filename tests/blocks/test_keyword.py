import random

import numpy as np
import pyarrow as pa
import pytest

from corpusfilter.blocks.keyword import KeywordDetector, reference_regex
from corpusfilter.errors import RecipeError


def _detector(terms: list[str]) -> KeywordDetector:
    d = KeywordDetector(name="kw", terms=terms)
    d.ensure_setup()
    return d


def _reference_hits(texts: list[str], terms: list[str]) -> list[int]:
    pats = reference_regex(terms)
    return [sum(len(p.findall(t)) for p in pats) for t in texts]


ALPHABET = list("abcdeéü ß") + [" ", " ", "\n", ".", ",", "-", "_", "1", "É", "Ü", "ö", "中"]
VOCAB = ["care", "carefully", "be", "fair", "fairness", "über", "öl", "naïve", "a_b", "b", "ab", "x1"]


@pytest.mark.parametrize("seed", range(5))
def test_counts_equal_reference_regex_on_random_text(seed: int) -> None:
    rng = random.Random(seed)
    terms = rng.sample(VOCAB, 6) + ["fair play", "über alles"]
    texts = []
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(0, 40)):
            if rng.random() < 0.5:
                w = rng.choice(VOCAB + ["fair  play", "über\nalles"])
                parts.append(w.upper() if rng.random() < 0.2 else w)
            else:
                parts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4))))
        texts.append(rng.choice(["", " ", "."]).join(parts))
    d = _detector(terms)
    out = d.score(pa.array(texts, pa.string()))
    assert list(out["hits"]) == _reference_hits(texts, terms)


def test_fields_score_per_1k_and_categories() -> None:
    d = _detector(["honesty\t2\thonesty", "kindness\t1\tcare", "martin luther king jr.\t3\texemplar"])
    texts = [
        "Honesty and KINDNESS; honesty again.",
        "nothing here",
        "Martin Luther King Jr. spoke.",
        "dishonesty is not honesty_x",
    ]
    out = d.score(pa.array(texts))
    assert list(out["hits"]) == [3, 0, 1, 0]
    assert list(out["score"]) == [5.0, 0.0, 3.0, 0.0]
    assert out["per_1k_words"][0] == pytest.approx(1000 * 3 / 5)
    assert out["per_1k_words"][1] == 0.0
    assert out["categories"].to_pylist() == [["care", "honesty"], [], ["exemplar"], []]


def test_batch_slices_and_chunk_offsets() -> None:
    # a sliced Arrow array has a non-zero offset into the shared data buffer
    d = _detector(["virtue"])
    arr = pa.array(["virtue first", "no", "a virtue", "virtue virtue"]).slice(1, 3)
    assert list(d.score(arr)["hits"]) == [0, 1, 2]


def test_match_never_spans_two_documents() -> None:
    d = _detector(["deceptive alignment"])
    arr = pa.array(["deceptive", " alignment", "deceptive alignment"])
    assert list(d.score(arr)["hits"]) == [0, 0, 1]


def test_process_adds_prefixed_typed_columns() -> None:
    from corpusfilter.batch import Batch

    d = _detector(["virtue"])
    b = d.process(Batch(pa.table({"id": ["a", "b"], "text": ["virtue", "x"]}), "s", 2))
    assert b.table.schema.field("kw_hits").type == pa.int32()
    assert b.table.schema.field("kw_categories").type == pa.list_(pa.string())
    assert b.table.column("kw_hits").to_pylist() == [1, 0]


def test_params_are_strict() -> None:
    with pytest.raises(RecipeError, match="exactly one of"):
        KeywordDetector(name="x")
    with pytest.raises(RecipeError, match="keywords.lexcon: unknown key"):
        KeywordDetector(name="x", lexcon="virtue")
    with pytest.raises(RecipeError, match="unknown lexicon"):
        KeywordDetector(name="x", lexicon="nope").setup()


def test_shipped_lexicons_load_and_are_sizable() -> None:
    from corpusfilter.lexicon import load_lexicon, shipped_lexicons

    names = shipped_lexicons()
    assert {"moral_exemplars", "virtue", "ai_misalignment"} <= set(names)
    for name in names:
        lex = load_lexicon(name)
        assert len(lex) >= 100, name
        d = KeywordDetector(name="x", lexicon=name)
        d.ensure_setup()  # every shipped term compiles
    virtue = load_lexicon("virtue")
    assert {"care", "fairness", "honesty"} <= set(virtue.categories)


def test_many_terms_large_batch_matches_reference() -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}x" for i in range(600)]
    terms = words[:500]
    texts = [" ".join(rng.choice(words, size=50)) for _ in range(200)]
    d = _detector(terms)
    assert list(d.score(pa.array(texts))["hits"]) == _reference_hits(texts, terms)


def test_null_texts_count_as_empty() -> None:
    d = _detector(["virtue"])
    assert list(d.score(pa.array(["virtue", None, "a virtue"]))["hits"]) == [1, 0, 1]


def test_whitespace_list_matches_python_re() -> None:
    import re

    from corpusfilter.blocks.keyword import UNICODE_SPACES

    assert UNICODE_SPACES == "".join(chr(c) for c in range(0x110000) if re.match(r"\s", chr(c)))


def test_phrases_match_across_unicode_whitespace() -> None:
    d = _detector(["deceptive alignment", "naïve realism"])
    texts = [
        "deceptive\u00a0alignment",
        "deceptive \u2003\n alignment",
        "deceptive-alignment",
        "NAÏVE  realism",
    ]
    assert list(d.score(pa.array(texts))["hits"]) == _reference_hits(
        texts, ["deceptive alignment", "naïve realism"]
    )
    assert list(d.score(pa.array(texts))["hits"]) == [1, 1, 0, 1]


def test_compiled_databases_are_cached_and_corrupt_cache_recompiles(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CORPUSFILTER_CACHE", str(tmp_path))
    d = _detector(["deceptive alignment", "virtue"])
    (entry,) = list((tmp_path / "hyperscan").glob("*.hsdb"))
    entry.write_bytes(b"garbage")
    again = _detector(["deceptive alignment", "virtue"])
    texts = pa.array(["Deceptive  alignment is not a virtue"])
    assert list(again.score(texts)["hits"]) == list(d.score(texts)["hits"]) == [2]
    assert entry.read_bytes() != b"garbage"


def test_words_are_runs_of_bytes_above_0x20() -> None:
    import re

    from corpusfilter.blocks.keyword import word_counts

    d = _detector(["virtue"])
    texts = ["virtue  is\ta\u00a0word", "no hit here", "virtue\n\nvirtue x\x01y", "virtue", "  virtue  "]
    words = [len(re.findall(rb"[^\x00-\x20]+", t.encode())) for t in texts]
    expected = [1000.0 * h / w if h else 0.0 for h, w in zip(_reference_hits(texts, ["virtue"]), words)]
    assert list(d.score(pa.array(texts))["per_1k_words"]) == pytest.approx(expected)
    rng = random.Random(1)
    docs = ["".join(rng.choice("ab \n\t\x00é") for _ in range(rng.randint(0, 200))) for _ in range(300)]
    buf = np.frombuffer(b"".join(t.encode() + b"\x00" for t in docs), dtype=np.uint8)
    starts = np.cumsum([0] + [len(t.encode()) + 1 for t in docs])
    assert list(word_counts(buf, starts)) == [len(re.findall(rb"[^\x00-\x20]+", t.encode())) for t in docs]
