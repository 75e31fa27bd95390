"""Item representations for recommenders: an id embedding fused with the item's other modalities.

A film is more than its id: its genres, its year and its title say something about it even when
few people have rated it. :class:`ItemEncoder` turns each item into one vector from up to four
modalities (the articles' "multimodal attention fusion"):

* ``id``: a learned embedding per item (always present);
* categorical side features (e.g. genres, several values per item): a mean of value embeddings
  per column;
* numeric side features (e.g. year): standardised values plus a missing flag, projected;
* text (e.g. the title): a frozen sentence vector per item (the MiniLM encoder, computed once when
  the model is built), projected.

The per-item feature tables are *buffers*: they are saved in ``model.safetensors`` with the
weights, so a model directory is self-contained and nothing is re-read at load time. Fusion is
either ``"attention"`` (the id embedding queries the modality vectors through
:class:`~attend.attention.CrossModalAttention`) or ``"gated"`` (a softmax gate over modalities
computed from all of them), and :meth:`ItemEncoder.modality_weights` reports, per item, how much
each modality counted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attend.attention import CrossModalAttention
from attend.attention.dropout import Dropout

__all__ = ["FUSIONS", "ItemEncoder", "check_item_spec"]

#: How the modalities of an item are fused into one vector.
FUSIONS = ("gated", "attention")


def check_item_spec(spec: dict[str, Any] | None) -> None:
    """Validate a feature spec: ``{"categorical": {column: [vocab_size, width]}, "numeric": [columns],
    "text_dim": int, "fusion": "gated" | "attention"}`` (every key optional)."""
    if spec is None:
        return
    unknown = set(spec) - {"categorical", "numeric", "text_dim", "fusion", "text_columns"}
    if unknown:
        raise ValueError(f"item features: unknown key(s) {sorted(unknown)}")
    fusion = spec.get("fusion", "gated")
    if fusion not in FUSIONS:
        raise ValueError(f"item features: fusion={fusion!r}; choose one of {list(FUSIONS)}")
    for column, shape in (spec.get("categorical") or {}).items():
        if not (isinstance(shape, list | tuple) and len(shape) == 2 and all(int(v) > 0 for v in shape)):
            raise ValueError(f"item features: categorical {column!r} needs [vocab_size, width], got {shape!r}")
    if int(spec.get("text_dim", 0)) < 0:
        raise ValueError(f"item features: text_dim={spec.get('text_dim')} must be >= 0")


class ItemEncoder(nn.Module):
    """Vectors ``(num_items + 1, dim)`` for the whole catalogue (row 0 is padding).

    Args:
        num_items: Items in the catalogue (indices 1..num_items).
        dim: Width of the item vectors.
        spec: Feature spec (see :func:`check_item_spec`); None: id embedding only.
        dropout: Dropout on the fused vectors, in training.
    """

    def __init__(self, num_items: int, dim: int, spec: dict[str, Any] | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        check_item_spec(spec)
        spec = spec or {}
        self.num_items, self.dim = num_items, dim
        self.ids = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.ids.weight, std=dim**-0.5)
        with torch.no_grad():
            self.ids.weight[0].zero_()
        self.categorical = nn.ModuleList()
        self.columns: list[str] = []
        for column, (vocab, width) in sorted((spec.get("categorical") or {}).items()):
            self.register_buffer(f"cat_{len(self.columns)}", torch.zeros(num_items + 1, int(width), dtype=torch.long))
            self.categorical.append(nn.EmbeddingBag(int(vocab) + 1, dim, mode="mean", padding_idx=0))
            self.columns.append(column)
        self.numeric_columns = list(spec.get("numeric") or [])
        self.numeric_proj: nn.Linear | None = None
        if self.numeric_columns:
            # Per column: the standardised value (0 when missing) and a missing flag.
            self.register_buffer("numeric", torch.zeros(num_items + 1, 2 * len(self.numeric_columns)))
            self.numeric_proj = nn.Linear(2 * len(self.numeric_columns), dim)
        self.text_dim = int(spec.get("text_dim", 0))
        self.text_proj: nn.Linear | None = None
        if self.text_dim:
            self.register_buffer("text", torch.zeros(num_items + 1, self.text_dim))
            self.text_proj = nn.Linear(self.text_dim, dim)
        self.modalities = ["id", *self.columns, *(["numeric"] if self.numeric_columns else []),
                           *(["text"] if self.text_dim else [])]  # fmt: skip
        self.fusion = spec.get("fusion", "gated")
        count = len(self.modalities)
        self.gate: nn.Linear | None = None
        self.cross: CrossModalAttention | None = None
        if count > 1 and self.fusion == "gated":
            self.gate = nn.Linear(count * dim, count)
        elif count > 1:
            self.cross = CrossModalAttention(dim, dim, num_heads=1, ffn_dim=0)
        self.drop = Dropout(dropout)

    def set_features(self, tables: dict[str, Tensor]) -> None:
        """Fill the feature buffers (``cat_<i>``, ``numeric``, ``text``) from tensors of the same shape."""
        buffers = dict(self.named_buffers())
        for name, value in tables.items():
            if name not in buffers:
                raise KeyError(f"item encoder has no feature table {name!r} (has {sorted(buffers)})")
            if tuple(value.shape) != tuple(buffers[name].shape):
                raise ValueError(f"feature table {name!r} has shape {tuple(value.shape)}, expected "
                                 f"{tuple(buffers[name].shape)}")  # fmt: skip
            buffers[name].copy_(value.to(buffers[name].dtype))

    def _modality_vectors(self) -> Tensor:
        """``(num_items + 1, M, dim)``: each item's vector from each modality."""
        vectors = [self.ids.weight]
        for i, bag in enumerate(self.categorical):
            vectors.append(bag(getattr(self, f"cat_{i}")))
        if self.numeric_proj is not None:
            vectors.append(self.numeric_proj(self.numeric))
        if self.text_proj is not None:
            vectors.append(self.text_proj(self.text))
        return torch.stack(vectors, dim=1)

    def _fuse(self, stacked: Tensor) -> tuple[Tensor, Tensor]:
        """Fused vectors and the modality weights ``(N, M)``."""
        count = stacked.shape[1]
        if count == 1:
            return stacked[:, 0], stacked.new_ones(stacked.shape[0], 1)
        if self.gate is not None:
            weights = torch.softmax(self.gate(stacked.flatten(1)), dim=-1)  # (N, M)
            return (weights.unsqueeze(-1) * stacked).sum(1), weights
        assert self.cross is not None
        fused, weights = self.cross(stacked[:, :1], stacked, need_weights=True)
        assert weights is not None
        return fused[:, 0], weights[:, 0, 0]  # one head, one query

    def forward(self) -> Tensor:
        """The catalogue's vectors ``(num_items + 1, dim)``; row 0 (padding) is zero."""
        if len(self.modalities) == 1:
            table = self.ids.weight
        else:
            table, _ = self._fuse(self._modality_vectors())
        table = self.drop(table)
        return torch.cat([torch.zeros_like(table[:1]), table[1:]])

    @torch.no_grad()
    def modality_weights(self, items: Tensor) -> dict[str, list[float]]:
        """For each given item, how much each modality counted in its vector (sums to 1 per item)."""
        _, weights = self._fuse(self._modality_vectors()[items])
        return {name: weights[:, m].tolist() for m, name in enumerate(self.modalities)}
