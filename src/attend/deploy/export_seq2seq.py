"""Export a translator to ONNX: the encoder and a cached decoder step, proven equal to PyTorch first.

:func:`export_translator` turns a translation directory into an ONNX directory of three graphs:

* ``encoder.onnx``: ``input_ids``, ``attention_mask`` (int64 ``(batch, source)``) -> ``memory``
  ``(batch, source, dim)``, run once per batch.
* ``cross_kv.onnx``: ``memory`` -> ``cross_keys``, ``cross_values`` ``(layers, batch, heads, source,
  head_dim)``: every decoder layer's cross-attention keys and values, projected once per batch (the
  static half of :class:`~attend.models.seq2seq.DecoderCache`).
* ``decoder_step.onnx``: one output token per row ``tokens (batch, 1)``, its ``position (batch,)``,
  the source's ``attention_mask``, the cross keys/values and the self-attention cache ``self_keys``,
  ``self_values`` ``(layers, batch, heads, cache, head_dim)`` -> ``log_probs (batch, vocab)`` and
  the cache with this step's keys and values written in (``next_self_keys``, ``next_self_values``).

The self-attention cache is *static* (Hugging Face's ``StaticCache``): a fixed number of slots,
allocated once per batch, zeros to start with; step ``t`` writes its key and value into slot
``position = t`` and attends to slots ``<= position`` only (the later ones are masked exactly like
padding). A growing cache cannot be traced: ``torch.export`` specialises dimensions of size 0 and 1,
so the first step's empty cache and the one-token steps would freeze the graph. The cache axis
stays dynamic, so a runtime sizes the cache to each batch's output limit (here: the directory's
``max_length_a * source + max_length_b``, at most the model's ``max_length - 1``); each step costs
attention over that many slots, never a recomputation of the prefix.

The graphs are written with plain tensor operations over the model's own modules (projections,
norms, feed-forward layers, and each attention module's own backend from
:data:`~attend.attention.BACKENDS`, so its score function and masking are the ones PyTorch runs):
:meth:`~attend.attention.MultiHeadAttention.forward` with a
:class:`~attend.attention.KeyValueCache` appends by concatenation, which is the growing cache. The
arithmetic is otherwise :meth:`Seq2Seq.step <attend.models.seq2seq.Seq2Seq.step>`'s.

Parity: :class:`OnnxTranslator` greedy-decodes held-out sentences (the model's rebuilt test split,
else given or synthetic texts) with ONNX Runtime; the token outputs must equal PyTorch's
``Translator.translate(..., beam=1)`` exactly, and, fed the same tokens, every step's log-probability
vector must match :meth:`Seq2Seq.step`'s within ``tolerance``. Nothing is written unless both hold.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attend.attention import BACKENDS, MaskSpec, MultiHeadAttention
from attend.data.batching import length_batches
from attend.data.readers import DataError
from attend.data.tokenization import SubwordTokenizer
from attend.data.validation import check_count, validate_texts
from attend.deploy.export import (
    PARITY_TOLERANCE,
    ExportParityError,
    _quiet_exporter,
    check_opset,
    export_failure,
    given_texts,
    spread_by_length,
)
from attend.io import ArtifactDir, ArtifactWriter, ModelDirError, sha256_file
from attend.models.generation import GenerationOptions, Hypothesis
from attend.models.seq2seq import Seq2Seq
from attend.runtime import load
from attend.runtime.onnx import denormals_flushed, session_for
from attend.runtime.translator import Translation, Translator, translation_sources, translations
from attend.training.tasks.seq2seq import load_parallel_data, translate_batches
from attend.version import __version__

__all__ = [
    "CROSS_KV_FILE",
    "DECODER_STEP_FILE",
    "ENCODER_FILE",
    "GRAPHS",
    "CrossKeyValueGraph",
    "DecoderStepGraph",
    "EncoderGraph",
    "OnnxTranslator",
    "check_translator_parity",
    "export_translator",
    "parity_sentences",
    "torch_teacher_forced",
]

ENCODER_FILE = "encoder.onnx"
CROSS_KV_FILE = "cross_kv.onnx"
DECODER_STEP_FILE = "decoder_step.onnx"
#: Each graph's inputs and outputs, in order.
GRAPHS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ENCODER_FILE: (("input_ids", "attention_mask"), ("memory",)),
    CROSS_KV_FILE: (("memory",), ("cross_keys", "cross_values")),
    DECODER_STEP_FILE: (
        ("tokens", "position", "attention_mask", "cross_keys", "cross_values", "self_keys", "self_values"),
        ("log_probs", "next_self_keys", "next_self_values"),
    ),
}
#: Held-out sentences the parity check decodes (evenly spread over the length range).
PARITY_SENTENCES = 16


# --- the graphs -------------------------------------------------------------------------------


def _heads(attn: MultiHeadAttention, projected: Tensor) -> Tensor:
    batch, length, _ = projected.shape
    return projected.view(batch, length, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, L, d)


def _attend(attn: MultiHeadAttention, query: Tensor, keys: Tensor, values: Tensor, hidden: Tensor) -> Tensor:
    """``attn``'s output for ``query (B, 1, E)`` over projected ``keys``/``values (B, H, L, d)``,
    ``hidden (B, L)`` True where a key must not be seen: the module's own score, backend and gate."""
    batch, q_len, _ = query.shape
    q = _heads(attn, attn.q_proj(query))  # (B, H, 1, d)
    spec = MaskSpec.validate(
        batch_size=batch, num_heads=attn.num_heads, q_len=q_len, k_len=keys.shape[2], key_padding_mask=hidden
    )
    out, _ = BACKENDS[attn.backend_name](attn, q, keys, values, spec, dropout_p=0.0, need_weights=False,
                                         weights_grad=False)  # fmt: skip
    if attn.gate_proj is not None:
        out = out * torch.sigmoid(_heads(attn, attn.gate_proj(query)))
    return attn.out_proj(out.transpose(1, 2).reshape(batch, q_len, attn.inner_dim))  # (B, 1, E)


