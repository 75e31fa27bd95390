"""Labelled data by name or path, and the held-out splits of a trained model, rebuilt exactly.

Training records in ``config.json`` where its data came from and how it was read (the file's path
and SHA-256, or the bundled dataset's name), and :func:`~attend.data.readers.stratified_split` is
a pure function of that record, the seed and the fractions. So the dev and test examples of any
model directory can be rebuilt later (:func:`rebuild_split`), to judge compression, export and
evaluation on texts the model never trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attend.data.parallel import normalise_whitespace
from attend.data.readers import SPLIT_SCHEME, DataError, LabelledTexts, read_table, split_scheme, stratified_split
from attend.io import ArtifactDir, ModelDirError, count_seen, sha256_file, text_fingerprints

__all__ = ["data_provenance", "held_out", "judged_overlap", "load_labelled", "rebuild_split"]


def trained_columns(config: dict[str, Any], path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The ``text_col``, ``label_col`` (and ``label_sep``, if any) a classifier was trained on
    (``config.json``'s ``data``); an ensemble's (under ``path``), its members' where they all
    agree; ``{}`` where none is recorded."""
    data = config.get("data")
    if isinstance(data, dict) and isinstance(data.get("text_col"), str) and data["text_col"]:
        keys = ("text_col", "label_col", "label_sep")
        return {key: data[key] for key in keys if isinstance(data.get(key), str) and data[key]}
    spec = config.get("ensemble")
    members = spec.get("members") if isinstance(spec, dict) else None
    if path is None or not isinstance(members, list) or not members:
        return {}
    found = []
    for entry in members:
        inside = entry.get("path") if isinstance(entry, dict) else None
        parts = Path(inside).parts if isinstance(inside, str) else ()
        if not parts or ".." in parts or Path(inside).is_absolute():  # type: ignore[arg-type]
            return {}  # a malformed entry, which would lead out of the directory or back into it (load() says so)
        where = Path(path) / inside
        try:
            member = ArtifactDir.open(where).config
        except (ModelDirError, OSError, ValueError):
            return {}
        found.append(trained_columns(member, where))
    # Each column the members agree on (one label separator apart, their text and label columns still hold).
    agreed = {key: value for key, value in found[0].items() if all(columns.get(key) == value for columns in found)}
    # A member trained on JSON lists of labels has no separator: the others' one holds (a CSV of "a|b"
    # cells was read as unknown labels "a|b" by an ensemble of a '|' member and a JSON-list one).
    separators = {columns["label_sep"] for columns in found if "label_sep" in columns}
    if len(separators) == 1:
        agreed["label_sep"] = separators.pop()
    return agreed


def seen_in_training(training: Sequence[str], held_out: Sequence[str], key: Callable[[str], str] = normalise_whitespace
                     ) -> int:  # fmt: skip
    """How many of ``held_out`` are copies (the same ``key``: whitespace aside, as attend's own
    split finds copies of a text) of one in ``training``: a split column a user gave may put copies
    on both sides (attend's own split keeps every copy in one split), and a held-out figure over
    them is not a held-out one."""
    seen = {key(text) for text in training}
    return sum(key(text) in seen for text in held_out)


def parallel_columns(config: dict[str, Any]) -> tuple[str, str]:
    """The source and target columns a translator was trained on (``config.json``'s ``data``),
    else ``source`` and ``target``: where its verbs read a table the user did not name columns of."""
    data = config.get("data")
    data = data if isinstance(data, dict) else {}
    source, target = data.get("source_col"), data.get("target_col")
    return (source if isinstance(source, str) and source else "source",
            target if isinstance(target, str) and target else "target")  # fmt: skip


#: The columns a classifier's data is read from when neither the user nor the model says otherwise.
DEFAULT_COLUMNS = {"text_col": "text", "label_col": "label"}


def label_separator(config: dict[str, Any], path: str | os.PathLike[str] | None, label_sep: str | None) -> str | None:
    """The separator of a classifier's label cells in data given to it: ``label_sep`` as given,
    else the one a multi-label model trained with ("a|b" is two labels, as training read it); None
    for a single-label model.

    Raises:
        DataError: a separator given to a single-label model, or an empty one.
    """
    multi_label = bool(config["model"].get("multi_label", False))
    if label_sep is not None and not multi_label:
        raise DataError(f"label_sep={label_sep!r} splits a multi-label model's label cells; this model has one "
                        "label per text")  # fmt: skip
    if label_sep == "":
        raise DataError("label_sep='' splits nothing; give the separator, e.g. '|'")
    if label_sep is None and multi_label:
        return trained_columns(config, path).get("label_sep")
    return label_sep


