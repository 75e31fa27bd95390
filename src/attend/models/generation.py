"""Decoding a :class:`~attend.models.seq2seq.Seq2Seq`: greedy and beam search, batched.

Both run the encoder once per batch and then one decoder step per output token. With
``use_cache=True`` (the default) each step feeds only the newest token and the decoder reuses
its cached keys and values (:class:`~attend.models.seq2seq.DecoderCache`); with ``False`` each
step runs the decoder over the whole prefix again. The outputs are the same (a test checks it);
only the cost differs (``benchmarks/seq2seq.py`` measures it).

Beam search follows the common recipe (fairseq, Hugging Face ``generate``): the ``K`` best
prefixes per source; at each step the ``2K`` best extensions, of which those ending in ``</s>``
are set aside as finished if they rank among the ``K`` best (scored by their log-probability
divided by ``length ** length_penalty``; once ``K`` are set aside, a better one replaces the worst)
and the best ``K`` others continue. A source is done when it has ``K`` finished hypotheses and its
best open prefix, were it to end now, would not score above the worst of them (Hugging Face's
rule; fairseq's stop at ``K`` finished had dropped a prefix far likelier than every ending kept,
when unlikely short beams ended first), or at its length limit ``max_length_a * source_length +
max_length_b`` (and the model's ``max_length``), where unfinished beams are finished as they stand.
Done sources leave the batch, so a long sentence does not keep short ones' beams running. ``no_repeat_ngram``
forbids any n-gram from occurring twice in one output. With ``beam=1`` beam search makes
exactly greedy's choices.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from attend.models.seq2seq import DecoderCache, Seq2Seq

__all__ = ["MAX_BEAM", "MAX_LENGTH_PENALTY", "GenerationOptions", "Hypothesis", "beam_search", "generate", "greedy"]

#: The largest length penalty: ``length ** alpha`` overflows a float beyond a few hundred, and
#: past 2-3 the ranking already favours the longest output whatever its log-probability.
MAX_LENGTH_PENALTY = 10.0

#: The widest beam: time and memory grow with the beam (a beam of 100,000 on a two-word source ran
#: for over ten minutes), and a beam this wide already ranks no better (wide beams favour short
#: outputs; translators search with 4 to 10).
MAX_BEAM = 100


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode.

    Attributes:
        beam: Beam size; 1 is greedy search.
        length_penalty: Exponent ``alpha`` of the length normalisation ``score / length ** alpha``
            that ranks finished hypotheses (0: raw log-probability, which favours short outputs).
        max_length_a: Output length limit per source token ...
        max_length_b: ... plus this many tokens: at most ``a * source_tokens + b`` output tokens.
        no_repeat_ngram: Forbid repeating any n-gram of this size within an output (0: off).
        use_cache: Reuse each decoder layer's keys and values between steps.
        min_length: Forbid ``</s>`` before this many output tokens (0: off).
    """

    beam: int = 4
    length_penalty: float = 1.0
    max_length_a: float = 1.5
    max_length_b: int = 10
    no_repeat_ngram: int = 0
    use_cache: bool = True
    min_length: int = 0

    def __post_init__(self) -> None:
        for name in ("beam", "max_length_b", "no_repeat_ngram", "min_length"):  # beam=2.5 failed inside torch
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name}={value!r} must be a whole number")
        if not 1 <= self.beam <= MAX_BEAM:
            raise ValueError(f"beam={self.beam} must be from 1 to {MAX_BEAM}")
        if not (isinstance(self.length_penalty, int | float) and math.isfinite(self.length_penalty)
                and 0 <= self.length_penalty <= MAX_LENGTH_PENALTY):  # fmt: skip
            raise ValueError(f"length_penalty={self.length_penalty!r} must be a number in [0, {MAX_LENGTH_PENALTY:g}]")
        if not (isinstance(self.max_length_a, int | float) and math.isfinite(self.max_length_a)
                and self.max_length_a >= 0):  # fmt: skip
            raise ValueError(f"max_length_a={self.max_length_a!r} must be a number >= 0")
        if self.max_length_b < 1:  # each said alone: "a=0.0 must be >= 0 and b=0 >= 1" had blamed both
            raise ValueError(f"max_length_b={self.max_length_b} must be >= 1")
        if self.no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram={self.no_repeat_ngram} must be >= 0")
        if self.min_length < 0:
            raise ValueError(f"min_length={self.min_length} must be >= 0")

    def describe(self) -> str:
        """``greedy`` or ``beam N`` (with the length penalty when it is not 1), as reports name it."""
        if self.beam == 1:
            return "greedy"
        penalty = "" if self.length_penalty == 1.0 else f", length penalty {self.length_penalty:g}"
        return f"beam {self.beam}{penalty}"