class EncoderGraph(nn.Module):
    """``input_ids``, ``attention_mask`` -> ``memory`` (:meth:`Seq2Seq.encode`)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.encode(input_ids, attention_mask)


class CrossKeyValueGraph(nn.Module):
    """``memory (B, S, E)`` -> every decoder layer's cross-attention keys and values, stacked
    ``(layers, B, H, S, d)``: what the first cached step stores in each static cache."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        keys = [_heads(block.cross_attn, block.cross_attn.k_proj(memory)) for block in self.model.decoder]
        values = [_heads(block.cross_attn, block.cross_attn.v_proj(memory)) for block in self.model.decoder]
        return torch.stack(keys), torch.stack(values)


class DecoderStepGraph(nn.Module):
    """One decoder step over a static self-attention cache (see the module docstring).

    ``forward(tokens (B, 1), position (B,), attention_mask (B, S), cross_keys, cross_values
    (layers, B, H, S, d), self_keys, self_values (layers, B, H, C, d))`` returns
    ``(log_probs (B, V), next_self_keys, next_self_values)``. Rows may sit at different positions.
    """

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        tokens: Tensor,
        position: Tensor,
        attention_mask: Tensor,
        cross_keys: Tensor,
        cross_values: Tensor,
        self_keys: Tensor,
        self_values: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        model = self.model
        slots = torch.arange(self_keys.shape[3], device=tokens.device)  # (C,)
        write = (slots[None, :] == position[:, None])[:, None, :, None]  # (B, 1, C, 1): this step's slot
        unwritten = slots[None, :] > position[:, None]  # (B, C): later slots, masked like padding
        memory_padding = attention_mask == 0  # (B, S)
        embedded = model.target_embed(tokens) * math.sqrt(model.config.dim)  # (B, 1, E)
        x = model.drop(embedded + model.positions[position][:, None, :])
        next_keys, next_values = [], []
        for i, block in enumerate(model.decoder):
            attn = block.self_attn
            h = block.norm_self(x)
            keys = torch.where(write, _heads(attn, attn.k_proj(h)), self_keys[i])  # (B, H, C, d)
            values = torch.where(write, _heads(attn, attn.v_proj(h)), self_values[i])
            next_keys.append(keys)
            next_values.append(values)
            x = x + block.drop(_attend(attn, h, keys, values, unwritten))
            h = block.norm_cross(x)
            x = x + block.drop(_attend(block.cross_attn, h, cross_keys[i], cross_values[i], memory_padding))
            x = x + block.drop(block.ffn(block.norm_ffn(x)))
        logits = model.decoder_norm(x) @ model.target_embed.weight.t()  # tied projection: (B, 1, V)
        return torch.log_softmax(logits[:, -1].float(), dim=-1), torch.stack(next_keys), torch.stack(next_values)