def model_column(config: dict[str, Any], path: str | os.PathLike[str] | None, name: str, given: str | None) -> str:
    """Column ``name`` (``text_col`` or ``label_col``) of data given to a classifier: as ``given``,
    else the one it was trained on (:func:`trained_columns`), else ``text``/``label``."""
    return given or trained_columns(config, path).get(name) or DEFAULT_COLUMNS[name]


def load_labelled(
    data: str | os.PathLike[str],
    *,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    multi_label: bool = False,
    label_sep: str | None = None,
    training: bool = False,
) -> LabelledTexts:
    """Read a data file, or load a bundled dataset when ``data`` names one (``training``: see
    :func:`~attend.data.readers.read_table`)."""
    if not isinstance(data, str | os.PathLike):
        raise TypeError(f"data is {type(data).__name__} {data!r:.60}: give a file path or a dataset name (texts "
                        "already in memory: attend.data.LabelledTexts(texts=[...], labels=[[...], ...]))")  # fmt: skip
    from attend.data.datasets import load_dataset, names_dataset, unknown_data

    path = Path(data)
    if path.exists() and not names_dataset(data):
        return read_table(
            path, text_col=text_col, label_col=label_col, split_col=split_col, multi_label=multi_label,
            label_sep=label_sep, training=training,
        )  # fmt: skip
    if names_dataset(data):
        dataset = load_dataset(str(data))
        return LabelledTexts(
            texts=dataset.texts,
            labels=[[label] for label in dataset.labels],
            lines=list(range(1, len(dataset.texts) + 1)),
            source=f"dataset:{data}",
        )
    raise DataError(unknown_data(data))


def data_provenance(
    data: str | os.PathLike[str] | LabelledTexts, *, split_col: str | None, multi_label: bool, label_sep: str | None
) -> dict[str, Any]:
    """What :func:`rebuild_split` needs besides the seed and fractions: how the data was read.

    A file is recorded by absolute path and SHA-256, so a split is only rebuilt from the very
    same bytes. Texts handed over already loaded may be a subsample of their ``source``, so
    they are marked as not rebuildable rather than silently re-split from the whole file.
    """
    record: dict[str, Any] = {"split_col": split_col, "multi_label": multi_label, "label_sep": label_sep,
                              "split_scheme": split_scheme(multi_label or label_sep is not None)}  # fmt: skip
    if isinstance(data, LabelledTexts):
        return record | {"rebuildable": False}
    path = Path(data)
    if path.is_file():
        record |= {"path": str(path.resolve()), "sha256": sha256_file(path)}
    return record | {"rebuildable": True}


def _split_scheme(where: str, data: Mapping[str, Any]) -> int:
    """The split scheme a model records (a model split before schemes were recorded: the first)."""
    scheme = data.get("split_scheme", 1)
    if scheme not in range(1, SPLIT_SCHEME + 1) or isinstance(scheme, bool):
        raise DataError(f"{where}: its split scheme {scheme!r} is none this attend knows (1 to {SPLIT_SCHEME}: a newer "
                        "attend's?); upgrade attend, or pass labelled data explicitly")  # fmt: skip
    return int(scheme)


