"""Ensembles of text classifiers: one model directory whose probabilities are its members' weighted mean.

:func:`make_ensemble` (``attend ensemble DIR1 DIR2 ... --out DIR``) writes a self-contained
model directory: each member is copied, whole, to ``members/00``, ``members/01``, ... (each stays
a model directory that ``attend.load`` opens on its own), and ``config.json`` says ``task:
classification`` with an ``ensemble`` entry listing the members, their weights and the shared
labels. :func:`attend.load` returns an :class:`EnsembleClassifier` for it (the classification
loader dispatches on the ``ensemble`` entry), which predicts, evaluates, explains and is served
like a single classifier.

Decisions, each also an error message where it refuses:

- **Labels.** Members must have the same labels. The same set in another order is accepted: the
  ensemble uses the first member's order and each member's probabilities are reordered to it.
  Different sets are refused, naming the labels only one side has and the directory.
- **Multi-label.** All members multi-label, or none; a mix is refused (a softmax and independent
  sigmoids are not the same quantity to average).
- **Ensembles of ensembles are flattened**: a member that is itself an ensemble contributes its
  members, each with its weight share times the weight given to the ensemble, so
  ``config.json`` always lists plain models.
- **Weights** are positive numbers, one per member (default 1 each); a prediction is
  ``sum_i w_i p_i / sum_i w_i`` (with equal weights: exactly the mean of the members' float32
  probabilities, computed in float64).
- **Runtimes.** Each member runs as its own directory suits (PyTorch, or ONNX Runtime for an
  ``attend export`` directory); ``int8``/``bf16``/``threads`` apply to every member. An explicit
  ``runtime="torch"``/``"onnx"`` is refused: there is no single network to run with it. So are
  ``attend export``, ``quantize`` and ``prune``, which need one network: run them on a member
  directory, and build an ensemble of the results.
- **Explanations** average the members' importances on the words of the text (members may
  tokenise differently; :func:`attend.explain.explain`, via :class:`attend.explain.protocol.Combined`);
  the methods offered are those every member offers. There are no attention maps of the
  ensemble as a whole, and no gradients through it: :attr:`EnsembleClassifier.capabilities` is
  empty, and asking for maps is an error that says so.
- **Writing** is atomic (:class:`attend.io.ArtifactWriter`): an existing ``--out`` is replaced
  only with ``overwrite=True``, a directory attend did not write never, and an output that is
  (or holds) one of the members is refused.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from attend.data.tokenization import TextTokenizer
from attend.data.validation import check_count, validate_texts
from attend.explain.methods import available_methods
from attend.io import (
    ENSEMBLE_MEMBERS_DIR,
    ArtifactDir,
    EnsembleMember,
    ModelDirError,
    check_output_directory,
    member_sources,
    write_ensemble,
)
from attend.runtime.base import LoadOptions, Runtime, load
from attend.runtime.classifier import AttentionOutputs, Capabilities, Predictions, TextClassifier, read_labels
from attend.version import __version__

__all__ = ["MEMBERS_DIR", "EnsembleClassifier", "load_ensemble", "make_ensemble"]

#: Where the members' directories live inside an ensemble's.
MEMBERS_DIR = ENSEMBLE_MEMBERS_DIR


def _no_single_network(what: str, count: int) -> str:
    return (
        f"an ensemble of {count} models has no {what} of its own: its members tokenise and run separately; "
        f"use a member's directory (under {MEMBERS_DIR}/) for that"
    )


class EnsembleClassifier(TextClassifier):
    """Text classifiers combined: probabilities are the weighted mean of the members'.

    Everything :class:`TextClassifier` builds on probabilities is shared unchanged
    (``predict``, ``top_k``, ``evaluate``, ``explain``); what needs one network (``logits``,
    ``attention_outputs``, ``plan``, ``tokenizer``) raises a ``ValueError`` that says so.

    Attributes:
        members: The member runtimes, in ``config.json``'s order.
        member_weights: Their weights (positive; a prediction divides by their sum).
        labels: The ensemble's labels (the first member's order).
    """

    def __init__(
        self,
        members: Sequence[TextClassifier],
        weights: Sequence[float],
        labels: Sequence[str],
        config: dict[str, Any],
        path: Path | None = None,
    ) -> None:
        # Not TextClassifier.__init__: an ensemble has no tokenizer of its own.
        Runtime.__init__(self, config, path)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if len(weights) != len(members):
            raise ValueError(f"{len(weights)} weights for {len(members)} members")
        self.members = list(members)
        self.member_weights = [float(w) for w in weights]
        self.labels = list(labels)
        self._orders = [
            _label_order(member.labels, self.labels, str(member.path or member.name)) for member in self.members
        ]

    # --- what a single network would provide ------------------------------------------

    @property
    def tokenizer(self) -> TextTokenizer:  # type: ignore[override]
        raise ValueError(_no_single_network("tokenizer", len(self.members)))

    @property
    def backend(self) -> str:
        return "ensemble:" + ",".join(member.backend for member in self.members)

    def training_fingerprints(self) -> set[int] | None:
        """The texts some member was trained on (None where a member does not say)."""
        seen: set[int] = set()
        for member in self.members:
            found = member.training_fingerprints()
            if found is None:
                return None
            seen |= found
        return seen

    @property
    def capabilities(self) -> Capabilities:
        """None: no maps, pooling or gradients of the ensemble as a whole (explanations come from the
        members, through :func:`attend.explain.explain`; :func:`attend.explain.available_methods`
        lists what every member offers)."""
        return Capabilities()

    @property
    def padding_cost(self) -> float:
        return 1.0

    @property
    def max_length(self) -> int:
        """The fewest tokens any member reads: a longer text is truncated by at least that member."""
        return min(member.max_length if isinstance(member, EnsembleClassifier) else member.tokenizer.max_length
                   for member in self.members)  # fmt: skip

    def logits(self, encoded: dict[str, Any]) -> Tensor:
        raise ValueError(_no_single_network("logits (it averages probabilities)", len(self.members)))

    def probabilities(self, encoded: dict[str, Any]) -> np.ndarray:
        raise ValueError(_no_single_network("encoded batches (give texts: predict_proba)", len(self.members)))

    def attention_outputs(
        self, encoded: dict[str, Any], *, layers: Sequence[int] | None = None, grad: bool = False
    ) -> AttentionOutputs:
        raise ValueError(_no_single_network("attention maps", len(self.members)))

    def plan(self, texts: Sequence[str], batch_size: int) -> list[list[int]]:
        raise ValueError(_no_single_network("batch plan", len(self.members)))

    # --- predictions ------------------------------------------------------------------

    def predictions(self, texts: Sequence[str], *, batch_size: int = 64) -> Predictions:
        """The weighted mean of the members' probabilities (float64), with per text ``truncated`` when any
        member cut it, ``unknown`` when every member found none of its pieces in its vocabulary, and
        ``unknown_share`` the least any member found unknown."""
        checked = validate_texts(texts, allow_empty=True)
        batch_size = check_count("batch_size", batch_size)
        probs = np.zeros((len(checked), len(self.labels)), dtype=np.float64)
        truncated = np.zeros(len(checked), dtype=bool)
        unknown = np.ones(len(checked), dtype=bool)
        share: np.ndarray | None = None
        for member, weight, order in zip(self.members, self.member_weights, self._orders, strict=True):
            found = member.predictions(checked, batch_size=batch_size)
            probs += weight * found.probs[:, order].astype(np.float64)
            truncated |= found.truncated
            unknown &= found.unknown
            if found.unknown_share is not None:
                share = found.unknown_share if share is None else np.minimum(share, found.unknown_share)
        probs /= sum(self.member_weights)
        return Predictions(probs=probs, truncated=truncated, unknown=unknown, unknown_share=share)


def _label_order(member_labels: Sequence[str], labels: Sequence[str], where: str) -> list[int]:
    """Indices into ``member_labels`` that give ``labels``' order (the same set is required)."""
    if set(member_labels) != set(labels) or len(member_labels) != len(labels):
        raise ModelDirError(_label_mismatch(where, list(member_labels), "the ensemble", list(labels)))
    return [list(member_labels).index(label) for label in labels]