@dataclass
class Hypothesis:
    """One output: its token ids (without ``<s>``/``</s>``), the sum of their log-probabilities
    (``</s>`` included when the output ended with it) and the length-normalised ``score``."""

    tokens: list[int]
    log_prob: float
    score: float
    finished: bool


def _limits(model: Seq2Seq, attention_mask: Tensor, options: GenerationOptions) -> Tensor:
    """Per source, the most output tokens (``</s>`` included) it may produce: at most the model's
    ``max_length``, the decoder's positions (``<s>`` and all but the last token read; training feeds
    targets that long; one fewer had cut such an output a token early)."""
    source_lengths = attention_mask.sum(1).float()
    limit = (options.max_length_a * source_lengths + options.max_length_b).long()
    return limit.clamp(1, model.config.max_length)


class _Stepper:
    """Runs decoder steps with or without the cache; rows can be reordered or dropped between steps."""

    def __init__(self, model: Seq2Seq, memory: Tensor, padding: Tensor | None, prefix: Tensor, use_cache: bool) -> None:
        self.model, self.memory, self.padding, self.prefix = model, memory, padding, prefix
        self.cache: DecoderCache | None = model.new_cache() if use_cache else None

    def log_probs(self) -> Tensor:
        """``(rows, V)`` log-probabilities of the token after each row's prefix."""
        if self.cache is not None:
            return self.model.step(self.prefix[:, -1:], self.memory, self.padding, self.cache)
        logits = self.model.decode(self.prefix, self.memory, self.padding)[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    def select(self, rows: list[int], tokens: Tensor) -> None:
        """Keep rows ``rows`` (in that order) and append ``tokens`` (one per kept row).

        When every row stays where it is (greedy search, and beams that all extend themselves
        while no source finishes) nothing is copied: only the new tokens are appended.
        """
        if rows == list(range(self.prefix.shape[0])):
            self.prefix = torch.cat([self.prefix, tokens[:, None]], dim=1)
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.prefix.device)
        self.prefix = torch.cat([self.prefix.index_select(0, index), tokens[:, None]], dim=1)
        self.memory = self.memory.index_select(0, index)
        if self.padding is not None:
            self.padding = self.padding.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)


def _offer(finished: list[Hypothesis], hypothesis: Hypothesis, k: int) -> None:
    """Keep ``hypothesis`` among a source's ``k`` best finished ones (replacing the worst when full)."""
    if len(finished) < k:
        finished.append(hypothesis)
        return
    worst = min(range(len(finished)), key=lambda i: finished[i].score)
    if hypothesis.score > finished[worst].score:
        finished[worst] = hypothesis


def _ban_repeats(log_probs: Tensor, prefix: Tensor, n: int) -> None:
    """Set to -inf every token that would complete an n-gram already in its row's prefix (``<s>`` excluded)."""
    if n <= 0 or prefix.shape[1] - 1 < n - 1:
        return
    rows = prefix[:, 1:].tolist()
    for r, tokens in enumerate(rows):
        if len(tokens) < n - 1:
            continue
        tail = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
        banned = [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == tail]
        if banned:
            log_probs[r, banned] = float("-inf")


@torch.no_grad()
def greedy(
    model: Seq2Seq, input_ids: Tensor, attention_mask: Tensor, options: GenerationOptions | None = None
) -> list[Hypothesis]:
    """The most likely next token at every step, for a batch of sources."""
    return beam_search(model, input_ids, attention_mask, _with_beam(options, 1))


def _with_beam(options: GenerationOptions | None, beam: int) -> GenerationOptions:
    return dataclasses.replace(options or GenerationOptions(), beam=beam)


