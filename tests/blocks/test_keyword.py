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


def test_inline_terms_are_terms_even_when_they_start_with_hash() -> None:
    d = _detector(["#StopAI", "AI doom\t2"])
    assert d.lexicon.terms == ("#StopAI", "AI doom")
    texts = ["Say #stopai now", "x#StopAI", "AI  doom #StopAI."]
    assert (
        list(d.score(pa.array(texts))["hits"]) == _reference_hits(texts, ["#StopAI", "AI doom"]) == [1, 0, 2]
    )
    with pytest.raises(RecipeError, match=r"kw:inline, item 2: empty term"):
        _detector(["virtue", "  "])


def test_lexicon_file_comments_and_hash_escape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from corpusfilter.lexicon import load_lexicon

    path = tmp_path / "tags.lex"
    path.write_text(
        "# a comment\n  # an indented comment\n\\#StopAI\t2\tactivism\n\\\\o/\n"
        "care\t\tvirtue\npause ai\t1.5\tactivism\n",
        encoding="utf-8",
    )
    lex = load_lexicon(str(path))
    assert lex.terms == ("#StopAI", "\\o/", "care", "pause ai")
    assert lex.weights == (2.0, 1.0, 1.0, 1.5)
    assert lex.categories == ("activism", "", "virtue", "activism")
    d = KeywordDetector(name="kw", lexicon=str(path), categories=["activism"])
    d.ensure_setup()
    assert d.lexicon.terms == ("#StopAI", "pause ai")
    assert list(d.score(pa.array(["#StopAI and Pause AI", "StopAI"]))["score"]) == [3.5, 0.0]


def test_duplicates_are_terms_the_matcher_folds_together() -> None:
    # the matcher folds one character to one (ẞ/ß, ſ/s, Kelvin sign/k), never ß to ss
    d = _detector(["Großmut", "Grossmut", "ıstanbul", "istanbul"])
    texts = ["GROSSMUT", "großmut", "GROẞMUT", "ISTANBUL", "ıstanbul"]
    doc, term = d.find(pa.array(texts))
    assert sorted(zip(doc.tolist(), term.tolist())) == [(0, 1), (1, 0), (2, 0), (3, 3), (4, 2)]
    for dup in (["Café", "CAFÉ"], ["Straße", "STRAẞE"], ["ſtar", "Star"], ["kelvin", "\u212aelvin"]):
        with pytest.raises(RecipeError, match="item 2: duplicate of item 1"):
            _detector(dup)


def test_match_key_is_hyperscans_case_folding() -> None:
    import re
    import unicodedata

    import hyperscan

    from corpusfilter.blocks.keyword import compile_cached
    from corpusfilter.lexicon import match_key

    chars = [
        c
        for c in map(chr, range(0x110000))
        if unicodedata.category(c) != "Cs" and (c.lower() != c or c.upper() != c or c.casefold() != c)
    ]
    chars += ["ı", "ſ", "µ", "\u0345", "\u1fbe", "ς", "ϐ", "ϑ", "ϕ", "ϖ", "ϰ", "ϱ", "ϵ", "ẛ", "ﬅ", "ﬆ"]
    text = "\x00".join(chars).encode() + b"\x00"
    char_at, pos = {}, 0
    for i, c in enumerate(chars):
        pos += len(c.encode())
        char_at[pos] = i  # match end -> the character ending there
        pos += 1
    flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP
    db = compile_cached([re.escape(c).encode() for c in chars], list(range(len(chars))), flags, name="t")
    matched: dict[int, set[int]] = {i: set() for i in range(len(chars))}
    db.scan(text, match_event_handler=lambda i, s, e, f, ctx: matched[i].add(char_at[e]))
    same_key: dict[str, set[int]] = {}
    for i, c in enumerate(chars):
        same_key.setdefault(match_key(c), set()).add(i)
    wrong = [c for i, c in enumerate(chars) if matched[i] != same_key[match_key(c)]]
    assert not wrong, [f"U+{ord(c):04X}" for c in wrong[:20]]


def test_unicode_phrases_match_across_exactly_re_whitespace() -> None:
    from corpusfilter.blocks.keyword import UNICODE_SPACES

    terms = ["café au lait", "coffee break"]
    seps = [*UNICODE_SPACES, "\u180e", "\u200b", "\ufeff", "\x01"]
    texts = [f"café{s}au lait and coffee{s}break" for s in seps]
    assert list(_detector(terms).score(pa.array(texts))["hits"]) == _reference_hits(texts, terms)
    assert _reference_hits(texts, terms) == [2] * len(UNICODE_SPACES) + [0] * 4


def test_documented_differences_from_re() -> None:
    # the case folds README "Keyword detector and lexicons" lists as differences from re
    ascii_terms, unicode_terms = ["istanbul", "kelvin", "star"], ["ıstanbul café", "naïve ion"]
    texts = ["İSTANBUL", "ıstanbul", "\u212aELVIN", "ſtar", "istanbul café", "naïve İon", "NAÏVE ıon"]
    ref = _reference_hits(texts, ascii_terms + unicode_terms)
    assert ref == [1, 1, 1, 1, 2, 1, 1]
    got = list(_detector(ascii_terms + unicode_terms).score(pa.array(texts))["hits"])
    assert got == [0, 0, 0, 0, 1, 0, 0]
