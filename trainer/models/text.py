"""The text tower on tokens cut to the batch's longest caption (`--trim-text`, on by default).

open_clip's CLIP runs its text transformer on all `context_length` tokens, though captions are
mostly a fraction of that and the rest is padding. Under its causal mask a position only sees
the positions before it, and the features are pooled at one position per caption (the EOT token:
`argmax` of the ids, or the first `eos` id), so cutting every caption of the batch after
L = (the last pooled position) + 1 leaves the pooled features and all their gradients unchanged:
the positions cut off never reach a pooled one. L is rounded up to a multiple of `BUCKET` (fewer
distinct shapes for torch.compile; still exact), never above the context length. Compiled, the
lengths take three graphs at most: the first length seen, one with the length dynamic, and the
uncut context (slicing all of it is a case of its own).

`TrimmedText` is the module the training loop calls (DDP and torch.compile wrap it, so both
towers still run inside one forward, which DDP's gradient hooks need); it holds the model as its
only submodule, so it has the same parameters. `cut` trims a token batch on the host before the
call: the one data-dependent size stays outside any compiled graph.
"""

import logging

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

log = logging.getLogger(__name__)

BUCKET = 8
POOLS = ("argmax", "eos")  # one pooled position per caption, found from the token ids alone


def why_not_exact(model) -> str | None:
    """None if cutting the tokens leaves `model`'s text features unchanged; else the reason."""
    from open_clip.model import CLIP

    if not isinstance(model, CLIP) or type(model).encode_text is not CLIP.encode_text:
        return f"{type(model).__name__} is not open_clip's CLIP with its own text tower"
    if model.text_pool_type not in POOLS:
        return f"text pooling {model.text_pool_type!r} (exact only for {' or '.join(POOLS)})"
    n = model.context_length
    if model.positional_embedding.shape[0] != n:  # a class token adds a position
        return "the text tower has a class token"
    mask = model.attn_mask
    if mask is None or tuple(mask.shape) != (n, n) or not _is_causal(mask):
        return "the text transformer has no causal attention mask"
    return None


def _is_causal(mask: torch.Tensor) -> bool:
    above = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.isneginf(mask[above]).all() and (mask[~above] == 0).all())


class TrimmedText(torch.nn.Module):
    """CLIP's forward (same output dict) whose text tower takes token batches cut by `cut`."""

    def __init__(self, model):
        super().__init__()
        reason = why_not_exact(model)
        if reason:
            raise ValueError(f"cutting the text tokens would change the features: {reason}")
        self.model = model

    def cut(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tokens up to the batch's last pooled position, rounded up to a multiple of
        BUCKET (at most the context length). Reads one number back from the device."""
        m = self.model
        if m.text_pool_type == "eos":
            pooled = (tokens == m.text_eos_id).int().argmax(dim=1)
        else:
            pooled = tokens.argmax(dim=1)
        last = int(pooled.max()) + 1 if tokens.shape[0] else 1
        length = min(-(-last // BUCKET) * BUCKET, tokens.shape[1])
        # contiguous: a view would have the full context as its row stride, and torch.compile
        # would compile once more for the uncut (contiguous) batches
        return tokens[:, :length].contiguous()

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's CLIP.encode_text with the positions and mask sliced to the tokens given."""
        m = self.model
        n = text.shape[1]
        cast_dtype = m.transformer.get_cast_dtype()
        x = m.token_embedding(text).to(cast_dtype)
        x = x + m.positional_embedding[:n].to(cast_dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        x = m.ln_final(x)
        x = text_global_pool(x, text, m.text_pool_type, eos_token_id=m.text_eos_id)
        if isinstance(m.text_projection, torch.nn.Linear):
            x = m.text_projection(x)
        elif m.text_projection is not None:
            x = x @ m.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict:
        out = self.model(image, None)  # the image tower, scale and bias as open_clip returns them
        out["text_features"] = self.encode_text(text, normalize=True)
        return out


def for_training(model, enabled: bool):
    """(module for the training loop to call, its `cut` for token batches or None). Falls back
    to the model itself, saying why once, where cutting would not be exact."""
    if not enabled:
        return model, None
    reason = why_not_exact(model)
    if reason:
        log.info("--trim-text: off for this model (%s); the text tower runs on all tokens", reason)
        return model, None
    wrapper = TrimmedText(model)
    return wrapper, wrapper.cut