def _examples(model: Seq2Seq) -> dict[str, tuple[Tensor, ...]]:
    """Inputs the graphs are traced with. Batch 3, source 5, cache 7: sizes unlike each other, the
    model's fixed ones and the parity check's, so a frozen axis shows up there."""
    config = model.config
    batch, source, cache = 3, 5, 7
    heads = model.decoder[0].self_attn.num_heads
    head_dim = model.decoder[0].self_attn.head_dim
    layers = len(model.decoder)
    input_ids = torch.full((batch, source), 4 % config.vocab_size, dtype=torch.long)
    attention_mask = torch.ones(batch, source, dtype=torch.long)
    attention_mask[1, 3:] = 0
    input_ids[attention_mask == 0] = config.pad_id
    memory = torch.randn(batch, source, config.dim)
    kv = torch.randn(layers, batch, heads, source, head_dim)
    own = torch.zeros(layers, batch, heads, cache, head_dim)
    tokens = torch.full((batch, 1), config.bos_id, dtype=torch.long)
    position = torch.tensor([0, 2, 4], dtype=torch.long)
    return {
        ENCODER_FILE: (input_ids, attention_mask),
        CROSS_KV_FILE: (memory,),
        DECODER_STEP_FILE: (tokens, position, attention_mask, kv, kv.clone(), own, own.clone()),
    }


def _dynamic_shapes(model: Seq2Seq) -> dict[str, dict[str, dict[int, Any]]]:
    limit = model.config.max_length
    batch = torch.export.Dim("batch")
    source = torch.export.Dim("source", max=limit)
    cache = torch.export.Dim("cache", max=limit)
    stacked_source = {1: batch, 3: source}
    return {
        ENCODER_FILE: {"input_ids": {0: batch, 1: source}, "attention_mask": {0: batch, 1: source}},
        CROSS_KV_FILE: {"memory": {0: batch, 1: source}},
        DECODER_STEP_FILE: {
            "tokens": {0: batch}, "position": {0: batch}, "attention_mask": {0: batch, 1: source},
            "cross_keys": stacked_source, "cross_values": stacked_source,
            "self_keys": {1: batch, 3: cache}, "self_values": {1: batch, 3: cache},
        },
    }  # fmt: skip


#: Output axes' names per graph (the exporter may declare the example's sizes; they are rewritten).
_OUTPUT_AXES: dict[str, list[str | None]] = {
    "memory": ["batch", "source", None],
    "cross_keys": [None, "batch", None, "source", None],
    "cross_values": [None, "batch", None, "source", None],
    "log_probs": ["batch", None],
    "next_self_keys": [None, "batch", None, "cache", None],
    "next_self_values": [None, "batch", None, "cache", None],
}


def _annotate(path: Path) -> int | None:
    """Name the dynamic output axes, drop intermediate shape hints, record attend's version; return the opset."""
    import onnx

    graph_model = onnx.load(str(path))
    for output in graph_model.graph.output:
        for dim, name in zip(output.type.tensor_type.shape.dim, _OUTPUT_AXES.get(output.name, []), strict=False):
            if name is not None:
                dim.dim_param = name
    del graph_model.graph.value_info[:]
    entry = graph_model.metadata_props.add()
    entry.key, entry.value = "attend_version", __version__
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    onnx.save(graph_model, str(tmp))
    os.replace(tmp, path)
    return next((e.version for e in graph_model.opset_import if e.domain in ("", "ai.onnx")), None)


def _export_graphs(model: Seq2Seq, directory: Path, *, opset: int | None) -> int | None:
    """Write the three graphs into ``directory``; return the opset used."""
    model.eval()
    wrappers = {ENCODER_FILE: EncoderGraph(model), CROSS_KV_FILE: CrossKeyValueGraph(model),
                DECODER_STEP_FILE: DecoderStepGraph(model)}  # fmt: skip
    examples, shapes = _examples(model), _dynamic_shapes(model)
    used = None
    for name, wrapper in wrappers.items():
        inputs, outputs = GRAPHS[name]
        with _quiet_exporter() as log, torch.no_grad():
            try:
                torch.onnx.export(
                    wrapper.eval(), examples[name], str(directory / name), dynamo=True,
                    input_names=list(inputs), output_names=list(outputs), dynamic_shapes=shapes[name],
                    opset_version=opset, external_data=False,
                )  # fmt: skip
            except Exception as exc:  # the exporter raises many types; all mean "this graph did not export"
                raise export_failure(f"the translator's {name}", exc, log, directory / name) from exc
        used = _annotate(directory / name)
    return used


