"""Perplexity with the protocol of the pruning literature (SparseGPT, Wanda, AlphaPruning ``eval_ppl``).

The evaluation text (:func:`pruning.evaluation.data.load_text`) is tokenised once and cut into non-overlapping
windows of
``seqlen`` tokens (the remainder is dropped, as the references do); PPL = exp(mean token NLL over every predicted
token of every window).  Each window predicts its own tokens 2..seqlen from the ones before (no context from the
previous window), so there are ``seqlen - 1`` predicted tokens per window.  C4 keeps the first 256 windows, as the
references do (``valenc[:, :256 * seqlen]``).

BOS: when the tokenizer adds a BOS token by default (Llama-2, Gemma; detected by
:func:`pruning.evaluation.data.tokenizer_adds_bos`), every window is ``[BOS] + seqlen - 1`` text tokens — the model
input stays
``seqlen`` positions long and every text token of the window is predicted (the first one from BOS); consecutive
windows then hold ``seqlen - 1`` text tokens each.  Without BOS (SmolLM2, GPT-2) a window is ``seqlen`` text
tokens.  ``add_bos`` overrides the detection.  (The reference codes tokenise the whole text with the tokenizer's
defaults, so only their first window starts with BOS.)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from pruning.evaluation.data import canonical_name, get_eval_tokens, tokenizer_adds_bos
from spectra.models import model_and_tokenizer

__all__ = ["PerplexityResult", "perplexity", "eval_windows", "default_seqlen", "C4_MAX_WINDOWS"]

#: the references evaluate C4 on its first 256 windows
C4_MAX_WINDOWS = 256


@dataclass
class PerplexityResult:
    """``ppl = exp(nll)``; ``nll`` = mean NLL (nats) per predicted token; ``ntokens`` predicted tokens in all."""

    dataset: str
    ppl: float
    nll: float
    ntokens: int
    nwindows: int
    seqlen: int
    bos: bool

    def to_dict(self) -> dict:
        return asdict(self)


def default_seqlen(model) -> int:
    """min(2048, the model's max positions) — 2048 is the literature's context for LLaMA-class models."""
    cfg = getattr(model, "config", None)
    maxpos = None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        val = getattr(cfg, attr, None) if cfg is not None else None
        if isinstance(val, int) and val > 0:
            maxpos = val
            break
    return min(2048, maxpos) if maxpos else 2048


def eval_windows(tokens: torch.Tensor, seqlen: int, bos_id: Optional[int] = None,
                 max_windows: Optional[int] = None) -> torch.Tensor:
    """(n, seqlen) windows of a (1, T) or (T,) token stream, non-overlapping, remainder dropped.

    With ``bos_id``: each row is ``[bos_id] + seqlen - 1`` consecutive tokens; without: ``seqlen`` tokens.
    """
    flat = tokens.reshape(-1).to(torch.long)
    if seqlen < 2:
        raise ValueError(f"seqlen must be at least 2 (got {seqlen})")
    step = seqlen - 1 if bos_id is not None else seqlen
    n = flat.numel() // step
    if max_windows is not None:
        if int(max_windows) < 1:
            raise ValueError(f"max_windows must be positive (got {max_windows})")
        n = min(n, int(max_windows))
    if n == 0:
        raise ValueError(f"the text has {flat.numel()} tokens, fewer than one window of {seqlen}; lower seqlen")
    body = flat[: n * step].reshape(n, step)
    if bos_id is None:
        return body
    return torch.cat([torch.full((n, 1), int(bos_id), dtype=torch.long), body], dim=1)


def prepare_windows(model, tokenizer, dataset: str, seqlen: Optional[int] = None, max_windows: Optional[int] = None,
                    add_bos: Optional[bool] = None, path=None) -> tuple[str, int, torch.Tensor, Optional[int]]:
    """(dataset key, seqlen, (n, seqlen) evaluation windows, BOS id or None) of the literature protocol (module doc)."""
    key = canonical_name(dataset)
    seqlen = int(seqlen) if seqlen is not None else default_seqlen(model)
    use_bos = tokenizer_adds_bos(tokenizer) if add_bos is None else bool(add_bos)
    bos_id = getattr(tokenizer, "bos_token_id", None) if use_bos else None
    if use_bos and bos_id is None:
        raise ValueError("add_bos=True but the tokenizer has no BOS token; use add_bos=False")
    if max_windows is None and key == "c4":
        max_windows = C4_MAX_WINDOWS
    return key, seqlen, eval_windows(get_eval_tokens(tokenizer, key, path), seqlen, bos_id, max_windows), bos_id


@torch.no_grad()
def batch_nll(model, batch: torch.Tensor) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (float64) and the number of predicted tokens of one batch of
    windows ``(b, seqlen)``: cross-entropy of logits[:, :-1] against input_ids[:, 1:] (the literature protocol)."""
    logits = model(input_ids=batch, use_cache=False).logits
    shift = logits[:, :-1, :].float()
    target = batch[:, 1:]
    nll = F.cross_entropy(shift.reshape(-1, shift.shape[-1]), target.reshape(-1), reduction="sum")
    return float(nll.double().item()), target.numel()


@torch.no_grad()
def perplexity(model, tokenizer=None, dataset: str = "wikitext2", seqlen: Optional[int] = None,
               max_windows: Optional[int] = None, batch_size: int = 1, add_bos: Optional[bool] = None,
               progress: bool = True, progress_cb: Optional[Callable[[int, int], None]] = None,
               device=None, path=None) -> PerplexityResult:
    """Perplexity of a causal LM on ``dataset`` (``wikitext2 c4 ptb ptb-valid``) with the literature protocol.

    ``seqlen`` defaults to :func:`default_seqlen`; ``max_windows`` keeps the first windows only (C4 defaults to
    256 like the references); ``progress_cb(done_windows, total_windows)`` is called after every batch.
    ``path`` is passed to :func:`pruning.evaluation.data.get_eval_tokens` (file or data folder).
    """
    model, tokenizer = model_and_tokenizer(model, tokenizer)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive (got {batch_size})")
    key, seqlen, windows, bos_id = prepare_windows(model, tokenizer, dataset, seqlen, max_windows, add_bos, path)
    n = windows.shape[0]
    if device is None:
        try:
            device = next(model.parameters()).device
        except (StopIteration, AttributeError):
            device = torch.device("cpu")
    was_training = getattr(model, "training", False)
    model.eval()
    total_nll = 0.0
    total_tok = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"ppl {key} (seqlen {seqlen})", unit="win", leave=False)
    try:
        for start in range(0, n, batch_size):
            batch = windows[start:start + batch_size].to(device)
            nll, ntok = batch_nll(model, batch)
            total_nll += nll
            total_tok += ntok
            done = min(start + batch_size, n)
            if bar is not None:
                bar.update(batch.shape[0])
            if progress_cb is not None:
                progress_cb(done, n)
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model.train()
    mean = total_nll / total_tok
    return PerplexityResult(dataset=key, ppl=math.exp(mean), nll=mean, ntokens=total_tok, nwindows=n,
                            seqlen=seqlen, bos=bos_id is not None)