def _label_mismatch(where: str, got: list[str], reference: str, expected: list[str]) -> str:
    extra = [label for label in got if label not in expected]
    missing = [label for label in expected if label not in got]
    parts = [f"{extra} only in {where}"] if extra else []
    parts += [f"{missing} only in {reference}"] if missing else []
    if not parts:  # the same names, one of them repeated
        parts = ["a label is repeated"]
    return (
        f"{where} has labels {got}, {reference} has {expected} ({'; '.join(parts)}): an ensemble averages the "
        "probabilities of the same labels, so every member must have the same label set"
    )


# --- writing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    """A plain model going into an ensemble: its directory, weight, labels and kind."""

    path: Path
    weight: float
    labels: list[str]
    multi_label: bool
    model_type: str
    given_as: str
    identity: str | None = None  # :func:`_identity` of its config.json
    source: str | None = None  # where it came from: a nested ensemble's record, not its copy there


def _weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0] * count
    values = list(weights)
    if len(values) != count:
        raise ValueError(f"weights={values}: {len(values)} weights for {count} members (give one per member)")
    for value in values:
        # numbers.Real: numpy's np.int64(1) had been refused as "must be a positive number"
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"weights={values}: weight {value!r} must be a positive number")
    # Shares that sum to 1, scaled by the largest first: weights near the float limit (1e308, 1e308)
    # would otherwise sum to infinity and turn every probability into 0.
    largest = max(float(v) for v in values)
    scaled = [float(v) / largest for v in values]
    return [v / sum(scaled) for v in scaled]


