"""The CUDA path (fp16, prefetching batches) gives what the CPU path gives. Skipped without a GPU."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.embed,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_cuda_fp16_embeddings_match_cpu() -> None:
    from corpusfilter.embed import Chunking, load_encoder

    texts = ["Be kind to one another.", "word " * 600, "The function returns a list."] * 20
    chunking = Chunking(chunk_tokens=128, max_chunks=4)
    cpu, _ = load_encoder("minilm", chunking, device="cpu").embed_chunks(texts, batch_size=16)
    gpu, _ = load_encoder("minilm", chunking, device="cuda").embed_chunks(texts, batch_size=16)
    assert gpu.dtype == np.float32
    assert np.min(np.sum(cpu * gpu, axis=1)) > 0.999  # cosine between fp32 CPU and fp16 GPU embeddings
