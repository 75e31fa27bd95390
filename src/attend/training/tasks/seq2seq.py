"""Translation: sentence pairs in, an encoder-decoder Transformer that translates and shows its alignments out.

:class:`TranslationTask` reads a parallel file (or a registered data set such as
``tatoeba_en_de``), splits it so that every copy of a source sentence lands in one split
(:func:`~attend.data.parallel.group_split`; or by the user's split column), learns subword pieces
on the training split (:class:`~attend.data.tokenization.SubwordTokenizer`: one shared vocabulary
by default, or one per side), and trains :class:`~attend.models.seq2seq.Seq2Seq` with teacher
forcing and label-smoothed cross-entropy. Each epoch is scored by BLEU of greedy translations of
a fixed sample of the dev split (:data:`DEV_SENTENCES`); the final report translates the whole test
split with beam search and scores BLEU and chrF with ``sacrebleu``, beside the translation-memory
floor on the same split. :func:`train_translation` is the body of ``attend train --model seq2seq``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from attend.config import strict_from_dict
from attend.data.batching import length_batches
from attend.data.parallel import PAIR_SPLIT_SCHEME, ParallelTexts, group_split, read_parallel, source_key
from attend.data.readers import DataError
from attend.data.splits import seen_in_training
from attend.data.tokenization import SubwordTokenizer, pad_rows
from attend.io import sha256_file
from attend.models.generation import GenerationOptions, Hypothesis, generate
from attend.models.seq2seq import Seq2Seq, Seq2SeqConfig
from attend.progress import progress_bar
from attend.training.tasks.base import Task, check_model_fields, fingerprint, names_file, register_task
from attend.training.translation import bleu_tokenizer, translation_baselines, translation_scores

if TYPE_CHECKING:
    from attend.io import ArtifactWriter
    from attend.training.trainer import TrainingArgs

__all__ = [
    "DEV_SENTENCES",
    "TRANSLATION_DEFAULTS",
    "TranslationTask",
    "load_parallel_data",
    "translate_batches",
]

#: Dev sentences translated (greedily) to score each epoch: a fixed seeded sample, so epochs are
#: compared on the same sentences at a bounded cost on a large dev split.
DEV_SENTENCES = 500

#: ``attend train --model seq2seq``'s training defaults, where they differ from :class:`TrainingArgs`'s
#: (which suit classifiers): label smoothing 0.1, a vocabulary of 8,000 shared pieces, 30 minutes
#: for the training loop (the whole epochs that fit, timed on the machine at hand, at most 30),
#: and the average of the last 5 epochs' weights when it is not worse on dev (the standard
#: practice of Vaswani et al. 2017 and fairseq's recipes).
TRANSLATION_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "time_budget": 30.0,
    "batch_size": 64,
    "label_smoothing": 0.1,
    "vocab_size": 8000,
    "max_length": 64,
    "warmup_ratio": 0.04,
    "patience": 4,
    "weight_decay": 0.0001,
    "average_checkpoints": 5,
}

#: Options of the task itself (not of the model's shape) accepted among ``model_options``.
TASK_OPTIONS = ("tokenizer", "shared_vocabulary", "generation")
#: Model fields the task sets from the data (the tokenizers' vocabularies and special ids).
FROM_THE_DATA = ("vocab_size", "target_vocab_size", "pad_id", "bos_id", "eos_id")


def load_parallel_data(
    data: str | os.PathLike[str] | ParallelTexts,
    *,
    source_col: str = "source",
    target_col: str = "target",
    split_col: str | None = None,
) -> ParallelTexts:
    """Sentence pairs from a file (CSV/TSV/JSONL/Parquet), a registered translation data set's name, or as given."""
    if isinstance(data, ParallelTexts):
        return data
    path = Path(data)
    from attend.data.datasets import DATASETS, load_parallel, names_dataset, unknown_data

    if path.exists() and not names_dataset(data):
        return read_parallel(path, source_col=source_col, target_col=target_col, split_col=split_col)

    info = DATASETS.get(str(data))
    if info is not None:
        if info.task != "translation":
            raise DataError(f"{data} is a {info.task} data set, not sentence pairs; translation needs pairs")
        return load_parallel(str(data))
    raise DataError(unknown_data(data))