def _plain_members(path: Path, weight: float, given_as: str, source: str | None = None) -> list[_Member]:
    """The plain models of one member directory: itself, or an ensemble's members (flattened, each
    with the source its ensemble recorded: its copy inside that ensemble is not where it came from)."""
    artifact = ArtifactDir.open(path)
    if artifact.task != "classification":
        raise ModelDirError(f"{path} holds a {artifact.task} model; an ensemble combines text classifiers")
    spec = artifact.config.get("ensemble")
    if isinstance(spec, dict):
        inner = _ensemble_spec(artifact)
        total = sum(entry["weight"] for entry in inner)
        found = []
        for entry in inner:
            inner_path = path / entry["path"]
            recorded = entry.get("source")
            found += _plain_members(inner_path, weight * entry["weight"] / total, str(inner_path),
                                    recorded if isinstance(recorded, str) else None)  # fmt: skip
        return found
    if not isinstance(artifact.config.get("model"), dict):
        raise ModelDirError(f"{path / 'config.json'} lacks the 'model' and 'labels' entries of an attend model")
    model = artifact.config["model"]
    return [_Member(path=path, weight=weight, labels=read_labels(artifact), multi_label=bool(model.get("multi_label")),
                    model_type=str(model.get("model_type", "model")), given_as=given_as,
                    identity=_identity(artifact.config), source=source or str(path.absolute()))]  # fmt: skip


def _check_compatible(members: list[_Member]) -> None:
    first = members[0]
    for member in members[1:]:
        if set(member.labels) != set(first.labels) or len(member.labels) != len(first.labels):
            raise ModelDirError(_label_mismatch(member.given_as, member.labels, first.given_as, first.labels))
        if member.multi_label != first.multi_label:
            kinds = {True: "multi-label", False: "single-label"}
            raise ModelDirError(
                f"{member.given_as} is {kinds[member.multi_label]} but {first.given_as} is "
                f"{kinds[first.multi_label]}: an ensemble averages one kind of probability (softmax or per-label "
                "sigmoids), so its members must all be multi-label or all single-label"
            )


