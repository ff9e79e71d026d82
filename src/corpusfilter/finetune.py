"""Fine-tuned transformer classifiers: MiniLM's encoder layers trained on the task, embeddings frozen.

Why: a head on frozen embeddings sees the document only through a fixed summary; training the
encoder layers lets the model read a story for its moral. The token embeddings stay frozen (words
the training set never shows keep their pretrained meaning) and are not stored: the model file holds
the six encoder layers (fp16, ~21 MB) and the linear head, and is applied on top of the packaged
MiniLM. A document is read as its first ``head_tokens`` and its last tokens, ``max_tokens`` in all
(a fable states its moral at the end).

Training is deterministic for a seed on one device type and software stack (batch order from a
local generator, dropout under a forked torch RNG, deterministic kernels); a GPU and a CPU do not
give bit-identical weights. A GPU trains under bfloat16 autocast; a CPU in fp32, or in bfloat16
autocast with ``cpu_bf16`` (1.4-1.6x faster where the CPU has native bf16). torch is imported on
first use.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from corpusfilter.embed import CHARS_PER_TOKEN, pad_with_specials, resolve_device, resolve_model, run_dtype
from corpusfilter.errors import RecipeError

if TYPE_CHECKING:
    from corpusfilter.train import FinetuneSpec

FORMAT = "corpusfilter-finetuned/1"
_SKIP = ("embeddings.", "pooler.")  # frozen (taken from the base model) or unused
_REPORT_EVERY_S = 60.0  # progress lines while training: a CPU run takes hours
_MARGIN = 16  # tokens a word cut in two may take (WordPiece splits an unknown word into pieces)
CHECKPOINT_EVERY = 20  # steps between checkpoints (``train --checkpoint``) unless told otherwise


def _fast_tokenizer(base_path: str) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(base_path) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def read_ids(tok: Any, texts: Sequence[str], *, max_tokens: int, head_tokens: int) -> list[list[int]]:
    """Token ids of each text without special tokens: all of them if they fit in ``max_tokens - 2``,
    else the first ``head_tokens`` and the last ``max_tokens - 2 - head_tokens``. A long text is
    tokenized as its two ends only (a cut that yields too few tokens is tokenized whole again)."""
    budget = max_tokens - 2
    tail = budget - head_tokens
    cut = CHARS_PER_TOKEN * max_tokens

    def encode(batch: list[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch_fast(batch, add_special_tokens=False)] if batch else []

    long = [i for i, t in enumerate(texts) if len(t) > 2 * cut]
    whole = encode([t for i, t in enumerate(texts) if len(t) <= 2 * cut])
    out: list[list[int]] = [[] for _ in texts]
    it = iter(whole)
    for i, t in enumerate(texts):
        if len(t) <= 2 * cut:
            out[i] = next(it)
    heads = encode([texts[i][:cut] for i in long])
    tails = encode([texts[i][-cut:] for i in long])
    for i, first, last in zip(long, heads, tails):
        # the cut's partial word sits at each piece's inner end: keep a margin of tokens beyond it
        if len(first) <= head_tokens + _MARGIN or len(last) <= tail + _MARGIN:
            out[i] = encode([texts[i]])[0]  # too few tokens for the cut: whole (clipped below)
        else:
            out[i] = first[:head_tokens] + (last[len(last) - tail :] if tail else [])
    return [ids if len(ids) <= budget else ids[:head_tokens] + ids[len(ids) - tail :] for ids in out]


def _pad(rows: list[list[int]], cls: int, sep: int, torch: Any) -> tuple[Any, Any]:
    ids, mask = pad_with_specials(rows, cls, sep)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _network(base_path: str, dropout: float, attention: str = "sdpa") -> Any:
    import torch
    from transformers import AutoModel

    class Net(torch.nn.Module):
        """Encoder, mean over the tokens (as all-MiniLM-L6-v2 pools), dropout, one logit."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(base_path, attn_implementation=attention)
            self.drop = torch.nn.Dropout(dropout)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, 1)

        def forward(self, ids: Any, mask: Any) -> Any:
            h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
            return self.head(self.drop(pooled)).squeeze(-1)

    return Net()