@torch.no_grad()
def beam_search(
    model: Seq2Seq, input_ids: Tensor, attention_mask: Tensor, options: GenerationOptions | None = None
) -> list[Hypothesis]:
    """The best hypothesis per source (``options.beam`` prefixes kept per source), in input order."""
    options = options or GenerationOptions()
    model.eval()
    config = model.config
    batch, k = input_ids.shape[0], options.beam
    if batch == 0:
        return []
    limits = _limits(model, attention_mask, options).tolist()
    memory = model.encode(input_ids, attention_mask)
    padding = attention_mask == 0
    rows = torch.arange(batch).repeat_interleave(k)  # row r belongs to source r // k
    prefix = torch.full((batch * k, 1), config.bos_id, dtype=torch.long, device=input_ids.device)
    # No source padded (always so for one sentence): no mask to apply at any step.
    row_padding = padding.index_select(0, rows) if bool(padding.any()) else None
    stepper = _Stepper(model, memory.index_select(0, rows), row_padding, prefix, options.use_cache)
    # Beam scores (sum of log-probs); only the first beam of each source is alive at the start.
    scores = torch.full((batch, k), float("-inf"), device=input_ids.device)
    scores[:, 0] = 0.0
    active = list(range(batch))  # sources still being decoded, in row-block order
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    never = torch.tensor([config.pad_id, config.bos_id], device=input_ids.device)  # tokens never written
    never_or_eos = torch.tensor([config.pad_id, config.bos_id, config.eos_id], device=input_ids.device)
    step = 0
    while active:
        step += 1
        log_probs = stepper.log_probs()  # (A*K, V)
        vocab = log_probs.shape[-1]
        log_probs.index_fill_(1, never if step > options.min_length else never_or_eos, float("-inf"))
        _ban_repeats(log_probs, stepper.prefix, options.no_repeat_ngram)
        candidates = (scores.view(-1, 1) + log_probs).view(len(active), k * vocab)
        # 2K extensions, so that K survive beside up to K endings. With K = 1 the first is enough:
        # an ending there finishes the source, and a second would only be kept beside it at the
        # length limit, where the ending (same length, higher log-probability) outranks it.
        top_scores, top_index = candidates.topk(min(2 * k if k > 1 else 1, k * vocab), dim=1)  # (A, 2K)
        keep_rows: list[int] = []
        keep_tokens: list[int] = []
        keep_scores: list[list[float]] = []
        still: list[int] = []
        top_scores_list, top_index_list = top_scores.tolist(), top_index.tolist()
        for a, source in enumerate(active):
            at_limit = step >= limits[source]
            chosen: list[tuple[int, int, float]] = []  # (beam, token, score) that continue
            for rank, (score, flat) in enumerate(zip(top_scores_list[a], top_index_list[a], strict=True)):
                if score == float("-inf"):
                    break
                beam, token = divmod(flat, vocab)
                if token == config.eos_id:
                    # An ending counts only among the K best extensions (else with K = 1 an unlikely
                    # </s> ranked second would end the search: greedy would not be greedy).
                    if rank < k:
                        tokens = stepper.prefix[a * k + beam, 1:].tolist()
                        length = len(tokens) + 1
                        _offer(finished[source], Hypothesis(tokens, score, score / length**options.length_penalty,
                                                            True), k)  # fmt: skip
                    continue
                if len(chosen) < k:
                    chosen.append((beam, token, score))
                if len(chosen) == k:
                    break  # an ending further down ranks below the K best: it would not count
            if at_limit:  # the unfinished beams end here as they stand
                for beam, token, score in chosen:
                    tokens = [*stepper.prefix[a * k + beam, 1:].tolist(), token]
                    finished[source].append(Hypothesis(tokens, score, score / len(tokens) ** options.length_penalty,
                                                       False))  # fmt: skip
                continue
            if not chosen:  # every token banned (no_repeat_ngram on a small vocabulary, </s> before min_length)
                if not finished[source]:  # nothing to answer with: an empty output, as ONNX Runtime's decoder gives
                    finished[source].append(Hypothesis([], float("-inf"), float("-inf"), False))
                continue
            if len(finished[source]) >= k:
                # The best open prefix (chosen[0]: the extensions come best first), were it to end at the
                # next step, against the worst ending kept: if that would not beat it, the source is done
                # (a bound at length_penalty 0; above 0 a longer ending could still score higher, the
                # rule Hugging Face's generate uses too).
                worst = min(h.score for h in finished[source])
                if chosen[0][2] / (step + 1) ** options.length_penalty <= worst:
                    continue
            while len(chosen) < k:  # fewer live extensions than beams: pad with dead copies
                chosen.append((chosen[0][0], chosen[0][1], float("-inf")))
            still.append(source)
            for beam, token, _ in chosen:
                keep_rows.append(a * k + beam)
                keep_tokens.append(token)
            keep_scores.append([score for _, _, score in chosen])
        active = still
        if not active:
            break
        stepper.select(keep_rows, torch.tensor(keep_tokens, dtype=torch.long, device=input_ids.device))
        scores = torch.tensor(keep_scores, device=input_ids.device)
    return [max(hyps, key=lambda h: h.score) for hyps in finished]


def generate(
    model: Seq2Seq, input_ids: Tensor, attention_mask: Tensor, options: GenerationOptions | None = None
) -> list[Hypothesis]:
    """Decode a batch with ``options`` (greedy when ``beam == 1``)."""
    return beam_search(model, input_ids, attention_mask, options)