def translate_batches(
    model: Seq2Seq,
    source_ids: Sequence[Sequence[int]],
    options: GenerationOptions,
    batch_size: int,
    pad_id: int = SubwordTokenizer.PAD,
    done: Callable[[int], None] | None = None,
) -> list[Hypothesis]:
    """Translate encoded sources in length-sorted batches (``batch_size`` sources per beam-search
    call, divided by the beam), returning hypotheses in input order; ``done`` is told each batch's size."""
    out: list[Hypothesis | None] = [None] * len(source_ids)
    per_call = max(1, batch_size // options.beam)
    for batch in length_batches([len(r) for r in source_ids], per_call):
        ids, mask = pad_rows([source_ids[i] for i in batch], pad_id)
        for i, hyp in zip(batch, generate(model, ids, mask, options), strict=True):
            out[i] = hyp
        if done is not None:
            done(len(batch))
    return [h for h in out if h is not None]


@register_task
class TranslationTask(Task):
    """Sentence pairs -> :class:`~attend.models.seq2seq.Seq2Seq`; dev BLEU picks the epoch.

    Args:
        data: A parallel file, a translation data set's name, or loaded pairs.
        model_options: :class:`~attend.models.seq2seq.Seq2SeqConfig` fields, plus ``tokenizer``
            (``"bpe"``, the default, or ``"unigram"``), ``shared_vocabulary`` (one vocabulary for both sides,
            default True) and ``generation`` (:class:`~attend.models.generation.GenerationOptions`
            fields: the decoding a loaded model uses by default, and the test report's).
        source_col, target_col, split_col: Columns of a file.
    """

    name = "translation"
    selection = "bleu"
    reads = frozenset({"label_smoothing", "max_length", "vocab_size", "dev_fraction", "test_fraction"})

    def __init__(
        self,
        data: str | os.PathLike[str] | ParallelTexts,
        *,
        model_options: dict[str, Any] | None = None,
        source_col: str = "source",
        target_col: str = "target",
        split_col: str | None = None,
    ) -> None:
        self.data = data
        self.columns = {"source_col": source_col, "target_col": target_col, "split_col": split_col}
        options = dict(model_options or {})
        self.kind = str(options.get("tokenizer", "bpe"))
        if self.kind not in ("unigram", "bpe"):
            raise ValueError(f"tokenizer={self.kind!r}; choose 'unigram' or 'bpe'")
        self.shared = options.get("shared_vocabulary", True)
        if not isinstance(self.shared, bool):  # bool("false") had shared the vocabulary asked to be separate
            raise ValueError(f"shared_vocabulary={self.shared!r} must be true or false")
        generation = options.get("generation")
        generation = {} if generation is None else generation
        if not isinstance(generation, dict):  # [], false and "" too: they had passed as the defaults
            raise ValueError(f'generation={generation!r} must be an object of decoding options, e.g. {{"beam": 4}}')
        self.generation = strict_from_dict(GenerationOptions, dict(generation), what="generation")
        self.model_options = {k: v for k, v in options.items() if k not in TASK_OPTIONS}
        # Checked now, before any data is read: a bad field fails at once, naming the known ones.
        from_data = sorted(set(self.model_options) & set(FROM_THE_DATA))
        if from_data:
            raise ValueError(f"model field(s) {from_data} are set from the tokenizer trained on the data; its size is "
                             'the training option vocab_size (--config {"training": {"vocab_size": N}})')  # fmt: skip
        given = {k: v for k, v in self.model_options.items() if k != "model_type"}
        check_model_fields("seq2seq", given, from_data=FROM_THE_DATA, task_options=TASK_OPTIONS)
        self.original_options = options

    # --- data ------------------------------------------------------------------------------------

    def prepare(self, args: TrainingArgs, state: Path | None) -> None:
        self.progress = args.progress and not (dist.is_available() and dist.is_initialized() and dist.get_rank())
        given = self.model_options.get("max_length")
        if isinstance(given, int) and given < args.max_length:  # it failed mid-epoch, or later on translate
            raise ValueError(f"max_length={given} (the model's longest sequence) is shorter than the training "
                             f"max_length={args.max_length} (--max-length) sentences are cut to: give the model "
                             f"at least {args.max_length}, or a smaller --max-length")  # fmt: skip
        pairs = load_parallel_data(self.data, **self.columns)
        self.origin = pairs.origin or str(self.data)
        splits = pairs.splits or group_split(
            pairs.sources, dev_fraction=args.dev_fraction, test_fraction=args.test_fraction, seed=args.seed
        )
        self.parts = {
            name: pairs.subset([i for i, s in enumerate(splits) if s == name]) for name in ("train", "dev", "test")
        }
        if not len(self.parts["train"]):
            raise DataError(f"{self.origin}: no pairs in the train split")
        train = self.parts["train"]
        # Sources of a held-out split the training split also has (only a given split column can put
        # them there: group_split keeps every copy of a source in one split), said in the report.
        self.seen = {name: seen_in_training(train.sources, self.parts[name].sources, key=source_key)
                     for name in ("dev", "test")}  # fmt: skip
        if state is not None and (state / "tokenizer.json").exists():
            self.source_tokenizer = SubwordTokenizer.from_file(state / "tokenizer.json")
        elif state is not None and (state / "source_tokenizer.json").exists():
            self.source_tokenizer = SubwordTokenizer.from_file(state / "source_tokenizer.json")
        elif self.shared:
            self.source_tokenizer = SubwordTokenizer.train(
                [*train.sources, *train.targets], kind=self.kind, vocab_size=args.vocab_size
            )
        else:
            self.source_tokenizer = SubwordTokenizer.train(train.sources, kind=self.kind, vocab_size=args.vocab_size)
        if self.shared:
            self.target_tokenizer = self.source_tokenizer
        elif state is not None and (state / "target_tokenizer.json").exists():
            self.target_tokenizer = SubwordTokenizer.from_file(state / "target_tokenizer.json")
        else:
            self.target_tokenizer = SubwordTokenizer.train(train.targets, kind=self.kind, vocab_size=args.vocab_size)
        self.max_length = args.max_length
        self.label_smoothing = args.label_smoothing
        self.seed = args.seed
        self.encoded: dict[str, tuple[list[list[int]], list[list[int]]]] = {}
        self.truncated: dict[str, int] = {}
        for name, part in self.parts.items():
            src, cut_src = self.source_tokenizer.encode_ids(part.sources, self.max_length)
            # A training target cut short has no </s>: the decoder must not learn to stop mid-sentence.
            tgt, cut_tgt = self.target_tokenizer.encode_ids(part.targets, self.max_length, end_cut=name != "train")
            self.encoded[name] = (src, tgt)
            self.truncated[name] = sum(a or b for a, b in zip(cut_src, cut_tgt, strict=True))
        dev = len(self.parts["dev"])
        chosen = np.random.default_rng(self.seed).permutation(dev)[:DEV_SENTENCES] if dev else np.zeros(0, int)
        self.dev_sample = sorted(chosen.tolist())
        self.unknown_rate = self.target_tokenizer.unknown_rate(self.parts["dev"].targets[:2000]) if dev else 0.0
        # One BLEU tokenizer for every split, from the training targets' script: chosen per split, a
        # dev split with one Japanese reference among digits was counted by character and the test
        # split by word, so the epoch picked on dev and the figure reported disagreed.
        self.bleu_tokenize = bleu_tokenizer(train.targets)

    def save_state(self, directory: Path) -> None:
        self._save_tokenizers(directory)

    def data_fingerprint(self) -> str:
        return fingerprint((f"{name} {field}", getattr(part, field)) for name, part in self.parts.items()
                           for field in ("sources", "targets"))  # fmt: skip

    def _save_tokenizers(self, directory: Path) -> list[str]:
        if self.shared:
            self.source_tokenizer.save(directory / "tokenizer.json")
            return ["tokenizer.json"]
        self.source_tokenizer.save(directory / "source_tokenizer.json")
        self.target_tokenizer.save(directory / "target_tokenizer.json")
        return ["source_tokenizer.json", "target_tokenizer.json"]

    def identity(self) -> dict[str, Any]:
        data = self.data.origin if isinstance(self.data, ParallelTexts) else str(self.data)
        # A bundled dataset by its name; a file by what it holds alone (the data's digest, checked
        # on a resume), as a classifier's: the same rows moved to another path (scratch storage on a
        # cluster, a copy) had been refused ("these differ: data=...").
        named = {} if names_file(data) else {"data": data}  # (a name that is no file compares as it is)
        return {"model": "seq2seq", "model_options": self.original_options, **named, **self.columns,
                "split_scheme": PAIR_SPLIT_SCHEME}  # fmt: skip

    def model_config(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.model_options.items() if k != "model_type"}
        fields.setdefault("max_length", max(256, 2 * self.max_length))
        config = Seq2SeqConfig(
            vocab_size=self.source_tokenizer.vocab_size,
            target_vocab_size=None if self.shared else self.target_tokenizer.vocab_size,
            pad_id=SubwordTokenizer.PAD, bos_id=SubwordTokenizer.BOS, eos_id=SubwordTokenizer.EOS,
            **fields,
        )  # fmt: skip
        return config.to_dict()

    def default_lr(self) -> float:
        return 1e-3

    @property
    def train_size(self) -> int:
        return len(self.parts["train"])

    def splits(self) -> list[str]:
        return [name for name in ("dev", "test") if len(self.parts[name])]

    def lengths(self) -> np.ndarray:
        # Target length first, then source length: a batch's targets come out nearly unpadded
        # (every target position costs the decoder and the output projection), and the encoder
        # skips the source padding that is left. Sorting by the sum padded both sides by a fifth.
        src, tgt = self.encoded["train"]
        longest = max((len(a) for a in src), default=0) + 1
        return np.asarray([len(b) * longest + len(a) for a, b in zip(src, tgt, strict=True)])

    # --- training --------------------------------------------------------------------------------

    def _batch(self, split: str, indices: Sequence[int]) -> dict[str, Tensor]:
        src, tgt = self.encoded[split]
        input_ids, attention_mask = self.source_tokenizer.pad([src[i] for i in indices])
        labels, _ = self.target_tokenizer.pad([tgt[i] for i in indices])  # pieces + </s>, padded
        decoder_input_ids = torch.cat(
            [torch.full((len(indices), 1), SubwordTokenizer.BOS, dtype=torch.long), labels[:, :-1]], dim=1
        )
        decoder_input_ids[decoder_input_ids == SubwordTokenizer.EOS] = SubwordTokenizer.PAD
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "decoder_input_ids": decoder_input_ids, "labels": labels}  # fmt: skip

    def train_batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        return self._batch("train", indices)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        real = batch["labels"] != SubwordTokenizer.PAD
        logits = model({**batch, "logit_positions": real}).logits  # (N, V): real target tokens only
        return F.cross_entropy(logits.float(), batch["labels"][real], label_smoothing=self.label_smoothing)

    # --- evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def _nll(self, model: nn.Module, split: str, batch_size: int) -> float:
        """Mean negative log-likelihood per target token, teacher-forced (no smoothing)."""
        src, tgt = self.encoded[split]
        total, tokens = 0.0, 0
        for batch_indices in length_batches([len(a) + len(b) for a, b in zip(src, tgt, strict=True)], batch_size):
            batch = self._batch(split, batch_indices)
            real = batch["labels"] != SubwordTokenizer.PAD
            logits = model({**batch, "logit_positions": real}).logits
            total += float(F.cross_entropy(logits.float(), batch["labels"][real], reduction="sum"))
            tokens += int(real.sum())
        return total / max(1, tokens)

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, Any]:
        """Dev: greedy on :data:`DEV_SENTENCES` sampled sentences; test: the task's beam on every sentence."""
        was_training = model.training
        model.eval()
        try:
            loss = self._nll(model, split, batch_size)
            indices = self.dev_sample if split == "dev" else list(range(len(self.parts[split])))
            options = dataclasses.replace(self.generation, beam=1) if split == "dev" else self.generation
            src, _ = self.encoded[split]
            assert isinstance(model, Seq2Seq)
            # a bar on the test split's beam search (minutes of silence after the last epoch's bar)
            with progress_bar(total=len(indices), desc=f"{split} split", unit="sentence", mininterval=1.0, delay=1.0,
                              disable=split == "dev" or not getattr(self, "progress", False)) as bar:  # fmt: skip
                hyps = translate_batches(model, [src[i] for i in indices], options, batch_size, done=bar.update)
        finally:
            model.train(was_training)
        outputs = [self.target_tokenizer.decode(h.tokens) for h in hyps]
        references = [self.parts[split].targets[i] for i in indices]
        scores = translation_scores(outputs, references, tokenize=self.bleu_tokenize)
        samples = [{"source": self.parts[split].sources[i], "reference": ref, "translation": out}
                   for i, ref, out in list(zip(indices, references, outputs, strict=True))[:5]]  # fmt: skip
        return {
            **scores,
            "loss": loss,
            "sentences": len(indices),
            "decoding": options.describe(),
            "bleu_tokenize": self.bleu_tokenize,
            "truncated_pairs": self.truncated[split],
            "truncated_training_pairs": self.truncated["train"],
            "samples": samples,
        }

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"dev_bleu": round(metrics["bleu"], 2), "dev_chrf": round(metrics["chrf"], 2),
                "dev_loss": round(metrics["loss"], 4)}  # fmt: skip

    def reference_metrics(self, split: str) -> dict[str, Any]:
        """The translation-memory floor on the same split (nearest training source's target)."""
        part, train = self.parts[split], self.parts["train"]
        return translation_baselines(train.sources, train.targets, part.sources, part.targets,
                                     tokenize=self.bleu_tokenize)  # fmt: skip

    def report(self, metrics: dict[str, Any], split: str) -> str:
        lines = [
            f"{split} split: {metrics['sentences']} sentences, {metrics['decoding']}",
            f"BLEU {metrics['bleu']:.2f}   chrF {metrics['chrf']:.2f}   loss {metrics['loss']:.4f}"
            f"   (sacrebleu, tokenize={metrics['bleu_tokenize']})",
        ]
        if "baseline_tm_bleu" in metrics:
            gap = metrics["bleu"] - metrics["baseline_tm_bleu"]
            lines.append(
                f"translation-memory floor (nearest training source's target): BLEU {metrics['baseline_tm_bleu']:.2f}"
                f"   chrF {metrics['baseline_tm_chrf']:.2f}; the model is {abs(gap):.2f} BLEU "
                f"{'above' if gap >= 0 else 'BELOW'} it"  # as the classifier's report says it (not "-59.02 below")
            )
        if split == "train":  # no dev or test pairs: said beside the figures, which had stood as test figures
            lines.append("no dev or test pairs: the figures above are on the training split, which the model learned "
                         "from, and there the floor finds each source itself (near-perfect by construction); hold "
                         "pairs out (--split-col, or leave it out for a seeded split) to measure translation")
        seen = getattr(self, "seen", {})
        if seen.get(split):
            lines.append(f"{seen[split]} of the {metrics['sentences']} {split} sources also occur in the training "
                         "split (as the split column has it): the figures above include sentences the model learned "
                         "from")  # fmt: skip
        if split != "dev" and seen.get("dev"):  # the dev split chose the epoch: said beside the figures too
            lines.append(f"{seen['dev']} of the {len(self.parts['dev'])} dev sources also occur in the training split "
                         "(as the split column has it): the epoch was chosen on sentences the model learned from")
        if metrics.get("truncated_pairs"):
            lines.append(f"{metrics['truncated_pairs']} {split} pairs were cut to max_length={self.max_length} tokens")
        if metrics.get("truncated_training_pairs"):
            cut = metrics["truncated_training_pairs"]
            lines.append(f"{cut} training pairs were cut to max_length={self.max_length} tokens (a cut target is "
                         "learned without its end)")  # fmt: skip
        for sample in metrics.get("samples", [])[:3]:
            lines.append(f"  {sample['source']}\n    -> {sample['translation']}")
            lines.append(f"    (reference: {sample['reference']})")
        return "\n".join(lines)

    def write(self, writer: ArtifactWriter, model: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        files = self._save_tokenizers(writer.path)
        for name in files:
            writer.record(name)
        writer.save_training_texts(self.parts["train"].sources)
        writer.write_json("metrics.json", metrics)
        source: dict[str, Any] = {"origin": self.origin, **self.columns}
        if not isinstance(self.data, ParallelTexts) and Path(self.data).is_file():
            source |= {"path": str(Path(self.data).resolve()), "sha256": sha256_file(self.data)}
        elif not isinstance(self.data, ParallelTexts):
            source["dataset"] = str(self.data)
        return {
            "tokenizer": {"kind": self.kind, "shared": self.shared, "files": files, "max_length": self.max_length},
            "generation": dataclasses.asdict(self.generation),
            "data": {**source, "pairs": {name: len(part) for name, part in self.parts.items()},
                     "split_scheme": PAIR_SPLIT_SCHEME,
                     "target_unknown_rate": round(self.unknown_rate, 5), "bleu_tokenize": self.bleu_tokenize},
        }  # fmt: skip