def make_ensemble(
    members: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    weights: Sequence[float] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write an ensemble of classifier directories to ``out``; the body of ``attend ensemble``.

    Args:
        members: Model directories of text classifiers (``attend train``, ``prune``, ``export``
            or ``ensemble``; an ensemble is flattened into its members).
        out: The ensemble's model directory.
        weights: One positive weight per entry of ``members`` (default: equal).
        overwrite: Replace a model directory already at ``out``.

    Returns:
        A JSON-ready report: ``out_dir``, ``labels``, ``multi_label``, per member its ``path``
        inside ``out``, ``source``, ``model_type`` and ``weight``, and ``unexplainable_members``:
        the sources of members no explanation method can read (an ONNX graph exported without
        ``--attentions``, an int8 one), which leave the ensemble nothing to explain with.

    Raises:
        ModelDirError: a member is not a loadable classifier directory, the members' labels or
            multi-label settings differ (the message names the labels and the directory), or
            ``out`` exists without ``overwrite``, is not a model directory, or is a member.
        ValueError: no members, or bad weights.
    """
    if isinstance(members, str | os.PathLike):  # its letters had been read as directories ("m: no such ...")
        raise ValueError(f"members: a list of model directories, not one path ({os.fspath(members)!r})")
    if not members:
        raise ValueError("an ensemble needs at least one member directory")
    given = _weights(weights, len(members))
    out_path = Path(out)
    plain: list[_Member] = []
    for path, weight in zip(members, given, strict=True):
        plain += _plain_members(Path(path), weight, str(path))
    seen: dict[str, Path] = {}
    for member in plain:  # the same weights twice: a weight of 2 said another way
        key = member.identity or str(member.path.resolve())
        if key in seen:
            raise ValueError(f"{member.path} and {seen[key]} are the same model; give each model once (--weights "
                             "weighs one more than another)")  # fmt: skip
        seen[key] = member.path
    _check_compatible(plain)
    unexplained = []  # members no explanation method can read: the ensemble predicts, and explains nothing
    for member in plain:  # the member's copy would hold the ensemble: said so before any other check of out
        if member.path.resolve() in out_path.resolve().parents:
            raise ModelDirError(f"{out} is inside the member {member.path}; choose an output outside every member")
    for member in plain:
        check_output_directory(out_path.absolute(), source=member.path, overwrite=overwrite)
        # A member that would not load (corrupt, incomplete) is refused now, not at serving.
        if not available_methods(load(member.path)):
            unexplained.append(member.source or str(member.path))
    published, entries = write_ensemble(
        [EnsembleMember(path=m.path, weight=m.weight, labels=m.labels, model_type=m.model_type,
                        source=m.source or str(m.path.absolute())) for m in plain],
        out_path, multi_label=plain[0].multi_label, overwrite=overwrite, config={"attend_version": __version__},
    )  # fmt: skip
    labels = plain[0].labels
    return {"out_dir": str(published), "labels": labels, "multi_label": plain[0].multi_label, "members": entries,
            "unexplainable_members": unexplained}  # fmt: skip


def _identity(config: dict[str, Any]) -> str | None:
    """What makes a member the model it is: the SHA-256 of the weights its ``config.json`` records
    (an ONNX directory's: the weights it was exported from, so a model and its export are one
    model), and its labels in their order (the same weights with the outputs named otherwise are
    another model); None where it records none."""
    files = config.get("files")
    found = (files.get("model.safetensors") if isinstance(files, dict) else None) or config.get("weights_sha256")
    onnx = config.get("onnx")
    if not found and isinstance(onnx, dict):
        found = onnx.get("source_weights_sha256") or onnx.get("sha256")
    return json.dumps([found, config.get("labels")]) if isinstance(found, str) else None


# --- loading -----------------------------------------------------------------------------


def _ensemble_spec(artifact: ArtifactDir) -> list[dict[str, Any]]:
    """The ``ensemble.members`` entries, checked: each a member folder inside the directory, with a weight."""
    file = artifact.path / "config.json"
    spec = artifact.config.get("ensemble")
    entries = spec.get("members") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ModelDirError(f"{file}: 'ensemble' lists no members")
    for entry in entries:
        path = entry.get("path") if isinstance(entry, dict) else None
        weight = entry.get("weight") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path.startswith(f"{MEMBERS_DIR}/") or ".." in Path(path).parts:
            raise ModelDirError(f"{file}: ensemble member {entry!r} does not name a folder under {MEMBERS_DIR}/")
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not math.isfinite(weight) or weight <= 0:
            raise ModelDirError(f"{file}: ensemble member {path!r} has weight {weight!r}; expected a positive number")
    return entries


def load_ensemble(artifact: ArtifactDir, options: LoadOptions) -> EnsembleClassifier:
    """The ensemble in ``artifact`` (called by the classification loader for a config with ``ensemble``).

    Each member's ``config.json`` is checked against the hash the ensemble recorded (a member's own
    config records its files' hashes, so the whole tree is checked), then loaded with ``options``.
    """
    path = artifact.path
    if options.runtime != "auto":
        raise ModelDirError(
            f"{path} is an ensemble: it has no single network to run with runtime={options.runtime!r} (each member "
            "runs with the runtime its own directory suits; leave the runtime out). To export, quantise or prune it, "
            f"run those on {member_sources(path)}"
        )
    labels = read_labels(artifact)
    members, weights = [], []
    for entry in _ensemble_spec(artifact):
        artifact.file(f"{entry['path']}/config.json")
        try:
            member = load(path / entry["path"], int8=options.int8, bf16=options.bf16, threads=options.threads)
        except ModelDirError as exc:
            if options.int8 and "no int8 model" in str(exc):
                raise ModelDirError(
                    f"{path}: member {entry['path']} (from {entry.get('source', 'an unrecorded source')}) has no int8 "
                    "model: quantise that source (attend quantize SOURCE) and build the ensemble again with "
                    "--overwrite"
                ) from None
            raise
        if not isinstance(member, TextClassifier):
            raise ModelDirError(f"{path / entry['path']} holds a {member.task} model, not a text classifier")
        if member.multi_label != bool(artifact.config["model"].get("multi_label", False)):
            raise ModelDirError(f"{path / entry['path']}: its multi-label setting differs from the ensemble's")
        members.append(member)
        weights.append(float(entry["weight"]))
    return EnsembleClassifier(members, weights, labels, artifact.config, path)
