"""corpusfilter.embed helpers: sentence splitting and top-k pooling for the sentence view of a head."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from corpusfilter.embed import sentences, split_sentences, top_k_pool


def test_sentences_split_after_stops_and_at_line_breaks_and_skip_fragments() -> None:
    text = "The fox was hungry all winter. Oh! He shared his bread with the crow anyway?\nHeading\nBe kind to those who have less."
    assert sentences(text) == [
        "The fox was hungry all winter.",
        "He shared his bread with the crow anyway?",
        "Be kind to those who have less.",
    ]
    assert sentences("Short one.") == ["Short one."]  # nothing qualifies: the whole text
    assert sentences("   ") == []
    assert len(sentences("one two three four. " * 300, limit=5)) == 5


def test_split_sentences_keeps_each_sentence_owner() -> None:
    flat, owner = split_sentences(["a b c d. e f g h.", None, "x y z w"])
    assert flat == ["a b c d.", "e f g h.", "x y z w"]
    assert owner.tolist() == [0, 0, 2]


def test_top_k_pool_is_the_mean_of_the_k_largest_per_dimension() -> None:
    emb = np.asarray([[1, 0], [3, 5], [2, 1], [7, 7]], dtype=np.float32)
    doc = np.asarray([0, 0, 0, 2])
    out = top_k_pool(emb, doc, 3, 2)
    np.testing.assert_allclose(out[0], [2.5, 3.0])  # top two of (1, 3, 2) and of (0, 5, 1)
    np.testing.assert_allclose(out[1], [0, 0])  # no rows
    np.testing.assert_allclose(out[2], [7, 7])  # fewer rows than k
    np.testing.assert_allclose(top_k_pool(emb, doc, 3, 1)[0], [3, 5])  # k = 1: the max
    # rows need not be grouped by document
    perm = np.asarray([3, 1, 0, 2])
    np.testing.assert_allclose(top_k_pool(emb[perm], doc[perm], 3, 2), out)


@pytest.mark.embed
def test_the_character_cut_never_changes_the_chunks() -> None:
    """A word over 100 characters is one [UNK] whole, but word pieces when the cut splits it: the
    chunk's tokens (and the embedding, cosine 0.994) moved with the cut. The cut now ends at a word."""
    pytest.importorskip("model2vec")  # the static model
    from corpusfilter.embed import Chunking, load_encoder

    enc = load_encoder("static-minilm", Chunking(chunk_tokens=16, max_chunks=1))
    texts = ["hello " * 13 + "x" * 150 + " world " * 20, "hello " * 13 + "y" * 150, "z" * 400, "short text"]
    texts += ["中文" * 300, "q" * 60 + " tail", "a " + "b" * 130 + " c" * 50]
    cut, _ = enc.chunk(texts)
    whole = [toks[a:b] for toks in enc.tokenize(texts) for a, b in enc.chunking.windows(len(toks))]
    assert cut == whole
    from corpusfilter.embed import _cut_at_word

    # text without spaces is cut where it falls, not tokenized whole (2M characters took 4.4 s)
    assert _cut_at_word("中" * 100_000, 1000) == "中" * 1000 and _cut_at_word("hello world", 8) == "hello "


@pytest.mark.embed
def test_the_cut_matches_whole_tokenization_on_varied_text() -> None:
    """Seeded random texts of words, long runs, accents, punctuation, CJK, emoji and the control
    characters BERT deletes, under small chunkings where the cut lands anywhere."""
    pytest.importorskip("model2vec")  # the static model
    import random

    from corpusfilter.embed import Chunking, load_encoder

    rng = random.Random(7)
    pieces = ["hello", "world", "international", "understanding", "e\u0301" * 3, "x" * 40, "/", ",", "...",
              "中文", "日本", "🙂", "\t", "\n", "\x0c", "\x1c", "\u00a0", "\u3000", "a-b", "https://ex.am/ple?q=1",
              "QUJD" * 10, "ﬁne", "naïve", "Straße"]  # fmt: skip
    texts = []
    for _ in range(300):
        parts = [rng.choice(pieces) * rng.choice((1, 1, 1, 3, 40)) for _ in range(rng.randint(5, 60))]
        texts.append("".join(p + rng.choice((" ", "", " ", "\n")) for p in parts))
    # characters Python calls punctuation or CJK that the tokenizer does not split on, at the cut
    texts += [
        "a b c d e f g " + " " * 77 + "inter" + ch + "national" for ch in ("\u2e43", "\u061d", "\U0002b820")
    ]
    for tokens, most in ((10, 1), (16, 1), (24, 2), (64, 3)):
        enc = load_encoder("static-minilm", Chunking(chunk_tokens=tokens, max_chunks=most))
        cut, _ = enc.chunk(texts)
        whole = [toks[a:b] for toks in enc.tokenize(texts) for a, b in enc.chunking.windows(len(toks))]
        assert cut == whole


def test_folder_digest_follows_content_not_location(tmp_path: Path) -> None:
    """The same files elsewhere give the same digest; any file edited, added or renamed, another."""
    from corpusfilter.embed import folder_digest

    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "model.safetensors").write_bytes(b"w" * 10)
    (a / "sub" / "tokenizer.json").write_text("{}")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    first = folder_digest(str(a))
    assert folder_digest(str(b)) == first
    (b / "sub" / "tokenizer.json").write_text("{ }")
    assert folder_digest(str(b)) != first
    (b / "sub" / "tokenizer.json").write_text("{}")
    assert folder_digest(str(b)) == first
    (b / "sub" / "tokenizer.json").rename(b / "tokenizer.json")
    assert folder_digest(str(b)) != first