# --- ONNX Runtime greedy decoding -------------------------------------------------------------


def _output_limits(lengths: np.ndarray, options: GenerationOptions, max_length: int) -> np.ndarray:
    """Per source, the most output tokens (``</s>`` included): as :mod:`attend.models.generation`
    computes them (in float32, then truncated), clamped to ``[1, max_length]``."""
    limit = np.float32(options.max_length_a) * lengths.astype(np.float32) + np.float32(options.max_length_b)
    return np.clip(limit.astype(np.int64), 1, max_length)


def _ban_repeats(log_probs: np.ndarray, prefixes: Sequence[Sequence[int]], n: int) -> None:
    """-inf for every token that would repeat an n-gram of its row's output (as beam search bans them)."""
    if n <= 0:
        return
    for row, tokens in enumerate(prefixes):
        if len(tokens) < n - 1:
            continue
        tail = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
        banned = [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == tail]
        if banned:
            log_probs[row, banned] = -np.inf


class OnnxTranslator:
    """Greedy translation with the three graphs of an ONNX translation directory on ONNX Runtime.

    Greedy only: it makes exactly the choices of :func:`attend.models.generation.greedy` (beam
    search with ``beam=1``: ``</s>`` only as the best token, ``<pad>``/``<s>`` never, the
    directory's ``min_length``, ``no_repeat_ngram`` and length limits). Beam search is not
    implemented on ONNX Runtime; the graphs would allow it (rows of the cache can be gathered
    between steps), but the PyTorch :class:`~attend.runtime.translator.Translator` serves it.

    Args:
        directory: An ONNX translation directory written by :func:`export_translator`.
        threads: ONNX Runtime intra-op threads (default: PyTorch's thread count).
    """

    def __init__(self, directory: str | os.PathLike[str], *, threads: int | None = None) -> None:
        artifact = ArtifactDir.open(directory, require=("model", "onnx", "tokenizer"))
        if artifact.task != "translation":
            raise ModelDirError(f"{artifact.path} holds a {artifact.task} model, not a translator")
        self.path = artifact.path
        self.config = artifact.config
        model = dict(self.config["model"])
        self.max_length = int(model["max_length"])
        self.pad_id, self.bos_id, self.eos_id = int(model["pad_id"]), int(model["bos_id"]), int(model["eos_id"])
        self.source_max_length = int(self.config["tokenizer"].get("max_length", self.max_length))
        self.generation = GenerationOptions(**{**dict(self.config.get("generation") or {}), "beam": 1})
        files = list(self.config["tokenizer"].get("files") or [])
        if len(files) not in (1, 2):
            raise ModelDirError(f"{self.path / 'config.json'}: tokenizer.files must name one or two tokenizer files")
        tokenizers = [SubwordTokenizer.from_file(artifact.file(name)) for name in files]
        self.source_tokenizer, self.target_tokenizer = tokenizers[0], tokenizers[-1]
        self.sessions = {name: session_for(artifact.file(name), threads=threads) for name in GRAPHS}
        step_inputs = {i.name: i.shape for i in self.sessions[DECODER_STEP_FILE].get_inputs()}
        self.layers, self.heads, self.head_dim = _fixed_cache_dims(step_inputs["self_keys"])

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``texts`` (``</s>`` appended, cut to the directory's ``max_length``)."""
        return self._encode(validate_texts(texts))[0]

    def _encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        return self.source_tokenizer.encode_ids([" ".join(t.split()) for t in texts], self.source_max_length)

    def translate(self, texts: Sequence[str], *, batch_size: int = 64) -> list[Translation]:
        """Greedy translations of ``texts``, in order, as :meth:`Translator.translate` answers them
        (``truncated``, ``finished`` and ``warning`` included; no alignment). None is none."""
        batch_size = check_count("batch_size", batch_size)  # 0 had run as 1, "8" failed inside a comparison
        texts = translation_sources(texts)
        if not texts:
            return []
        ids, cut = self._encode(texts)
        hyps = self.greedy(ids, batch_size=batch_size)
        return translations(texts, ids, cut, hyps, self.source_tokenizer, self.target_tokenizer,
                            self.source_max_length)  # fmt: skip

    def greedy(self, source_ids: Sequence[Sequence[int]], *, batch_size: int = 64) -> list[Hypothesis]:
        """Greedy hypotheses of encoded sources in length-sorted batches (as the PyTorch runtime batches)."""
        out: list[Hypothesis | None] = [None] * len(source_ids)
        for batch in length_batches([len(r) for r in source_ids], max(1, batch_size)):
            for i, hyp in zip(batch, self._greedy_batch([source_ids[i] for i in batch]), strict=True):
                out[i] = hyp
        return [h for h in out if h is not None]

    def _pad(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def _start(self, rows: Sequence[Sequence[int]], cache: int) -> dict[str, np.ndarray]:
        """Encoder and cross keys/values of a batch, and an empty self cache of ``cache`` slots."""
        input_ids, mask = self._pad(rows)
        (memory,) = self.sessions[ENCODER_FILE].run(None, {"input_ids": input_ids, "attention_mask": mask})
        cross_keys, cross_values = self.sessions[CROSS_KV_FILE].run(None, {"memory": memory})
        own = np.zeros((self.layers, len(rows), self.heads, cache, self.head_dim), dtype=np.float32)
        return {"attention_mask": mask, "cross_keys": cross_keys, "cross_values": cross_values,
                "self_keys": own, "self_values": own.copy()}  # fmt: skip

    def _step(self, state: dict[str, np.ndarray], tokens: np.ndarray, position: int) -> np.ndarray:
        """Log-probs ``(B, V)`` after ``tokens (B,)`` at ``position``; the state's self cache is updated."""
        feed = {**state, "tokens": tokens.astype(np.int64)[:, None],
                "position": np.full(len(tokens), position, dtype=np.int64)}  # fmt: skip
        log_probs, state["self_keys"], state["self_values"] = self.sessions[DECODER_STEP_FILE].run(None, feed)
        return log_probs

    def _greedy_batch(self, rows: Sequence[Sequence[int]]) -> list[Hypothesis]:
        options = self.generation
        limits = _output_limits(np.array([len(r) for r in rows]), options, self.max_length)
        with denormals_flushed():
            state = self._start(rows, int(limits.max()))
            active = list(range(len(rows)))  # sources still decoding, in state row order
            prefixes: list[list[int]] = [[] for _ in rows]  # output tokens so far (no <s>)
            scores = np.zeros(len(rows), dtype=np.float32)
            tokens = np.full(len(rows), self.bos_id, dtype=np.int64)
            done: list[Hypothesis | None] = [None] * len(rows)
            step = 0
            while active:
                log_probs = self._step(state, tokens, step)
                step += 1
                log_probs[:, [self.pad_id, self.bos_id]] = -np.inf
                if step <= options.min_length:
                    log_probs[:, self.eos_id] = -np.inf
                _ban_repeats(log_probs, [prefixes[s] for s in active], options.no_repeat_ngram)
                candidates = scores[:, None] + log_probs
                keep, next_tokens, next_scores = [], [], []
                for a, source in enumerate(active):
                    best = np.argsort(-candidates[a], kind="stable")[:2]  # the two best extensions (ties: lower id)
                    chosen: tuple[int, float] | None = None
                    for rank, token in enumerate(best.tolist()):
                        score = float(candidates[a, token])
                        if score == -np.inf:
                            break
                        if token == self.eos_id:
                            if rank == 0:
                                length = len(prefixes[source]) + 1
                                done[source] = Hypothesis(list(prefixes[source]), score,
                                                          score / length**options.length_penalty, True)  # fmt: skip
                            continue
                        chosen = (token, score)
                        break
                    if step >= limits[source]:  # at the limit: the output ends here as it stands
                        if chosen is not None:
                            out = [*prefixes[source], chosen[0]]
                            stopped = Hypothesis(out, chosen[1], chosen[1] / len(out) ** options.length_penalty, False)
                            if done[source] is None or stopped.score > done[source].score:  # type: ignore[union-attr]
                                done[source] = stopped
                        continue
                    if done[source] is not None or chosen is None:
                        continue
                    keep.append(a)
                    prefixes[source].append(chosen[0])
                    next_tokens.append(chosen[0])
                    next_scores.append(chosen[1])
                active = [active[a] for a in keep]
                if not active:
                    break
                if len(keep) < len(state["attention_mask"]):
                    rows_kept = np.array(keep)
                    state["attention_mask"] = state["attention_mask"][rows_kept]
                    for name in ("cross_keys", "cross_values", "self_keys", "self_values"):
                        state[name] = np.ascontiguousarray(state[name][:, rows_kept])
                tokens = np.array(next_tokens, dtype=np.int64)
                scores = np.array(next_scores, dtype=np.float32)
        return [h if h is not None else Hypothesis([], float("-inf"), float("-inf"), False) for h in done]

    def teacher_forced(self, source_ids: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per source, the log-prob vectors ``(len(output) + 1, V)`` of the steps that read ``<s>``
        then each output token, in one padded batch (rows past their output read ``</s>``); at most
        ``max_length`` steps (:func:`teacher_steps`)."""
        steps = teacher_steps(outputs, self.max_length)
        inputs = np.full((len(outputs), steps), self.eos_id, dtype=np.int64)
        inputs[:, 0] = self.bos_id
        for i, out in enumerate(outputs):
            read = list(out[: steps - 1])
            inputs[i, 1 : len(read) + 1] = read
        with denormals_flushed():
            state = self._start(source_ids, steps)
            found = np.stack([self._step(state, inputs[:, t], t) for t in range(steps)], axis=1)  # (B, T, V)
        return [found[i, : len(out) + 1] for i, out in enumerate(outputs)]


def teacher_steps(outputs: Sequence[Sequence[int]], max_length: int) -> int:
    """The decoder steps that read ``<s>`` and each output token: one more than the longest output,
    but at most ``max_length``, the decoder's positions. An output stopped at that limit has no
    ``</s>`` step to check, and its one more step had failed the export in ONNX Runtime."""
    return min(max(len(o) for o in outputs) + 1, max_length)


def _fixed_cache_dims(shape: Sequence[Any]) -> tuple[int, int, int]:
    """``(layers, heads, head_dim)`` of a declared ``(layers, batch, heads, cache, head_dim)`` input."""
    layers, _, heads, _, head_dim = shape
    if not all(isinstance(v, int) for v in (layers, heads, head_dim)):
        raise ModelDirError(f"the decoder step's self_keys input has shape {list(shape)}: layers, heads and "
                            "head_dim must be fixed")  # fmt: skip
    return int(layers), int(heads), int(head_dim)


# --- parity -----------------------------------------------------------------------------------


@torch.no_grad()
def torch_teacher_forced(
    model: Seq2Seq, source_ids: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]]
) -> list[np.ndarray]:
    """:meth:`OnnxTranslator.teacher_forced` in PyTorch: :meth:`Seq2Seq.step` with its growing cache."""
    config = model.config
    steps = teacher_steps(outputs, config.max_length)
    inputs = torch.full((len(outputs), steps), config.eos_id, dtype=torch.long)
    inputs[:, 0] = config.bos_id
    for i, out in enumerate(outputs):
        read = list(out[: steps - 1])
        inputs[i, 1 : len(read) + 1] = torch.tensor(read, dtype=torch.long)
    width = max(len(r) for r in source_ids)
    input_ids = torch.full((len(source_ids), width), config.pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, row in enumerate(source_ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    memory = model.eval().encode(input_ids, mask)
    cache = model.new_cache()
    found = torch.stack([model.step(inputs[:, t : t + 1], memory, mask == 0, cache) for t in range(steps)], 1)
    return [found[i, : len(out) + 1].numpy() for i, out in enumerate(outputs)]


def _max_gap(ours: np.ndarray, reference: np.ndarray) -> float:
    """Max |a - b|, counting equal infinities (a token both rank impossible) as equal."""
    same = ours == reference
    gap = np.where(same, 0.0, np.abs(ours.astype(np.float64) - reference.astype(np.float64)))
    return float(gap.max()) if gap.size else 0.0


def check_translator_parity(
    translator: Translator, onnx: OnnxTranslator, texts: Sequence[str], *, batch_size: int = 64
) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on ``texts``.

    * Greedy outputs: :meth:`OnnxTranslator.greedy` against ``translator.translate(texts, beam=1)``
      (its hypotheses' tokens and log-probabilities; the texts must be equal too).
    * Every step: fed the same output tokens, each step's whole log-probability vector, once for
      all texts as one padded batch and once for the first text alone (batch 1).

    Returns the figures; the caller decides whether they pass.
    """
    options = translator.options(beam=1)
    source_ids = onnx.encode(texts)
    reference = translate_batches(translator.model, source_ids, options, batch_size)
    texts_reference = [t.translation for t in translator.translate(texts, beam=1, batch_size=batch_size)]
    ours = onnx.greedy(source_ids, batch_size=batch_size)
    texts_ours = [onnx.target_tokenizer.decode(h.tokens) for h in ours]
    differing = [i for i, (a, b) in enumerate(zip(ours, reference, strict=True)) if a.tokens != b.tokens]
    differing += [i for i, (a, b) in enumerate(zip(texts_ours, texts_reference, strict=True))
                  if a != b and i not in differing]  # fmt: skip
    sequence_gap = max(abs(a.log_prob - b.log_prob) for a, b in zip(ours, reference, strict=True))
    outputs = [h.tokens for h in reference]
    step_gap, steps = 0.0, 0
    for rows in (list(range(len(source_ids))), [0]):
        got = onnx.teacher_forced([source_ids[i] for i in rows], [outputs[i] for i in rows])
        expected = torch_teacher_forced(translator.model, [source_ids[i] for i in rows], [outputs[i] for i in rows])
        for a, b in zip(got, expected, strict=True):
            step_gap = max(step_gap, _max_gap(a, b))
            steps += len(a)
    return {
        "sentences": len(texts),
        "identical_outputs": not differing,
        "differing": [texts[i] for i in sorted(differing)][:5],
        "steps_compared": steps,
        "batch_sizes": [len(source_ids), 1],
        "max_abs_diff_log_probs": step_gap,
        "max_abs_diff_sequence_log_prob": float(sequence_gap),
        "examples": [{"source": texts[i], "translation": texts_ours[i]} for i in range(min(3, len(texts)))],
    }


def parity_sentences(
    translator: Translator, texts: Sequence[str] | None = None, n: int = PARITY_SENTENCES
) -> tuple[list[str], str]:
    """Sentences for the parity check and where they came from: ``texts`` when given; else the test
    split of the training data, rebuilt as :meth:`Translator.evaluate` rebuilds it (when that data is
    still there, unchanged); else sentences of the source vocabulary's word pieces."""
    if texts is not None:
        return given_texts(texts, n)
    data = translator.config.get("data") or {}
    location = data.get("dataset") or data.get("path")
    usable = location is not None and (
        data.get("dataset") is not None
        or (Path(location).is_file() and (not data.get("sha256") or sha256_file(location) == data["sha256"]))
    )
    if usable:
        try:
            pairs = load_parallel_data(
                location,
                source_col=data.get("source_col", "source"),
                target_col=data.get("target_col", "target"),
                split_col=data.get("split_col"),
            )
            test = [s for s in translator.training_split(pairs, "test").sources if s.strip()]
        except (DataError, OSError, ValueError):
            test = []
        if test:
            return spread_by_length(test, n), f"test split of {pairs.origin or location}"
    vocabulary = sorted(
        piece.removeprefix("▁") for piece in translator.source_tokenizer.tokenizer.get_vocab()
        if piece.removeprefix("▁").isalpha()
    ) or ["a"]  # fmt: skip
    rng = np.random.default_rng(0)
    lengths = np.linspace(1, max(2, translator.max_length - 2), n).round().astype(int)
    return [" ".join(rng.choice(vocabulary, size=k)) for k in lengths], "synthetic sentences from the vocabulary"


# --- the verb ---------------------------------------------------------------------------------


def _torch_translator(model_dir: str | os.PathLike[str] | Translator) -> Translator:
    if isinstance(model_dir, Translator):
        return model_dir
    model = load(model_dir, runtime="torch")
    if not isinstance(model, Translator):
        raise ValueError(f"{model_dir} holds a {model.task} model; export_translator takes a translation directory")
    return model


def export_translator(
    model_dir: str | os.PathLike[str] | Translator,
    out_dir: str | os.PathLike[str],
    *,
    opset: int | None = None,
    texts: Sequence[str] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    threads: int | None = None,
    overwrite: bool = False,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Export a translation directory to an ONNX directory (encoder, cross keys/values, cached
    decoder step), verified against PyTorch; the body of ``attend export MODEL_DIR --onnx OUT``
    for translators. Nothing is written to ``out_dir`` unless the parity check passes.

    Args:
        model_dir: A translation directory written by ``attend train`` (or a loaded Translator).
        out_dir: The ONNX directory to write.
        opset: ONNX opset (default: the exporter's).
        texts: Sentences for the parity check (default: the model's rebuilt test split).
        tolerance: Largest accepted |ONNX - PyTorch| on any step's log-probabilities.
        threads: ONNX Runtime intra-op threads for the check (default: PyTorch's thread count).
        overwrite: Replace a model directory already at ``out_dir`` (else that is an error,
            found before the export).
        on_start: Called once every check has passed, as the export begins.

    Returns:
        A JSON-ready report: paths, file sizes, opset, the parity figures.

    Raises:
        ModelDirError: ``model_dir`` is missing, incomplete or corrupt.
        ExportParityError: greedy outputs differ, or a step's log-probabilities differ by more than ``tolerance``.
        ValueError: a bad ``out_dir``, or the model cannot be exported.
    """
    started = time.perf_counter()
    check_opset(opset)
    translator = _torch_translator(model_dir)
    source = translator.path
    out = Path(out_dir)
    staged = ArtifactWriter(out, source=source, overwrite=overwrite, onnx_folder=True)  # checks it before any work
    check_texts, texts_source = parity_sentences(translator, texts)
    if on_start is not None:
        on_start()
    with staged as writer:
        staging = writer.path
        opset_used = _export_graphs(translator.model, staging, opset=opset)
        config = {key: value for key, value in translator.config.items() if key not in ("weights_sha256", "files")}
        tokenizer_files = list(config.get("tokenizer", {}).get("files") or [])
        for name, tokenizer in zip(tokenizer_files, (translator.source_tokenizer, translator.target_tokenizer),
                                   strict=False):  # fmt: skip
            tokenizer.save(staging / name)
        hashes = {name: writer.record(name) for name in [*GRAPHS, *tokenizer_files]}
        config["onnx"] = {"files": {name: hashes[name] for name in GRAPHS}}
        writer.write_json("config.json", config)  # provisional, so the check can open the staging directory
        parity = check_translator_parity(translator, OnnxTranslator(staging, threads=threads), check_texts)
        parity |= {"source": texts_source, "tolerance": tolerance}
        if not parity["identical_outputs"]:
            raise ExportParityError(
                f"ONNX Runtime's greedy translations differ from PyTorch's on {len(parity['differing'])} of "
                f"{parity['sentences']} {texts_source} (e.g. {parity['differing'][0]!r}); nothing was written to {out}"
            )
        if not parity["max_abs_diff_log_probs"] <= tolerance:  # also catches NaN
            raise ExportParityError(
                f"ONNX Runtime and PyTorch log-probabilities differ by {parity['max_abs_diff_log_probs']:.3g} on "
                f"{parity['sentences']} {texts_source} > tolerance {tolerance:g}; nothing was written to {out}"
            )
        config["onnx"] = {
            "files": {name: hashes[name] for name in GRAPHS},
            "graphs": {name: {"inputs": list(i), "outputs": list(o)} for name, (i, o) in GRAPHS.items()},
            "opset": opset_used,
            "cache": "static: (layers, batch, heads, cache, head_dim) slots written at `position`, later slots masked",
            "decoding": "greedy (attend.deploy.export_seq2seq.OnnxTranslator); no beam search on ONNX Runtime",
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "source": str(source) if source is not None else None,
            "source_weights_sha256": translator.config.get("weights_sha256"),
            "parity": parity,
        }
        if source is not None and (source / "metrics.json").is_file():
            shutil.copyfile(source / "metrics.json", staging / "metrics.json")
        writer.copy_training_texts(source)
        sizes = {name: (staging / name).stat().st_size for name in GRAPHS}
        writer.publish(config)
    return {
        "model_dir": str(source) if source is not None else None,
        "onnx_dir": str(out),
        "files": {name: str(out / name) for name in GRAPHS},
        "bytes": sizes,
        "opset": opset_used,
        "parity": parity,
        "seconds": round(time.perf_counter() - started, 2),
    }