def rebuild_split(model: str | os.PathLike[str] | Mapping[str, Any], split: str = "test") -> LabelledTexts:
    """One split (``"train"``, ``"dev"`` or ``"test"``) of the data a saved model was trained on.

    Args:
        model: A model directory, or its parsed ``config.json``.
        split: Which split.

    Raises:
        DataError: The config records no rebuildable source, the data file is gone or has
            changed since training, or the rebuilt split sizes differ from the recorded ones.
            The message says to pass labelled data explicitly instead.
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split={split!r}; choose 'train', 'dev' or 'test'")
    if isinstance(model, Mapping):
        config, where = model, "the model"
    else:
        where = str(model)
        try:
            config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{where}: cannot read config.json to rebuild the {split} split ({exc})") from None
    data = config.get("data") or {}
    training = config.get("training") or {}
    source = data.get("source")
    fix = "pass labelled data explicitly"
    if not source or data.get("rebuildable") is False:
        raise DataError(
            f"{where}: its training data was passed in already loaded, so its {split} split cannot be rebuilt; {fix}"
            if source else f"{where}: config.json records no training data source; {fix}"
        )
    if str(source).startswith("dataset:"):
        location: str = str(source).removeprefix("dataset:")
    else:
        location = data.get("path") or str(source)
        if not Path(location).is_file():
            raise DataError(f"{where}: its training data {location} is not there any more; {fix}")
        if data.get("sha256") and sha256_file(location) != data["sha256"]:
            raise DataError(
                f"{where}: {location} has changed since the model was trained, so its {split} split "
                f"cannot be rebuilt; {fix}"
            )
    dataset = load_labelled(
        location, text_col=data.get("text_col", "text"), label_col=data.get("label_col", "label"),
        split_col=data.get("split_col"), multi_label=bool(data.get("multi_label", False)),
        label_sep=data.get("label_sep"),
    )  # fmt: skip
    indices = stratified_split(
        dataset, seed=int(training.get("seed", 0)), dev_fraction=float(training.get("dev_fraction", 0.1)),
        test_fraction=float(training.get("test_fraction", 0.1)),
        scheme=_split_scheme(where, data),
    )  # fmt: skip
    sizes = {name: len(idx) for name, idx in zip(("train", "dev", "test"), indices, strict=True)}
    recorded = data.get("sizes")
    if recorded and {name: recorded.get(name) for name in sizes} != sizes:
        raise DataError(
            f"{where}: rebuilding the splits of {source} gives sizes {sizes}, but training recorded {recorded}; "
            f"the data or its reading options differ; {fix}"
        )
    return dataset.subset(indices[("train", "dev", "test").index(split)])


def judged_overlap(chosen: LabelledTexts, judged: LabelledTexts, what: str) -> str:
    """``"; N of them are texts of ..."`` where texts ``chosen`` picked something (heads to prune, an
    int8 plan) are among the ``judged`` texts the result is scored on, else ``""``: chosen on the
    test split, the figure had been reported as a held-out one without a word."""
    shared = count_seen(chosen.texts, set(text_fingerprints(judged.texts).tolist()))  # as training_overlap counts
    return (f"; {shared} of them are texts of the data the result is scored on: the {what} chosen on them, so "
            "its figure is not a held-out one" if shared else "")  # fmt: skip


def held_out(
    model_dir: Path,
    config: Mapping[str, Any],
    data: str | os.PathLike[str] | LabelledTexts | None,
    split: str,
    *,
    hint: str = "data=, --data FILE",
    text_col: str | None = None,
    label_col: str | None = None,
    label_sep: str | None = None,
) -> tuple[LabelledTexts, str]:
    """Labelled examples to judge a model on, and a description of them.

    ``label_sep`` splits a multi-label model's label cells (default: the separator it trained with;
    a single-label model refuses one).

    ``data`` wins when given (a file, a bundled dataset name, or loaded texts; ``text_col`` and
    ``label_col`` name a file's columns, by default the ones the model was trained from, and a
    dataset or loaded texts have their own); otherwise
    the model's own ``split``, rebuilt from its config. An empty test split (``test_fraction=0``)
    falls back to dev. Given data that holds texts of the model's training split is said so in the
    description (its figure is not a held-out one), as ``attend evaluate`` says it.
    """
    if data is not None:
        if isinstance(data, LabelledTexts):
            dataset = data
        else:
            dataset = load_labelled(
                data, text_col=model_column(config, model_dir, "text_col", text_col),
                label_col=model_column(config, model_dir, "label_col", label_col),
                multi_label=bool(config["model"].get("multi_label", False)),
                label_sep=label_separator(config, model_dir, label_sep),
            )  # fmt: skip
        if not len(dataset):
            raise DataError(f"{dataset.source}: no examples to evaluate on")
        seen = ArtifactDir.open(model_dir).training_overlap(dataset.texts)
        trained = f"; {seen} of them are texts the model trained on: not a held-out figure" if seen else ""
        return dataset, f"{dataset.source or 'given data'} ({len(dataset)} examples{trained})"
    try:
        dataset = rebuild_split(model_dir, split)
        if not len(dataset) and split == "test":
            split, dataset = "dev", rebuild_split(model_dir, "dev")
    except DataError as exc:
        raise DataError(f"{exc} ({hint})") from None
    if not len(dataset):
        raise DataError(f"{model_dir}: its training run held out no {split} examples; pass labelled data ({hint})")
    return dataset, f"{split} split of {dataset.source} ({len(dataset)} examples)"