def train_classifier(
    texts: Sequence[str],
    y: np.ndarray,
    weights: np.ndarray,
    *,
    spec: FinetuneSpec,
    seed: int,
    out_path: Path,
    metadata: dict[str, str],
    checkpoint: Path | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> Path:
    """Fine-tune on (texts, y) with per-document ``weights`` (classes balanced here when
    ``spec.balance``); write the encoder layers and head to ``out_path`` (safetensors).

    With ``checkpoint`` (a folder), the whole training state is saved there every
    ``checkpoint_every`` steps and a run given the same folder resumes from it: the same model,
    bit for bit, as a run never stopped (tested). A checkpoint of another run (config, data, seed
    or device differ) is refused; it is removed once the model is written."""
    import torch
    from safetensors.torch import save

    _, base = resolve_model(spec.model)
    device = resolve_device(spec.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeError(f"finetune.device {spec.device!r}: torch sees no CUDA GPU")
    tok = _fast_tokenizer(base)
    ids = read_ids(tok, texts, max_tokens=spec.max_tokens, head_tokens=spec.head_tokens)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    y = np.asarray(y, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    if spec.balance and 0 < y.sum() < len(y):
        w = np.where(y == 1, w / w[y == 1].sum(), w / w[y == 0].sum()) / 2
    w = (w * len(w) / w.sum()).astype(np.float32)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    devices = [torch.device(device)] if device.startswith("cuda") else []
    kind = "cuda" if devices else "cpu"
    bf16 = trains_in_bf16(device, spec)
    ckpt = _Checkpoint(checkpoint, _run_key(spec, seed, device, bf16, ids, y, w)) if checkpoint else None
    with torch.random.fork_rng(devices=devices):  # dropout draws from a seeded, private RNG state
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            # on a GPU, attention spelled out: the fused kernels' backward passes are not deterministic
            net = _network(base, spec.dropout, "eager" if devices else "sdpa").to(device)
            for p in net.encoder.embeddings.parameters():
                p.requires_grad = False
            groups = [
                {"params": [p for p in net.encoder.parameters() if p.requires_grad], "lr": spec.lr},
                {"params": list(net.head.parameters()), "lr": spec.head_lr},
            ]
            opt = torch.optim.AdamW(groups, weight_decay=spec.weight_decay)
            steps = spec.epochs * math.ceil(len(ids) / spec.batch)
            warm = max(1, int(steps * spec.warmup))
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
            )
            rng = np.random.default_rng(seed)
            net.train()
            progress = _Progress(steps, spec.batch)
            start = ckpt.resume(net, opt, sched, rng, progress, devices) if ckpt else None
            for epoch in range(start[0] if start else 0, spec.epochs):
                if start and epoch == start[0]:
                    order = start[1]  # the interrupted epoch's batch order (the generator is past it)
                else:
                    order = rng.permutation(len(ids))
                first = start[2] if start and epoch == start[0] else 0
                for b in range(first, len(order), spec.batch):
                    j = order[b : b + spec.batch]
                    x, m = _pad([ids[i] for i in j], cls, sep, torch)
                    with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
                        logit = net(x.to(device), m.to(device))
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        logit.float(),
                        torch.from_numpy(y[j]).to(device),
                        weight=torch.from_numpy(w[j]).to(device),
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    progress.step(epoch, loss.detach())
                    if ckpt and progress.done % checkpoint_every == 0 and progress.done < steps:
                        ckpt.save(net, opt, sched, rng, progress, devices, epoch, order, b + spec.batch)
                progress.end_epoch(epoch)
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
    tensors = {
        f"encoder.{k}": v.detach().to("cpu", torch.float16).contiguous()
        for k, v in net.encoder.state_dict().items()
        if not k.startswith(_SKIP)
    }
    tensors.update(
        {f"head.{k}": v.detach().cpu().float().contiguous() for k, v in net.head.state_dict().items()}
    )
    meta = {
        "format": FORMAT,
        "base": spec.model,
        "max_tokens": str(spec.max_tokens),
        "head_tokens": str(spec.head_tokens),
        **metadata,
    }
    # one metadata key: safetensors writes several in hash order, and the file must be byte-stable.
    # Written as bytes through an ordinary file: safetensors' save_file creates it 0600, unreadable
    # to the rest of a lab sharing the model folder; this file gets the umask's mode, as metrics do
    Path(out_path).write_bytes(save(tensors, metadata={"corpusfilter": json.dumps(meta, sort_keys=True)}))
    if ckpt:
        ckpt.remove()
    return out_path


def _run_key(spec: Any, seed: int, device: str, bf16: bool, ids: list[list[int]], y: Any, w: Any) -> str:
    """What a checkpoint must match to be resumed: the settings, seed, device, precision and data."""
    import dataclasses
    import hashlib

    h = hashlib.sha256(json.dumps([dataclasses.asdict(spec), seed, device, bf16], sort_keys=True).encode())
    for row in ids:
        h.update(np.asarray(row, np.int64).tobytes() + b"|")
    h.update(np.ascontiguousarray(y).tobytes() + np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


class _Checkpoint:
    """The training state in one file (``folder/finetune.ckpt``): trained weights, optimizer,
    schedule, the batch-order generator, torch's RNG (dropout), the step and the epoch's order.
    Written under a temporary name and renamed, so a run killed while saving keeps the last one;
    read back with torch's weights-only loader (tensors and plain values, no code)."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path, self.key = Path(folder) / "finetune.ckpt", key

    def save(
        self, net: Any, opt: Any, sched: Any, rng: Any, progress: _Progress, devices: list[Any],
        epoch: int, order: np.ndarray, next_batch: int,
    ) -> None:  # fmt: skip
        import torch

        state = {
            "key": self.key,
            "net": {k: v for k, v in net.state_dict().items() if not k.startswith("encoder.embeddings.")},
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "rng": json.dumps(rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if devices else [],
            "done": progress.done,
            "epoch": epoch,
            "order": torch.from_numpy(np.asarray(order, np.int64)),
            "next_batch": next_batch,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)

    def resume(
        self, net: Any, opt: Any, sched: Any, rng: Any, progress: _Progress, devices: list[Any]
    ) -> tuple[int, np.ndarray, int] | None:
        """Restore the saved state into these objects: (epoch, its batch order, next batch start),
        or None when there is no checkpoint."""
        import torch
        from loguru import logger

        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception as e:
            raise RecipeError(
                f"{self.path}: not a readable checkpoint ({e}); remove it to start over"
            ) from None
        if state.get("key") != self.key:
            raise RecipeError(
                f"{self.path}: a checkpoint of another training run (the config, data, seed or device "
                "differ); remove it to start over"
            )
        missing, unexpected = net.load_state_dict(state["net"], strict=False)
        if unexpected or any(not k.startswith("encoder.embeddings.") for k in missing):
            raise RecipeError(f"{self.path}: its weights do not fit this model; remove it to start over")
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = json.loads(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if devices:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        progress.done = progress.resumed = int(state["done"])
        logger.info(f"finetune: resumed from {self.path} at step {progress.done}/{progress.steps}")
        return int(state["epoch"]), state["order"].numpy(), int(state["next_batch"])

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def trains_in_bf16(device: str, spec: FinetuneSpec) -> bool:
    """Whether training on ``device`` runs under bfloat16 autocast: always on a GPU, on a CPU with
    ``spec.cpu_bf16`` (a warning where the CPU lacks native bf16)."""
    return device.startswith("cuda") or run_dtype("cpu", cpu_bf16=spec.cpu_bf16) is not None


class _Progress:
    """Logs epoch, step, mean loss, documents/s and time left: every ``_REPORT_EVERY_S`` (loss over
    the steps since the last line) and at each epoch's end (loss over the epoch). Losses stay on the
    device between lines: no sync per step on a GPU."""

    def __init__(self, steps: int, batch: int) -> None:
        self.steps, self.batch, self.done = steps, batch, 0
        self.resumed = 0  # steps done before this process (a resumed run): not in the rate
        self.losses: list[Any] = []  # this epoch's; those since the last line start at ``mark``
        self.mark = 0
        self.t0 = self.last = time.perf_counter()

    def step(self, epoch: int, loss: Any) -> None:
        self.done += 1
        self.losses.append(loss)
        if time.perf_counter() - self.last >= _REPORT_EVERY_S:
            self._log(epoch, self.losses[self.mark :], "")
            self.mark = len(self.losses)

    def end_epoch(self, epoch: int) -> None:
        self._log(epoch, self.losses, " done")
        self.losses, self.mark = [], 0

    def _log(self, epoch: int, losses: list[Any], what: str) -> None:
        from loguru import logger

        now = time.perf_counter()
        rate = (self.done - self.resumed) / max(now - self.t0, 1e-9)  # steps/s
        mean = float(sum(losses)) / len(losses) if losses else float("nan")
        logger.info(
            f"finetune: epoch {epoch + 1}{what}, step {self.done}/{self.steps}, loss {mean:.4f}, "
            f"{rate * self.batch:.1f} docs/s, {(self.steps - self.done) / max(rate, 1e-9) / 60:.1f} min left"
        )
        self.last = now


def read_metadata(path: str | Path) -> dict[str, str]:
    """The model file's settings (no tensors loaded); a clear error for a file of another kind."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n)) if 0 < n < 10_000_000 else {}
    except (OSError, ValueError) as e:
        raise RecipeError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        meta = json.loads((header.get("__metadata__") or {}).get("corpusfilter", "{}"))
    except ValueError:
        meta = {}
    if meta.get("format") != FORMAT:
        raise RecipeError(f"{path}: not a corpusfilter fine-tuned model (format {meta.get('format')!r})")
    return dict(meta)


class FinetunedClassifier:
    """A fine-tuned model ready to score: the base MiniLM with the file's encoder layers and head.
    On a GPU it runs in fp16 unless ``fp16`` is false; on a CPU in bfloat16 if ``cpu_bf16``."""

    def __init__(
        self, path: str | Path, *, device: str = "auto", fp16: bool = True, cpu_bf16: bool = False
    ) -> None:
        import torch
        from safetensors.torch import load_file

        self.meta = read_metadata(path)
        self.max_tokens = int(self.meta["max_tokens"])
        self.head_tokens = int(self.meta["head_tokens"])
        _, base = resolve_model(self.meta["base"])
        self.device = resolve_device(device)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RecipeError(f"device {device!r}: torch sees no CUDA GPU")
        tensors = load_file(str(path))
        net = _network(base, 0.0)
        enc = {k.removeprefix("encoder."): v.float() for k, v in tensors.items() if k.startswith("encoder.")}
        missing, unexpected = net.encoder.load_state_dict(enc, strict=False)
        if unexpected or any(not k.startswith(_SKIP) for k in missing):
            raise RecipeError(
                f"{path}: its layers do not fit {self.meta['base']} ({(unexpected or missing)[:3]})"
            )
        net.head.load_state_dict(
            {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        )
        net.eval().to(self.device)
        dtype = run_dtype(self.device, fp16=fp16, cpu_bf16=cpu_bf16)
        if dtype is not None:
            net.to(dtype)
        self.net = net
        self.tok = _fast_tokenizer(base)
        self.cls, self.sep = self.tok.token_to_id("[CLS]"), self.tok.token_to_id("[SEP]")
        self._torch = torch

    def score(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """The positive class's probability per text."""
        return self.score_ids(self.tokenize(texts), batch_size)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids as the model reads them (its first and last tokens); CPU only, so a
        block can run it a batch ahead of :meth:`score_ids`."""
        return read_ids(self.tok, texts, max_tokens=self.max_tokens, head_tokens=self.head_tokens)

    def score_ids(self, ids: list[list[int]], batch_size: int = 32) -> np.ndarray:
        """The positive class's probability per row of :meth:`tokenize` (longest first in batches:
        little padding)."""
        torch = self._torch
        out = np.zeros(len(ids), dtype=np.float32)
        order = np.argsort([-len(r) for r in ids], kind="stable")
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                j = order[b : b + batch_size]
                x, m = _pad([ids[i] for i in j], self.cls, self.sep, torch)
                logit = self.net(x.to(self.device), m.to(self.device))
                out[j] = torch.sigmoid(logit.float()).cpu().numpy()
        return out
