"""Multi-head attention (Vaswani et al. 2017) with pluggable scores, masks and backends.

One module covers self- and cross-attention, every score in :data:`SCORES`, full, local and
linear attention, and the adaptive variants. The choices are made once, at construction:
the module picks a backend from :data:`~attend.attention.backends.BACKENDS` and rejects option
combinations that cannot work together, so no call silently degrades to a slower path or
silently ignores a mask.

Shapes: ``B`` batch, ``Lq``/``Lk`` query/key length, ``E`` embed_dim, ``H`` heads,
``d`` head_dim (``E / H`` unless given), ``D = H * d`` the inner width (``E`` unless heads
were pruned). Tensors are batch-first.

Head pruning (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"):
:meth:`MultiHeadAttention.prune_heads` removes heads for real, so the projections shrink to
``D = H' * d`` rows (and the output projection to ``D`` columns) while ``E`` stays the same; a
module built with ``num_heads=H'`` and ``head_dim=d`` has exactly that shape, so a config that
records the remaining heads rebuilds a pruned model.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from attend.attention._ops import check_features, check_flag, check_rate
from attend.attention.adaptive import AdaptiveSpan
from attend.attention.backends import get_backend
from attend.attention.cache import KeyValueCache, cached_causal_mask
from attend.attention.capture import Recordable
from attend.attention.efficient import EluFeatureMap, FavorFeatureMap
from attend.attention.masks import MaskSpec
from attend.attention.scores import build_score
from attend.attention.unpad import TokenLayout

__all__ = ["ATTENTION_KINDS", "MultiHeadAttention"]

#: Values of ``attention=``: how keys are gathered for each query.
ATTENTION_KINDS = ("full", "local", "linear", "performer")

#: Optimiser steps taken in this process: part of the packed-weight cache's key, since fused
#: optimisers (``AdamW(fused=True)``) change weights without moving their version counters.
_optimiser_steps = 0


def _count_optimiser_step(optimiser: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    global _optimiser_steps
    _optimiser_steps += 1


register_optimizer_step_post_hook(_count_optimiser_step)


class MultiHeadAttention(Recordable, nn.Module):
    """Multi-head attention, batch-first, with ``nn.MultiheadAttention``'s arguments and numbers.

    Not a drop-in replacement for it: inputs are always batch-first (``from_torch`` copies a
    ``batch_first=False`` module's weights; transpose its inputs), ``key_padding_mask`` and
    ``attn_mask`` are keywords and a boolean padding mask (or a float ``attn_mask``), weights are
    returned only when ``need_weights=True`` and per head ``(B, H, Lq, Lk)`` (torch's default
    averages them), and there is no ``average_attn_weights``: take ``weights.mean(1)``.

    Args:
        embed_dim: Model width ``E``; queries have this size and so does the output.
        num_heads: Number of heads ``H``; must divide ``embed_dim`` unless ``head_dim`` is given.
        head_dim: Size ``d`` of one head (default ``embed_dim // num_heads``). Set it when the
            heads' total width ``H * d`` differs from ``E``, e.g. for a model whose heads were pruned.
        score: Scoring function from :data:`~attend.attention.scores.SCORES`.
        dropout: Dropout on the attention weights, in training only.
        bias: Bias terms in the input and output projections.
        kdim: Feature size of keys (default ``embed_dim``), for cross-attention between modalities.
        vdim: Feature size of values (default ``kdim``'s default, ``embed_dim``).
        attention: ``"full"``, ``"local"`` (sliding window, needs ``window``), ``"linear"``
            (elu+1 kernel) or ``"performer"`` (FAVOR+ random features).
        window: Band half-width: with ``"local"`` the efficient O(L*w) path; with ``"full"`` a band mask.
        backend: For ``"full"`` attention, ``"sdpa"`` (fused; default when the score allows it)
            or ``"eager"`` (explicit). Other kinds have exactly one backend.
        learn_temperature: Learn a per-head temperature on the scores.
        adaptive_span: Maximum span to learn per head (Sukhbaatar et al. 2019); None disables.
        span_ramp: Width of the adaptive span's soft edge, in tokens.
        span_loss: Weight of the span penalty in the training loss (:meth:`auxiliary_loss`); the
            paper's 2e-6 by default. Under Adam even a small weight steadily shrinks spans that the
            task's gradient does not hold open.
        gate: Multiply each head's output by ``sigmoid(W_g x_q)`` before the output projection,
            letting a head switch itself off for a token (gated attention).
        num_features: Random features for ``"performer"``.
        feature_seed: Seed of the performer's random projection.
        chunk_size: Chunk length of causal linear attention.
        score_options: Extra keyword arguments for the score (e.g. ``{"hidden_dim": 32}``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        head_dim: int | None = None,
        score: str = "scaled_dot",
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        attention: str = "full",
        window: int | None = None,
        backend: str | None = None,
        learn_temperature: bool = False,
        adaptive_span: int | None = None,
        span_ramp: int = 32,
        span_loss: float = 2e-6,
        gate: bool = False,
        num_features: int = 256,
        feature_seed: int = 0,
        chunk_size: int = 64,
        score_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads), ("head_dim", head_dim),
                            ("kdim", kdim), ("vdim", vdim), ("window", window), ("adaptive_span", adaptive_span),
                            ("span_ramp", span_ramp), ("num_features", num_features), ("chunk_size", chunk_size)):
            # window=2.5 had acted as 2 (and failed inside F.pad under attention='local')
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ValueError(f"{name}={value!r} must be an integer")
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim={embed_dim} and num_heads={num_heads} must be positive")
        if head_dim is None and embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        if head_dim is not None and head_dim <= 0:
            raise ValueError(f"head_dim={head_dim} must be positive")
        check_rate("dropout", dropout, upper=1.0)
        for name, flag in (("bias", bias), ("learn_temperature", learn_temperature), ("gate", gate)):
            check_flag(name, flag)  # gate='no' had turned the gate on
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention={attention!r}; choose one of {list(ATTENTION_KINDS)}")
        if window is not None and window < 0:
            raise ValueError(f"window={window} must be >= 0")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size={chunk_size} must be positive")
        check_rate("span_loss", span_loss)  # nan had made every training loss NaN
        if adaptive_span is not None and adaptive_span <= 0:  # AdaptiveSpan had named it max_span
            raise ValueError(f"adaptive_span={adaptive_span} must be positive (None: no adaptive span)")
        for name, size in (("kdim", kdim), ("vdim", vdim)):
            if size is not None and size <= 0:
                raise ValueError(f"{name}={size} must be positive")

        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim if head_dim is not None else embed_dim // num_heads
        self.inner_dim = self.num_heads * self.head_dim  # D: E, unless heads were pruned
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.dropout = dropout
        self.attention = attention
        self.window = window
        self.chunk_size = chunk_size
        self.score_name = score

        self.q_proj = nn.Linear(embed_dim, self.inner_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, self.inner_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, self.inner_dim, bias=bias)
        self.out_proj = nn.Linear(self.inner_dim, embed_dim, bias=bias)
        self.score = build_score(
            score, self.head_dim, num_heads, learn_temperature=learn_temperature, **(score_options or {})
        )
        self.span = AdaptiveSpan(num_heads, adaptive_span, ramp=span_ramp) if adaptive_span is not None else None
        self.span_loss = span_loss
        self.gate_proj = nn.Linear(embed_dim, self.inner_dim) if gate else None
        self.feature_map: nn.Module | None = None

        if attention in ("linear", "performer"):
            conflicts = {
                # its kernel stands for the scaled dot product: "dot" (unscaled) had been taken for it
                "score": score if score != "scaled_dot" else None,
                "window": window,
                "adaptive_span": adaptive_span,
                "learn_temperature": learn_temperature or None,
                "dropout": dropout or None,
                "backend": backend if backend not in (None, "linear") else None,
            }
            named = [f"{name}={value!r}" for name, value in conflicts.items() if value is not None]
            if named:
                raise ValueError(
                    f"attention={attention!r} replaces the softmax with a kernel and cannot be combined with "
                    + ", ".join(named)
                )
            self.feature_map = (
                EluFeatureMap()
                if attention == "linear"
                else FavorFeatureMap(self.head_dim, num_features, seed=feature_seed)
            )
            self.backend_name = "linear"
        elif attention == "local":
            if window is None:
                raise ValueError("attention='local' needs window= (keys within that distance are attended)")
            if backend not in (None, "local"):
                raise ValueError(f"attention='local' has its own backend; backend={backend!r} cannot be used")
            self.backend_name = "local"
        else:
            chosen = backend or ("sdpa" if self.score.fusable else "eager")
            if chosen == "sdpa" and not self.score.fusable:
                raise ValueError(f"score={score!r} is not a dot product, so backend='sdpa' cannot run it; use 'eager'")
            if chosen not in ("sdpa", "eager"):
                raise ValueError(f"backend={chosen!r} is not a full-attention backend; choose 'sdpa' or 'eager'")
            self.backend_name = chosen
        self._backend = get_backend(self.backend_name)
        self._packed_cache: tuple[tuple[Any, ...], Tensor, Tensor | None] | None = None

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention, **options: Any) -> MultiHeadAttention:
        """Copy an ``nn.MultiheadAttention``'s weights and its train/eval mode; outputs then match it
        to float tolerance.

        Our module is always batch-first; transpose inputs of a ``batch_first=False`` original.
        ``options`` are this class's own (``score="cosine"``), or override what is copied
        (``dropout=0.0``).
        """
        if module.bias_k is not None or module.bias_v is not None:
            raise ValueError("nn.MultiheadAttention with add_bias_kv=True has no equivalent here")
        if module.add_zero_attn:
            raise ValueError("nn.MultiheadAttention with add_zero_attn=True has no equivalent here")
        has_bias = module.in_proj_bias is not None
        copied = {"dropout": module.dropout, "bias": has_bias, "kdim": module.kdim, "vdim": module.vdim}
        ours = cls(module.embed_dim, module.num_heads, **(copied | options))
        with torch.no_grad():
            if module.in_proj_weight is not None:  # packed when kdim == vdim == embed_dim
                w_q, w_k, w_v = module.in_proj_weight.chunk(3)
            else:
                w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
            ours.q_proj.weight.copy_(w_q)
            ours.k_proj.weight.copy_(w_k)
            ours.v_proj.weight.copy_(w_v)
            ours.out_proj.weight.copy_(module.out_proj.weight)
            if has_bias:
                b_q, b_k, b_v = module.in_proj_bias.chunk(3)
                ours.q_proj.bias.copy_(b_q)
                ours.k_proj.bias.copy_(b_k)
                ours.v_proj.bias.copy_(b_v)
                ours.out_proj.bias.copy_(module.out_proj.bias)
        # The original's mode too: a module in eval mode had been copied into one that trains (dropout on).
        return ours.to(device=module.out_proj.weight.device, dtype=module.out_proj.weight.dtype).train(module.training)

    def span_penalty(self) -> Tensor:
        """Adaptive-span loss term (zero when adaptive span is off): add ``coef * this`` to the loss."""
        if self.span is None:
            return self.out_proj.weight.new_zeros(())
        return self.span.penalty()

    def auxiliary_loss(self) -> Tensor | None:
        """``span_loss * span_penalty()``, the term adaptive span adds to the training loss; None without it.

        Collected from every module of a model by :func:`attend.models.auxiliary_loss`, which the
        Trainer adds to each step's loss.
        """
        if self.span is None or not self.span_loss:
            return None
        return self.span_loss * self.span.penalty()

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def _packed_self_projection(self, x: Tensor, layout: TokenLayout | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention's three projections as one GEMM (as torch's packed ``in_proj``).

        One ``(B*L, E) @ (E, 3D)`` product uses the matmul units better than three thin ones;
        concatenating the weights costs ``3 D E`` copies, small against ``B L D E``. With a
        ``layout``, ``x`` is ``(T, E)`` real tokens, and the product's rows are spread onto the
        padded grid only afterwards.
        """
        weight, bias = self._packed_weights()
        qkv = F.linear(x, weight, bias)
        if layout is not None and torch.compiler.is_compiling():
            q, k, v = layout.unpack_heads(qkv, 3, self.num_heads)
            return q, k, v
        if layout is not None:
            qkv = layout.unpack(qkv)  # (T, 3D) -> (B, L, 3D)
        batch, length, _ = qkv.shape
        qkv = qkv.view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, d)
        return q, k, v

    def train(self, mode: bool = True) -> MultiHeadAttention:
        """Switch training/eval mode (recursively, as :meth:`torch.nn.Module.train`) and drop the
        packed-weight cache: an optimiser may change the weights without moving their version
        counters (``torch.optim.AdamW(fused=True)`` does not), so a copy packed before training
        steps must not serve the evaluation after them."""
        self._packed_cache = None
        return super().train(mode)

    def _packed_weights(self) -> tuple[Tensor, Tensor | None]:
        """``[W_q; W_k; W_v]`` and the biases. In eval mode without autograd the packed copy is
        cached (e.g. in serving) and rebuilt when a parameter is replaced or changed in place
        through autograd's view of it (its version counter moves), after any optimiser step in the
        process (fused optimisers change weights without moving the counter), or when the mode is
        switched (:meth:`train`). A write through ``param.data`` moves no counter: call
        ``module.eval()`` after one."""
        params = [self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]
        biases = [self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]
        if torch.compiler.is_compiling():
            # torch.export / torch.compile trace with fake tensors, which have no data pointer
            # to key a cache on; the traced graph concatenates once per call, as autograd does.
            return torch.cat(params), None if biases[0] is None else torch.cat(biases)  # type: ignore[arg-type]
        cacheable = not self.training and not (torch.is_grad_enabled() and any(p.requires_grad for p in params))
        present = [p for p in params + biases if p is not None]
        key = (_optimiser_steps, *((p.data_ptr(), p._version, p.dtype) for p in present))
        cached = self._packed_cache
        # A copy packed under inference_mode serves only there: autograd cannot save it for a later
        # backward (predict, then explain by gradients on the frozen model, had raised).
        if cacheable and cached is not None and cached[0] == key and (
                torch.is_inference_mode_enabled() or not cached[1].is_inference()):  # fmt: skip
            return cached[1], cached[2]
        weight = torch.cat(params)  # (3D, E)
        bias = None if biases[0] is None else torch.cat(biases)  # type: ignore[arg-type]
        if cacheable:
            self._packed_cache = (key, weight, bias)
        return weight, bias

    def _packable(self) -> bool:
        """Whether the q/k/v projections are plain ``nn.Linear`` layers whose weights can be concatenated.

        Anything that makes a projection more than its weight runs the three modules themselves,
        as cross-attention does: a subclass (a LoRA-style adapter), a forward hook or pre-hook on
        one of them or on every module (activation inspection, steering, ``torch.nn.utils.prune``).
        Dynamically quantised projections (``torch.ao`` int8 ``Linear``) keep packed int8 weights
        behind a method instead; they run as three separate (quantised) products.
        """
        projections = (self.q_proj, self.k_proj, self.v_proj)
        if any(type(p) is not nn.Linear or p._forward_hooks or p._forward_pre_hooks for p in projections):
            return False
        module_hooks = torch.nn.modules.module
        return not (getattr(module_hooks, "_global_forward_hooks", None)
                    or getattr(module_hooks, "_global_forward_pre_hooks", None))  # fmt: skip

    @torch.no_grad()
    def prune_heads(self, heads: Iterable[int]) -> None:
        """Remove ``heads`` (indices into the current heads) for real: every projection shrinks.

        Michel et al. 2019 show that many heads can go with little loss. Head ``h`` owns rows
        ``h*d:(h+1)*d`` of the q/k/v (and gate) projections and the same columns of the output
        projection, plus slice ``h`` of every per-head parameter of the score and the adaptive
        span (all of which have a leading ``H`` axis); removing those gives exactly the outputs
        of the unpruned module with those heads' outputs zeroed before the output projection.

        Raises:
            ValueError: an index out of range, or no head left.
        """
        drop = sorted({int(h) for h in heads})
        bad = [h for h in drop if not 0 <= h < self.num_heads]
        if bad:
            raise ValueError(f"heads {bad} out of range: this module has {self.num_heads} heads")
        if not drop:
            return
        keep = [h for h in range(self.num_heads) if h not in drop]
        if not keep:
            raise ValueError(f"cannot prune all {self.num_heads} heads of an attention module")
        keep_t = torch.tensor(keep)
        rows = (keep_t[:, None] * self.head_dim + torch.arange(self.head_dim)).flatten()  # kept rows of D
        for name in ("q_proj", "k_proj", "v_proj", "gate_proj"):
            layer = getattr(self, name)
            if layer is not None:
                setattr(self, name, _slice_linear(layer, rows, dim=0))
        self.out_proj = _slice_linear(self.out_proj, rows, dim=1)
        for module in (self.score, self.span):
            if module is None:
                continue
            for param_name, param in list(module.named_parameters(recurse=False)):
                if param.shape[0] != self.num_heads:
                    raise ValueError(
                        f"{type(module).__name__}.{param_name} has shape {tuple(param.shape)}, not one slice per head; "
                        "cannot prune it"
                    )
                setattr(module, param_name, nn.Parameter(param[keep_t].clone(), requires_grad=param.requires_grad))
        if hasattr(self.score, "num_heads"):
            self.score.num_heads = len(keep)
        self.num_heads = len(keep)
        self.inner_dim = self.num_heads * self.head_dim
        self._packed_cache = None

    def _weights_dtype(self) -> torch.dtype | None:
        """The dtype inputs must have: the projections' (None under int8, whose ``weight`` is a method
        and whose inputs are float32 anyway, as torch's dynamic quantisation checks)."""
        weight = self.out_proj.weight
        return weight.dtype if isinstance(weight, Tensor) else None

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        for name, given in (("query", query), ("key", key), ("value", value)):
            check_features(name, given, self._weights_dtype())
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(
                f"query has shape {tuple(query.shape)}, expected (batch, query_len, embed_dim={self.embed_dim})"
            )
        if key.dim() != 3 or key.shape[-1] != self.kdim:
            raise ValueError(f"key has shape {tuple(key.shape)}, expected (batch, key_len, kdim={self.kdim})")
        if value.dim() != 3 or value.shape[-1] != self.vdim:
            reused = (" (value=None reuses key: pass value, or make the module with vdim=kdim)"
                      if value is key else "")  # fmt: skip
            raise ValueError(f"value has shape {tuple(value.shape)}, expected (batch, key_len, vdim={self.vdim})"
                             f"{reused}")  # fmt: skip
        if not (query.shape[0] == key.shape[0] == value.shape[0]):
            raise ValueError(
                f"batch sizes differ: query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
            )
        if key.shape[1] != value.shape[1]:
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} must have the same length")

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        layout: TokenLayout | None = None,
        cache: KeyValueCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query (B, Lq, E)`` to ``key (B, Lk, kdim)`` / ``value (B, Lk, vdim)``.

        ``key=None`` is self-attention; ``value=None`` reuses ``key`` (so ``vdim`` must equal
        ``kdim``: ``vdim`` defaults to ``embed_dim``, as in :class:`torch.nn.MultiheadAttention`). Masks follow
        :mod:`attend.attention.masks`. Returns ``(output (B, Lq, E), weights (B, H, Lq, Lk) | None)``;
        weights are post-softmax (pre-dropout) and rows of fully masked queries are zeros.

        ``layout`` (self-attention only): ``query`` is the ``(T, E)`` real tokens of a padded
        batch packed by :class:`~attend.attention.unpad.TokenLayout`, whose mask is the key
        padding mask; the projections run on the ``T`` real tokens, attention on the padded
        grid, and the output is ``(T, E)`` too. Weights keep their ``(B, H, L, L)`` shape (rows
        of padding queries attend with a zero query: uniform over the real keys).

        ``cache`` (incremental decoding, full attention only, see :mod:`attend.attention.cache`):
        keys and values projected on earlier calls are reused. A self-attention cache gets the
        new positions appended, and ``is_causal`` then means "each new query sees every cached
        position and the new ones up to itself"; ``key_padding_mask`` covers all keys, cached
        ones included. A static cache (cross-attention) is filled from ``key``/``value`` on the
        first call; later calls may pass ``key=None`` and ``value=None``.
        """
        check_flag("need_weights", need_weights)  # 'no' had returned the weights
        if cache is not None:
            return self._forward_cached(
                query, key, value, cache, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                is_causal=is_causal, need_weights=need_weights,
            )
        if layout is not None:
            if key is not None or value is not None or key_padding_mask is not None:
                raise ValueError("layout= is for self-attention and carries the padding mask: pass only the query")
            check_features("query", query, self._weights_dtype())
            if query.dim() != 2 or tuple(query.shape) != (layout.tokens, self.embed_dim):
                raise ValueError(
                    f"query has shape {tuple(query.shape)}, expected the packed (tokens={layout.tokens}, "
                    f"embed_dim={self.embed_dim}) of its layout"
                )
            key = value = query
            key_padding_mask = layout.key_padding_mask
            batch, q_len, k_len = layout.batch, layout.length, layout.length
        else:
            key = query if key is None else key
            value = key if value is None else value
            self._check_inputs(query, key, value)
            batch, q_len, _ = query.shape
            k_len = key.shape[1]
        spec = MaskSpec.validate(
            batch_size=batch,
            num_heads=self.num_heads,
            q_len=q_len,
            k_len=k_len,
            key_padding_mask=key_padding_mask,
            attn_mask=attn_mask,
            is_causal=is_causal,
            window=self.window,
        )

        def heads(projected: Tensor) -> Tensor:  # (B, L, D) or packed (T, D) -> (B, H, L, d)
            return self._split_heads(projected if layout is None else layout.unpack(projected))

        if key is query and value is query and self.kdim == self.vdim == self.embed_dim and self._packable():
            q, k, v = self._packed_self_projection(query, layout)
        else:
            q = heads(self.q_proj(query))  # (B, H, Lq, d)
            k = heads(self.k_proj(key))  # (B, H, Lk, d)
            v = heads(self.v_proj(value))  # (B, H, Lk, d)

        out, weights, captures = self._attend(q, k, v, spec, need_weights)  # out: (B, H, Lq, d)
        if self.gate_proj is not None:
            out = out * torch.sigmoid(heads(self.gate_proj(query)))
        if layout is not None and torch.compiler.is_compiling():
            merged = layout.pack_heads(out)  # (T, D)
        else:
            merged = out.transpose(1, 2).reshape(batch, q_len, self.inner_dim)  # (B, Lq, D)
            if layout is not None:
                merged = layout.pack(merged)  # (T, D): the output projection runs on real tokens only
        out = self.out_proj(merged)  # (B, Lq, E) or (T, E)
        if captures:
            assert weights is not None
            self._record(captures, weights)
        return out, (weights if need_weights else None)

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec, need_weights: bool
    ) -> tuple[Tensor, Tensor | None, tuple[Any, ...]]:
        """The backend call on per-head ``q, k, v``: ``(out (B, H, Lq, d), weights, active captures)``."""
        captures = self._captures()
        if not torch.compiler.is_compiling() and 0 in (q.shape[0], q.shape[2], k.shape[2]):
            # No batch, no query or no key: every row is empty (the efficient backends cannot block nothing).
            weights = q.new_zeros(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
            return q.new_zeros(*q.shape[:3], v.shape[-1]), weights, captures
        out, weights = self._backend(
            self,
            q,
            k,
            v,
            spec,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights or bool(captures),
            weights_grad=any(c.grad for c in captures),
        )
        return out, weights, captures

    def _forward_cached(
        self,
        query: Tensor,
        key: Tensor | None,
        value: Tensor | None,
        cache: KeyValueCache,
        *,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        is_causal: bool,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        if self.attention != "full" or self.span is not None or self.window is not None:
            raise ValueError(
                f"a key/value cache needs full attention without a window or adaptive span; this module has "
                f"attention={self.attention!r}, window={self.window}, adaptive_span={self.span is not None}"
            )
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"query has shape {tuple(query.shape)}, expected (batch, length, {self.embed_dim})")
        if is_causal and cache.static:
            # The fused one-token step let every memory key be seen, the general path masked all but
            # the first: the same call answered two ways, as need_weights asked for maps or not.
            raise ValueError("is_causal with a static (cross-attention) cache: the query attends over a fixed memory, "
                             "which it does not follow in time; leave is_causal out")  # fmt: skip
        batch, q_len, _ = query.shape
        if cache.key is not None and cache.key.shape[0] != batch:  # before torch.cat would fail on an appending one
            raise ValueError(f"the cache holds {cache.key.shape[0]} rows but the query has batch {batch}; "
                             "reorder it first")  # fmt: skip
        q = self._split_heads(self.q_proj(query))  # (B, H, Lq, d)
        if cache.static and cache.filled:
            assert cache.key is not None and cache.value is not None
            k, v = cache.key, cache.value
        else:
            if cache.static and key is None:
                raise ValueError("the first call with an empty static (cross-attention) cache needs key=")
            key = query if key is None else key
            value = key if value is None else value
            self._check_inputs(query, key, value)  # key's batch is the query's: an empty cache takes it
            k, v = cache.update(self._split_heads(self.k_proj(key)), self._split_heads(self.v_proj(value)))
        if (q_len == 1 and key_padding_mask is None and attn_mask is None and not need_weights
                and not self.training and self.gate_proj is None and self.backend_name == "sdpa"
                and not self._captures()):  # fmt: skip
            # One new token with nothing to mask (it sees every cached key, causal or not) and no
            # maps wanted: the fused kernel directly, without the general mask and backend plumbing
            # that costs more than the attention itself at this size (a decoder step at batch 1).
            q2, k2, scale = self.score.as_dot(q, k)
            out = F.scaled_dot_product_attention(q2, k2, v, scale=scale)
            return self.out_proj(out.transpose(1, 2).reshape(batch, 1, self.inner_dim)), None
        k_len = k.shape[2]
        if is_causal and not cache.static:
            past = k_len - q_len
            if q_len > 1:  # a single new query sees every cached key: no mask needed
                causal = cached_causal_mask(q_len, past, query.device)
                attn_mask = causal if attn_mask is None else _combine_forbidden(attn_mask, causal)
            is_causal = False
        spec = MaskSpec.validate(
            batch_size=batch,
            num_heads=self.num_heads,
            q_len=q_len,
            k_len=k_len,
            key_padding_mask=key_padding_mask,
            attn_mask=attn_mask,
            is_causal=is_causal,
        )
        out, weights, captures = self._attend(q, k, v, spec, need_weights)
        if self.gate_proj is not None:
            out = out * torch.sigmoid(self._split_heads(self.gate_proj(query)))
        out = self.out_proj(out.transpose(1, 2).reshape(batch, q_len, self.inner_dim))
        if captures:
            assert weights is not None
            self._record(captures, weights)
        return out, (weights if need_weights else None)

    def extra_repr(self) -> str:
        parts = [
            f"embed_dim={self.embed_dim}",
            f"num_heads={self.num_heads}",
            f"head_dim={self.head_dim}",
            f"score={self.score_name!r}",
            f"attention={self.attention!r}",
            f"backend={self.backend_name!r}",
        ]
        if self.window is not None:
            parts.append(f"window={self.window}")
        if self.kdim != self.embed_dim or self.vdim != self.embed_dim:
            parts.append(f"kdim={self.kdim}, vdim={self.vdim}")
        return ", ".join(parts)


def _combine_forbidden(attn_mask: Tensor, forbidden: Tensor) -> Tensor:
    """A user's attn_mask (bool True = forbidden, or additive float) with more forbidden pairs."""
    if attn_mask.dtype == torch.bool:
        return attn_mask | forbidden
    return attn_mask.masked_fill(forbidden, float("-inf"))


def _slice_linear(layer: nn.Linear, index: Tensor, *, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` keeping ``index`` of its outputs (``dim=0``) or inputs (``dim=1``)."""
    weight = layer.weight.index_select(dim, index.to(layer.weight.device)).clone()
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=layer.bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight.copy_(weight)
    new.weight.requires_grad_(layer.weight.requires_grad)
    if layer.bias is not None:
        bias = layer.bias if dim == 1 else layer.bias.index_select(0, index.to(layer.bias.device))
        new.bias.copy_(bias)  # type: ignore[union-attr]
        new.bias.requires_grad_(layer.bias.requires_grad)  # type: ignore[union-attr]
    return new
