"""The runtime of translation directories: translate, and show which source words each output word came from.

:class:`Translator` answers many sentences at once (the service micro-batches): beam search (or
greedy) in length-sorted batches with the decoder's key/value cache. On request, each translation
carries its *alignment*: the decoder's cross-attention from every output token to the source
tokens, per layer and head and averaged (:class:`~attend.explain.alignment.Alignment`), read in one
teacher-forced pass over the source and the output just produced (the same weights the search
step computed: the model is deterministic in evaluation). :meth:`Translator.faithfulness` checks
that those weights mean something: hiding an output token's most-attended source token must
lower that token's probability more than hiding a random source token.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attend.attention import capture_attention
from attend.data.datasets import names_dataset
from attend.data.parallel import PAIR_SPLIT_SCHEME, ParallelTexts, group_split
from attend.data.readers import DataError
from attend.data.splits import parallel_columns
from attend.data.tokenization import SubwordTokenizer
from attend.data.validation import check_count, check_flag, validate_texts
from attend.explain.alignment import Alignment
from attend.io import ArtifactDir, ModelDirError, sha256_file, weights_mismatch
from attend.models import build, config_from_dict
from attend.models.generation import MAX_BEAM, GenerationOptions, Hypothesis
from attend.models.seq2seq import Seq2Seq
from attend.progress import progress_bar
from attend.runtime.base import LoadOptions, Runtime, evaluation_chunks, register_runtime
from attend.training.tasks.seq2seq import load_parallel_data, translate_batches
from attend.training.translation import bleu_tokenizer, translation_scores

__all__ = ["Translation", "Translator", "load_translator"]

#: Above this share of ``<unk>`` pieces a source is flagged: the model has not seen its script.
UNKNOWN_WARNING = 0.3


@dataclass
class Translation:
    """One sentence's translation.

    Attributes:
        source: The sentence as given.
        translation: The output text.
        score: The output's log-probability divided by its length ** length_penalty (the beam's ranking).
        log_prob: The output's total log-probability (``</s>`` included when it ended with it).
        truncated: The source was longer than the model's ``max_length`` and was cut.
        finished: The output ended with ``</s>`` (else it was stopped at the length limit).
        warning: Why the output may be unreliable (truncation, an unseen script), else None.
        alignment: On request, the cross-attention alignment.
        output_ids: The output's piece ids (without ``</s>``), as the search produced them.
    """

    source: str
    translation: str
    score: float
    log_prob: float
    truncated: bool = False
    finished: bool = True
    warning: str | None = None
    alignment: Alignment | None = None
    output_ids: list[int] = dataclasses.field(default_factory=list, repr=False)

    def to_dict(self, *, maps: bool = False) -> dict[str, Any]:
        from attend.explain.alignment import to_json_dict

        # + 0.0: a near-zero negative rounds to -0.0, which JSON and people read as a sign
        data: dict[str, Any] = {"source": self.source, "translation": self.translation,
                                "score": round(self.score, 5) + 0.0, "log_prob": round(self.log_prob, 5) + 0.0,
                                "truncated": self.truncated, "finished": self.finished}  # fmt: skip
        if self.warning:
            data["warning"] = self.warning
        if self.alignment is not None:
            aligned = to_json_dict(self.alignment, maps=maps)
            said = ("source", "translation", "log_prob")  # given above, beside the alignment
            data["alignment"] = {key: aligned[key] for key in aligned if key not in said}
        return data


class Translator(Runtime):
    """A trained :class:`~attend.models.seq2seq.Seq2Seq` with its tokenizers and default decoding.

    Args:
        model: The network (put in evaluation mode).
        config: The directory's ``config.json``.
        source_tokenizer: Reads the source.
        target_tokenizer: Writes the output (the same object with a shared vocabulary).
        path: Where it was loaded from.
    """

    task = "translation"

    def __init__(
        self,
        model: Seq2Seq,
        config: dict[str, Any],
        source_tokenizer: SubwordTokenizer,
        target_tokenizer: SubwordTokenizer,
        path: Path | None = None,
    ) -> None:
        super().__init__(config, path)
        self.model = model.eval()
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.max_length = int(config.get("tokenizer", {}).get("max_length", model.config.max_length))
        saved = dict(config.get("generation") or {})
        if isinstance(saved.get("beam"), int) and saved["beam"] > MAX_BEAM:  # saved before the limit: decoded at it
            saved["beam"] = MAX_BEAM
        self.generation = GenerationOptions(**saved)

    @property
    def backend(self) -> str:
        return "torch"

    def options(self, **overrides: Any) -> GenerationOptions:
        """The directory's decoding options with ``overrides`` (None values ignored).

        Raises:
            ValueError: an override that is no decoding option (named, with those there are).
        """
        known = {option.name for option in dataclasses.fields(self.generation)}
        unknown = sorted(set(overrides) - known)
        if unknown:  # a TypeError had named GenerationOptions.__init__, an internal class
            raise ValueError(f"{', '.join(unknown)}: not a decoding option (they are: {', '.join(sorted(known))})")
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self.generation, **given)

    def _encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids of checked sources (:func:`translation_sources`), and whether each was cut to
        ``max_length``."""
        return self.source_tokenizer.encode_ids([" ".join(t.split()) for t in texts], self.max_length)

    def _source_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int] | None]]:
        """The characters of each text (as given, before its runs of spaces are made one) that each
        token :meth:`_encode` gives it stands for."""
        found = []
        for text, spans in zip(texts, self.source_tokenizer.spans([" ".join(t.split()) for t in texts],
                                                                  self.max_length), strict=True):  # fmt: skip
            positions: list[int] = []  # each character of the one-space form -> its position in the text
            for match in re.finditer(r"\S+", text):
                if positions:
                    positions.append(match.start() - 1)  # the one space: the last of the run before the word
                positions.extend(range(match.start(), match.end()))
            found.append([None if span is None or span[1] > len(positions) else
                          (positions[span[0]], positions[span[1] - 1] + 1) for span in spans])  # fmt: skip
        return found

    def translate(
        self,
        texts: Sequence[str],
        *,
        beam: int | None = None,
        alignments: bool = False,
        maps: bool = False,
        batch_size: int = 64,
        **options: Any,
    ) -> list[Translation]:
        """Translate ``texts`` (in order).

        Args:
            texts: Sentences; an empty or blank one is an error naming it.
            beam: Beam size (default: the directory's, 4 unless trained otherwise); 1 is greedy.
            alignments: Add each translation's cross-attention alignment.
            maps: With ``alignments``, keep every layer's and head's map too.
            batch_size: Sources per decoding call, divided by the beam.
            options: Other :class:`~attend.models.generation.GenerationOptions` fields.
        """
        check_flag("alignments", alignments)  # "no" had been read as True
        check_flag("maps", maps)
        if maps and not alignments:  # it had been dropped without a word
            raise ValueError("maps=True keeps each layer's and head's alignment map: give alignments=True too")
        decoding = self.options(beam=beam, **options)
        batch_size = check_count("batch_size", batch_size)
        texts = translation_sources(texts)
        if not texts:
            return []
        ids, cut = self._encode(texts)
        hyps = translate_batches(self.model, ids, decoding, batch_size)
        results = translations(texts, ids, cut, hyps, self.source_tokenizer, self.target_tokenizer, self.max_length)
        if alignments and results:
            found = self.align(ids, [h.tokens for h in hyps], maps=maps, finished=[h.finished for h in hyps])
            for result, alignment, spans in zip(results, found, self._source_spans(texts), strict=True):
                alignment.source, alignment.translation = result.source, result.translation
                alignment.source_spans = spans
                alignment.log_prob = result.log_prob  # not the length-normalised score
                result.alignment = alignment
        return results

    def _teacher_inputs(self, outputs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The padded targets (each output and ``</s>``) and the decoder's inputs (``<s>`` and each output),
        at most the decoder's ``max_length`` positions: an output stopped at that limit has no ``</s>``
        to score, and its one more position had failed every alignment of its batch ("the output has
        17 tokens, more than max_length=16")."""
        targets, _ = self.target_tokenizer.pad([[*o, SubwordTokenizer.EOS] for o in outputs])
        decoder_input = torch.cat([torch.full((len(outputs), 1), SubwordTokenizer.BOS), targets[:, :-1]], dim=1)
        decoder_input[decoder_input == SubwordTokenizer.EOS] = SubwordTokenizer.PAD
        return targets, decoder_input[:, : self.model.config.max_length]

    @torch.no_grad()
    def _teacher_forced(
        self, source_ids: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]], *, capture: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None, torch.Tensor, torch.Tensor]:
        """Log-probs ``(B, T, V)`` of each output (``</s>`` appended) and, with ``capture``, each decoder
        layer's cross-attention ``(B, H, T, S)``; also the padded output ids and source mask."""
        input_ids, mask = self.source_tokenizer.pad(source_ids)
        targets, decoder_input = self._teacher_inputs(outputs)
        batch = {"input_ids": input_ids, "attention_mask": mask, "decoder_input_ids": decoder_input}
        if not capture:
            return torch.log_softmax(self.model(batch).logits.float(), -1), None, targets, mask
        with capture_attention(self.model, names=self.model.cross_attention_names()) as cap:
            logits = self.model(batch).logits
        return torch.log_softmax(logits.float(), -1), cap.weights, targets, mask

    def align(
        self, source_ids: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]], *, maps: bool = False,
        finished: Sequence[bool] | None = None,
    ) -> list[Alignment]:
        """Cross-attention alignments of outputs (token ids, no ``</s>``) to their encoded sources.

        Rows are output tokens (``</s>`` last, where the output ended with it: ``finished``, by
        default every one; an output stopped at the length limit had been shown ending in a
        ``</s>`` it never wrote), columns source tokens (``</s>`` last); ``weights`` is the mean
        over decoder layers and heads, each row summing to 1.
        """
        ended = [True] * len(outputs) if finished is None else list(finished)
        found: list[Alignment] = []
        for start in range(0, len(outputs), 32):
            src_chunk, out_chunk = source_ids[start : start + 32], outputs[start : start + 32]
            log_probs, layers, targets, _ = self._teacher_forced(src_chunk, out_chunk, capture=True)
            assert layers is not None
            stacked = torch.stack(layers, 1)  # (B, layers, H, T, S)
            for b, (src, out, end) in enumerate(zip(src_chunk, out_chunk, ended[start : start + 32], strict=True)):
                end = end or not out
                t_len, s_len = len(out) + end, len(src)
                per = stacked[b, :, :, :t_len, :s_len].numpy().astype(np.float64)
                probs = log_probs[b, torch.arange(t_len), targets[b, :t_len]].exp().tolist()
                named = None
                if maps:
                    named = {f"layer {i} head {h}": per[i, h] for i in range(per.shape[0]) for h in range(per.shape[1])}
                    named |= {f"layer {i} mean": per[i].mean(0) for i in range(per.shape[0])}
                found.append(Alignment(
                    source_tokens=self.source_tokenizer.pieces(src),
                    output_tokens=[*self.target_tokenizer.pieces(out), *(["</s>"] if end else [])],
                    weights=per.mean((0, 1)), layers=named, output_probabilities=probs,
                ))  # fmt: skip
        return found

    def faithfulness(self, texts: Sequence[str], *, seed: int = 0, beam: int | None = None,
                     progress: bool = False) -> dict[str, Any]:  # fmt: skip
        """Does the alignment point at the source tokens an output token depends on?

        For every output token of every translation, the source token it attends to most (mean
        alignment; ``</s>`` excluded) is hidden from the model (its key masked in every attention
        layer), and separately a random other source token is; each time the drop in that output
        token's probability, teacher-forced, is measured. A faithful alignment gives a larger drop
        for the top-aligned token: ``gap`` = mean(top drop) - mean(random drop) > 0, and
        ``top_beats_random`` the share of tokens where it is larger. ``sentences``: those scored (a
        source of one token, or an empty output, has nothing to compare). ``progress``: a bar on
        stderr, by sentence.
        """
        texts = translation_sources(texts)
        results = self.translate(texts, beam=beam, alignments=True)
        rng = random.Random(seed)
        drops: list[tuple[float, float]] = []
        scored = 0
        for result in progress_bar(results, desc="faithfulness", unit="sentence", disable=not progress):
            found = self._erasure_drops(result, rng)
            scored += bool(found)
            drops += found
        return _drops_report(drops) | {"sentences": scored}

    def sentence_faithfulness(self, result: Translation, *, seed: int = 0) -> dict[str, Any]:
        """:meth:`faithfulness` of one translation (one with its ``alignment``, from ``translate(...,
        alignments=True)``), its random tokens seeded by ``seed`` and the source: what ``attend
        explain`` shows under each translation."""
        if result.alignment is None:
            raise ValueError("sentence_faithfulness needs the translation's alignment: translate(..., alignments=True)")
        return _drops_report(self._erasure_drops(result, random.Random(f"{seed}:{result.source}")))

    def _erasure_drops(self, result: Translation, rng: random.Random) -> list[tuple[float, float]]:
        """(top-aligned drop, random drop) for each output token of ``result`` (none where its
        source has under two tokens or its output none)."""
        src = self._encode([result.source])[0][0]
        out, alignment = result.output_ids, result.alignment
        words = len(src) - 1  # source tokens without </s>
        if words < 2 or not out or alignment is None:
            return []
        base, _, targets, _ = self._teacher_forced([src], [out], capture=False)
        variants, rows = [], []
        for t in range(len(alignment.output_tokens)):  # </s> where the output ended with it
            top = int(np.argmax(alignment.weights[t, :words]))
            other = rng.choice([j for j in range(words) if j != top])
            variants += [top, other]
            rows.append(t)
        masks = torch.ones(len(variants), len(src), dtype=torch.long)
        masks[torch.arange(len(variants)), torch.tensor(variants)] = 0
        hidden = self._masked_log_probs(src, out, masks)
        positions = torch.tensor(rows).repeat_interleave(2)
        token_ids = targets[0, positions]
        p_base = base[0, positions, token_ids].exp()
        p_hidden = hidden[torch.arange(len(variants)), positions, token_ids].exp()
        drop = (p_base - p_hidden).view(-1, 2)
        return [(float(a), float(b)) for a, b in drop.tolist()]

    @torch.no_grad()
    def _masked_log_probs(self, src: Sequence[int], out: Sequence[int], masks: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probs ``(N, T, V)`` of one output with N source masks (0 = hidden token)."""
        n = masks.shape[0]
        input_ids = torch.tensor([list(src)] * n)
        decoder_input = self._teacher_inputs([out])[1].expand(n, -1)
        batch = {"input_ids": input_ids, "attention_mask": masks, "decoder_input_ids": decoder_input}
        return torch.log_softmax(self.model(batch).logits.float(), -1)

    def training_split(self, pairs: ParallelTexts, split: str) -> ParallelTexts:
        """The pairs of ``split`` (``"train"``, ``"dev"`` or ``"test"``) as training split ``pairs``,
        the data it was trained on: by its split column if it has one, else with the fractions and
        seed read from ``config.json``, so every copy of a source sentence lands where it did then."""
        training = self.config.get("training", {})
        scheme = (self.config.get("data") or {}).get("split_scheme", 1)  # a model made before it was recorded: 1
        if scheme not in range(1, PAIR_SPLIT_SCHEME + 1) or isinstance(scheme, bool):
            raise ModelDirError(f"{self.path}: its split scheme {scheme!r} is none this attend knows (1 to "
                                f"{PAIR_SPLIT_SCHEME}: a newer attend's model?); upgrade attend")  # fmt: skip
        splits = pairs.splits or group_split(pairs.sources, dev_fraction=float(training.get("dev_fraction", 0.1)),
                                             test_fraction=float(training.get("test_fraction", 0.1)),
                                             seed=int(training.get("seed", 0)), scheme=scheme)  # fmt: skip
        return pairs.subset([i for i, part in enumerate(splits) if part == split])

    def evaluate(  # type: ignore[override]
        self,
        data: str | os.PathLike[str] | ParallelTexts,
        *,
        source_col: str | None = None,
        target_col: str | None = None,
        split_col: str | None = None,
        beam: int | None = None,
        length_penalty: float | None = None,
        batch_size: int = 64,
        progress: bool = False,
    ) -> dict[str, Any]:
        """BLEU and chrF (``sacrebleu``) of the translations of ``data``'s sources against its targets.

        When ``data`` is what the model was trained on (the same data set, or a file with the same
        SHA-256), only its test split is scored: the split column training read, or else the split
        rebuilt exactly as training made it, so the figure never includes sentences the model
        learned from. BLEU is counted with the model's tokenizer (chosen from its training targets). ``source_col`` and
        ``target_col`` default to the columns training read, in any file (as ``translate`` reads an
        ``--input`` table), else to ``source`` and ``target``. ``progress``: a bar on stderr over the
        sentences.
        """
        recorded = self.config.get("data", {})
        same = (not isinstance(data, ParallelTexts)) and (
            (recorded.get("dataset") == str(data) and names_dataset(data))
            or (Path(data).is_file() and recorded.get("sha256") == sha256_file(data))
        )
        default = parallel_columns(self.config)
        trained = default if same else None
        columns = (source_col or default[0], target_col or default[1])
        if trained is not None and split_col is None and columns != trained:
            # Its split is rebuilt from the training columns: other columns would score other pairs
            # under the test split's name (and the pairs of other columns may be training ones).
            raise DataError(
                f"{data} is the model's training data, read as {trained[0]!r} -> {trained[1]!r}; "
                f"--source-col {columns[0]} --target-col {columns[1]} would score other pairs as its test split: "
                "leave the columns out, or evaluate on another file"
            )
        trained_split = same and split_col is None and recorded.get("split_col") is not None
        if same and split_col is None:
            split_col = recorded.get("split_col")  # training's own split, as training read it
        pairs = load_parallel_data(data, source_col=columns[0], target_col=columns[1], split_col=split_col)
        used = "all"
        if pairs.splits is None and same:
            pairs = self.training_split(pairs, "test")
            used = "test split (rebuilt as in training)"
        elif pairs.splits is not None:
            if "test" not in pairs.splits and "dev" not in pairs.splits:
                # Training's own split column: leaving --split-col out changes nothing (it had been advised).
                advice = ("it is the model's training data, every pair of it learned from: evaluate on another file"
                          if trained_split else "leave --split-col out to score every pair")  # fmt: skip
                raise DataError(f"{data}: its split column {split_col!r} marks every pair 'train': no test or dev "
                                f"pairs to evaluate on ({advice})")  # fmt: skip
            wanted = "test" if "test" in pairs.splits else "dev"
            pairs = pairs.subset([i for i, s in enumerate(pairs.splits) if s == wanted])
            used = f"{wanted} split (split column {split_col!r})"
        if not len(pairs):
            raise DataError(f"{data}: no sentence pairs to evaluate on")
        overlap = self.training_overlap(pairs.sources)
        decoding = self.options(beam=beam, length_penalty=length_penalty)
        sources = translation_sources(pairs.sources)  # named by their place in the whole, not a chunk's
        results = [result for part in evaluation_chunks(sources, progress=progress, unit="sentence")
                   for result in self.translate(part, beam=decoding.beam, batch_size=batch_size,
                                                length_penalty=decoding.length_penalty)]  # fmt: skip
        outputs = [r.translation for r in results]
        tokenize = recorded.get("bleu_tokenize") or bleu_tokenizer(pairs.targets)  # the model's, as training counted
        scores = translation_scores(outputs, pairs.targets, tokenize=tokenize)
        return {**scores, "sentences": len(pairs), "source": pairs.origin or str(data), "pairs_used": used,
                "decoding": decoding.describe(), "length_penalty": decoding.length_penalty,
                "bleu_tokenize": tokenize,
                "truncated": sum(r.truncated for r in results),
                **({} if overlap is None else {"training_overlap": overlap})}  # fmt: skip


@register_runtime("translation")
def load_translator(artifact: ArtifactDir, options: LoadOptions) -> Translator:
    """A translation directory (PyTorch, float32)."""
    path = artifact.path
    if options.runtime == "onnx" or options.int8 or options.bf16:
        raise ModelDirError(f"{path}: translators run on PyTorch in float32 (no --runtime onnx, --int8 or --bf16); "
                            "`attend export` writes the ONNX encoder and decoder step")  # fmt: skip
    try:
        model = build(config_from_dict(dict(artifact.config["model"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{path / 'config.json'}: invalid model config ({exc})") from None
    try:
        model.load_state_dict(artifact.tensors("model.safetensors"), strict=True)
    except RuntimeError as exc:
        raise weights_mismatch(path, exc) from None
    files = list(artifact.config.get("tokenizer", {}).get("files") or [])
    if len(files) not in (1, 2):
        raise ModelDirError(f"{path / 'config.json'}: tokenizer.files must name one shared or two tokenizer files")
    try:
        tokenizers = [SubwordTokenizer.from_file(artifact.file(name)) for name in files]
    except (FileNotFoundError, ValueError) as exc:
        raise ModelDirError(f"{path}: {exc}") from None
    assert isinstance(model, Seq2Seq)
    return Translator(model, artifact.config, tokenizers[0], tokenizers[-1], path)


def _drops_report(drops: Sequence[tuple[float, float]]) -> dict[str, Any]:
    if not drops:
        return {"tokens": 0, "gap": None, "drop_top": None, "drop_random": None, "top_beats_random": None}
    top, other = np.asarray(drops).T
    return {"tokens": len(top), "drop_top": float(top.mean()), "drop_random": float(other.mean()),
            "gap": float(top.mean() - other.mean()), "top_beats_random": float(np.mean(top > other))}  # fmt: skip


def translations(
    texts: Sequence[str], ids: Sequence[Sequence[int]], cut: Sequence[bool], hyps: Sequence[Hypothesis],
    source_tokenizer: SubwordTokenizer, target_tokenizer: SubwordTokenizer, max_length: int,
) -> list[Translation]:  # fmt: skip
    """Each source's :class:`Translation` from its encoded ``ids`` (cut to ``max_length`` where ``cut``)
    and its hypothesis, with the warning a reader needs: a cut source, one mostly of unknown pieces, or
    an empty output.
    The PyTorch and the ONNX Runtime translator both answer with these."""
    # Of the pieces that carry text: not </s>, nor the bare word mark a word of unknown letters begins with.
    no_text = {SubwordTokenizer.EOS, source_tokenizer.tokenizer.token_to_id("\u2581")}
    results = []
    for text, row, was_cut, hyp in zip(texts, ids, cut, hyps, strict=True):
        said = []
        pieces = [i for i in row if i not in no_text]
        unknown = pieces.count(SubwordTokenizer.UNK) / max(1, len(pieces))
        if unknown > UNKNOWN_WARNING:
            said.append(f"{unknown:.0%} of the source's pieces are unknown to the model's vocabulary: is it in "
                        "the language the model was trained on?")  # fmt: skip
        if was_cut:  # both said: the cut had gone unsaid beside the unknown pieces
            said.append(f"the source was cut to its first {max_length} tokens")
        output = target_tokenizer.decode(hyp.tokens)
        if not output.strip() and not said:  # it had looked like the blank line a blank input gives
            said.append("the model wrote nothing for it: is it in the language the model translates from?")
        results.append(Translation(text, output, hyp.score, hyp.log_prob, was_cut,
                                   hyp.finished, "; ".join(said) or None, output_ids=list(hyp.tokens)))  # fmt: skip
    return results


def translation_sources(texts: Sequence[str] | str) -> list[str]:
    """Sentences to translate, as a list (a generator is read once); none is no error (nothing to
    translate), a bare string is (it would be read as one sentence per character), and so is a
    text that is empty or no string, named by its index as the classifiers name theirs."""
    if isinstance(texts, str):
        raise ValueError("texts must be a list of sentences, not one string (wrap it in a list)")
    return validate_texts(texts, allow_empty=True)  # a dict or a set is refused (their order is no one's)
