"""The focus assistant: pass or hold each incoming message, by an explicit cost rule, and say why.

Components (each a model or a learned weight; :mod:`attend.apps.focus.components`):

- ``relevance``: probability that the message bears on the task, from the task-to-message
  cross-attention (sentence cosine, attended similarity, strongest links, shared words, each read
  against the session's traffic, :class:`FeatureStats`) and the kind of message (its sentence
  embedding) and its channel (a learned weight per kind of message, :data:`CHANNELS`), through a
  logistic regression fitted on the scenario suite's *dev* tasks (``scenarios/README.md``), then
  shifted by what the person taught it (sender importance and preferences,
  :mod:`attend.apps.focus.person`);
- ``urgency``: probability that the message is urgent, from a logistic regression over MiniLM's
  sentence embedding and max-pooled token states, trained on the project's urgency data set
  (``urgency/README.md``) and the suite's dev messages. It reads the words only: like the
  person's feedback, the channel shifts relevance, never urgency, so no kind of message can be
  learned into holding an emergency;
- ``allowlist``: a sender or keyword the person said must always get through.

The rule (Horvitz et al. 1999, "attention-sensitive alerting": act when the expected cost of
delay exceeds the expected cost of interruption). With ``u`` the urgency, ``r`` the relevance:

    cost of holding      = u * C_urgent + (1 - u) * r * C_relevant
    cost of interrupting = (1 - u) * (1 - r) * C_interrupt

``pass`` when holding costs more, or when the allowlist matches. Defaults (:class:`Costs`, chosen
on the dev tasks): ``C_urgent = 4``, ``C_relevant = 2``, ``C_interrupt = 1``; so a message
passes on urgency alone from u = 1/5, and on relevance alone from r = 1/3.
The ``score`` is the probability the message needs the person now, ``1 - (1 - u)(1 - r)``.

The two fitted heads are trained on first use (a few seconds) and cached under the attend
cache folder (``$ATTEND_CACHE``, else ``~/.cache/attend``) as safetensors, keyed by the hash of
their training files and of the encoder's weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attend.apps.focus.components import (
    CrossAttention,
    Reading,
    TextReader,
    Weighted,
    cross_attention,
    merge_words,
    token_words,
    unreadable_letters,
)
from attend.apps.focus.person import PersonModel, sender_key
from attend.data.messages import Message
from attend.data.validation import is_empty, text_problem

__all__ = [
    "SCENARIOS_DIR",
    "UNREADABLE_REASON",
    "URGENCY_TRAIN",
    "Costs",
    "Decision",
    "FeatureStats",
    "FocusAssistant",
    "Heads",
    "Session",
    "allow_match",
    "channel_features",
    "channel_name",
    "message_input",
    "relevance_examples",
    "relevance_features",
    "similarity_features",
    "urgency_examples",
    "urgency_features",
]

_log = logging.getLogger("attend.focus")
HERE = Path(__file__).resolve().parent
#: The scenario suite (the relevance head is fitted on its dev tasks only).
SCENARIOS_DIR = HERE / "scenarios"
#: The urgency classifier's training data.
URGENCY_TRAIN = HERE / "urgency" / "train.jsonl"
#: The encoder's unknown-token piece.
UNKNOWN_PIECE = "[UNK]"
#: A message the encoder cannot read (at least this many of its letters, and this share of them,
#: unreadable to it: :func:`~attend.apps.focus.components.unreadable_letters`; Chinese, Arabic,
#: Thai or Korean text for the English MiniLM) passes unjudged: holding it could hold an
#: emergency. Emoji are not letters, so an emoji reaction is never unreadable. Set a priori, not tuned.
UNREADABLE_LETTERS = 2
UNREADABLE_SHARE = 0.4
#: Bumped when the heads' features or fitting change, so a cached fit is not reused.
HEADS_VERSION = 7
#: The urgency head's L2 strength (inverse): C = 1 gave the fewest dev false alarms at full
#: urgent recall, leave-one-task-out, among C in {1, 3, 10} (scripts/choose_focus_costs.py).
URGENCY_C = 1.0
#: The message channels the relevance head weighs (a learned weight each, one-hot; any other
#: channel, or none, adds nothing): the kinds of message the issue lists, as the suite labels them.
#: mbox and Maildir mail is ``email``, or ``newsletter`` when it carries a mailing-list or bulk
#: header (:mod:`attend.data.messages`).
CHANNELS = ("email", "chat", "sms", "notification", "calendar", "newsletter")

#: How the reason of a message passed because the encoder cannot read it begins.
UNREADABLE_REASON = "Unreadable:"


def channel_name(channel: str) -> str | None:
    """The :data:`CHANNELS` entry a message's channel names (``' Notifications'`` is ``notification``), or None."""
    name = channel.strip().lower()
    for candidate in (name, name[:-1] if name.endswith("s") else name):
        if candidate in CHANNELS:
            return candidate
    return None


def channel_features(channel: str) -> Tensor:
    """``(len(CHANNELS),)``: a one-hot of the message's channel (:func:`channel_name`); all zeros for
    no channel or another one."""
    out = torch.zeros(len(CHANNELS))
    name = channel_name(channel)
    if name is not None:
        out[CHANNELS.index(name)] = 1.0
    return out


def message_input(message: Message) -> str:
    """What the models read of a message: its subject, a newline, its text."""
    subject = message.subject.strip()
    return f"{subject}\n{message.text}" if subject and subject not in message.text else message.text


@dataclass(frozen=True)
class Costs:
    """The costs the rule weighs, in units of one interruption's cost.

    Attributes:
        urgent: Cost of holding an urgent message (default 4).
        relevant: Cost of holding a message that bears on the task (default 2).
        interrupt: Cost of interrupting the person with a message that needs nothing now (1).

    Both were chosen on the scenario suite's dev tasks by ``scripts/choose_focus_costs.py`` (both
    heads refitted leave-one-task-out): the urgent cost is the lowest that holds no urgent dev
    message and, on urgency alone, at most 2 % of the urgency data set's urgent messages
    (cross-validated); the relevant cost the one with the best dev balanced accuracy at it.
    """

    urgent: float = 4.0
    relevant: float = 2.0
    interrupt: float = 1.0

    def __post_init__(self) -> None:
        for name in ("urgent", "relevant", "interrupt"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} cost={value!r} must be a positive number")


#: Longest task description, in characters (the CLI's and the service's).
MAX_TASK_CHARS = 5000


@dataclass(frozen=True)
class Session:
    """What the person is focusing on: the task and the allowlist (senders or keywords)."""

    task: str
    allow: Sequence[str] = ()  # kept as a tuple of the entries, stripped

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.strip():
            raise ValueError("task is empty: describe what you are working on, e.g. --task 'write the Q3 report'")
        if len(self.task) > MAX_TASK_CHARS:  # the service's limit too
            raise ValueError(f"task is {len(self.task):,} characters long, over {MAX_TASK_CHARS:,}: describe the "
                             "task in a few sentences")  # fmt: skip
        if (problem := text_problem(self.task)) is not None:  # bytes that were not UTF-8, on a command line
            raise ValueError(f"task {problem}")
        if isinstance(self.allow, str):  # tuple("Maria") allowed every message with an M, an a, an r or an i
            raise ValueError(f"allow must be a list of entries, not one string: give [{self.allow!r}]")
        allow = tuple(self.allow)  # read once: a generator checked, then read again, would be empty
        for entry in allow:
            if not isinstance(entry, str):
                raise ValueError(f"allow entry {entry!r} is {type(entry).__name__}, expected a string")
            problem = text_problem(entry)
            if problem is not None and not is_empty(problem):
                raise ValueError(f"allow entry {entry!r} {problem}")
        # A blank entry (spaces, or invisible characters alone) allows nothing: dropped, as an empty one.
        # One written as a mail client copies a contact ("Mom <mom@x.org>", "<mom@x.org>") is its address:
        # read whole, it had matched no sender, the family emergency it was to let through held with it.
        object.__setattr__(self, "allow", tuple(_contact_address(a.strip()) for a in allow if text_problem(a) is None))
        for entry in self.allow:
            if entry == "@" or entry.endswith("@") or entry.count("@") > 1:
                raise ValueError(f"allow entry {entry!r} is no address: give name@domain, @domain, or a word")


@dataclass
class Decision:
    """One message's decision and everything behind it."""

    id: str
    decision: str
    score: float
    components: dict[str, Any]
    reasons: list[str]
    highlights: list[Weighted]
    truncated: bool = False
    embedding: Tensor | None = field(default=None, repr=False)
    relevance_logit: float = field(default=0.0, repr=False)  # before the person's shifts: what feedback corrects

    @classmethod
    def from_stored(cls, row: dict[str, Any]) -> Decision:
        """The decision a stored message (:meth:`FocusStore.message`'s dict) was given, as it was
        given (its highlights without their character offsets, which are not stored)."""
        highlights = [Weighted(h["text"], -1, -1, float(h["weight"]), h.get("linked_to")) for h in row["highlights"]]
        return cls(id=row["id"], decision=row["decision"], score=float(row["score"]), components=row["components"],
                   reasons=list(row["reasons"]), highlights=highlights, truncated=bool(row["truncated"]))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        # ``truncated`` always: a key that comes and goes is one a consumer forgets to look for.
        return {"id": self.id, "decision": self.decision, "score": round(self.score, 4),
                "components": self.components, "reasons": self.reasons,
                "highlights": [h.to_dict() for h in self.highlights], "truncated": self.truncated}  # fmt: skip


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file the project ships (the scenario suite, the urgency data)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _cached(path: Path) -> Heads | None:
    """The heads saved at ``path``, or None; a damaged file is removed, to be refitted, never trusted."""
    if path.is_file():
        try:
            return Heads.load(path)
        except Exception:
            path.unlink(missing_ok=True)
    return None


#: How long an assistant waits for another process fitting the heads into the same cache (a fit
#: takes about 30 s on one core) before fitting its own.
FIT_WAIT_SECONDS = 600


@contextlib.contextmanager
def _fit_lock(path: Path) -> Iterator[None]:
    """The cache's lock for fitting the heads saved at ``path``; without one (a read-only cache, or
    another process fitting for over :data:`FIT_WAIT_SECONDS`), each process fits its own."""
    from filelock import FileLock, Timeout

    from attend.io import acquire_or_wait, lock_path

    lock: FileLock | None = FileLock(lock_path(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        acquire_or_wait(lock, f"focus: another process is fitting the heads into {path.parent}; waiting for it",
                        FIT_WAIT_SECONDS)  # fmt: skip
    except (OSError, Timeout):
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _sha256(paths: Iterable[Path], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class Heads:
    """The two fitted heads: urgency (over the embedding) and relevance (over attention features)."""

    urgency_weight: Tensor  # (2E,): over [sentence embedding, max-pooled unit token states]
    urgency_bias: float
    relevance_weight: Tensor  # (4 + E + C,): standardised similarities, the message embedding, the channel
    relevance_bias: float
    prior_mean: Tensor  # (4,): the similarities' mean over the dev messages (the pool's prior)
    prior_std: Tensor  # (4,): and their standard deviation
    # (C,): each channel's share of the relevance training examples. The head reads the channel
    # one-hot minus these shares, so a message with no channel, or one not in CHANNELS, is read as
    # the average message (all zeros), not as a message of no channel at all.
    channel_mean: Tensor = field(default_factory=lambda: torch.zeros(len(CHANNELS)))

    @classmethod
    def fit_examples(cls, urgency: tuple[Any, Any], relevance: tuple[Any, Any], prior: tuple[Tensor, Tensor]
                     ) -> Heads:  # fmt: skip
        """Fit both logistic regressions on ``(features, labels)`` from :func:`urgency_examples` and
        :func:`relevance_examples` (the latter's last ``len(CHANNELS)`` columns are the channel one-hots)."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        u = LogisticRegression(C=URGENCY_C, max_iter=5000).fit(*urgency)
        x = np.array(relevance[0], dtype=np.float64)
        mean = x[:, -len(CHANNELS) :].mean(0)
        x[:, -len(CHANNELS) :] -= mean
        r = LogisticRegression(C=1.0, max_iter=5000).fit(x, relevance[1])
        return cls(torch.tensor(u.coef_[0], dtype=torch.float32), float(u.intercept_[0]),
                   torch.tensor(r.coef_[0], dtype=torch.float32), float(r.intercept_[0]), prior[0], prior[1],
                   torch.tensor(mean, dtype=torch.float32))  # fmt: skip

    def channel_term(self, channel: str) -> float:
        """What the channel adds to the relevance log-odds (0 for no channel, or one not in :data:`CHANNELS`)."""
        onehot = channel_features(channel)
        if not onehot.any():
            return 0.0
        return float((onehot - self.channel_mean) @ self.relevance_weight[-len(CHANNELS) :])

    def urgency(self, reading: Reading) -> float:
        return _sigmoid(float(urgency_features(reading) @ self.urgency_weight) + self.urgency_bias)

    def urgency_contributions(self, reading: Reading) -> Tensor:
        """``(L,)``: each token's share of the urgency logit (bias aside).

        Exact for the max-pooled half (each dimension's maximum is one token's); the mean half is
        split over the real tokens in proportion to their states (``[CLS]``/``[SEP]``'s share left out).
        """
        n, dim = reading.states.shape
        if n == 0:
            return torch.zeros(0)
        w_mean, w_max = self.urgency_weight[:dim], self.urgency_weight[dim:]
        pooled = reading.states.mean(0)
        contributions = reading.states @ w_mean / (n * pooled.norm().clamp_min(1e-9))
        unit = F.normalize(reading.states, dim=-1)
        winners = unit.argmax(0)  # (E,): the token holding each dimension's maximum
        return contributions.index_add(0, winners, w_max * unit.max(0).values)

    def relevance_logit(self, features: Tensor, channel_term: float = 0.0) -> float:
        """The relevance log-odds from :func:`relevance_features` and the channel's
        :meth:`channel_term` (0: no channel)."""
        return float(features @ self.relevance_weight[: -len(CHANNELS)]) + channel_term + self.relevance_bias

    def save(self, path: Path) -> None:
        from attend.io import save_tensors  # atomic; a full disk is one OSError line

        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors({"urgency_weight": self.urgency_weight, "relevance_weight": self.relevance_weight,
                      "biases": torch.tensor([self.urgency_bias, self.relevance_bias]),
                      "prior": torch.stack([self.prior_mean, self.prior_std]),
                      "channel_mean": self.channel_mean}, path)  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Heads:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return cls(tensors["urgency_weight"], float(tensors["biases"][0]), tensors["relevance_weight"],
                   float(tensors["biases"][1]), tensors["prior"][0], tensors["prior"][1],
                   tensors["channel_mean"])  # fmt: skip

    @classmethod
    def fit(cls, reader: TextReader) -> Heads:
        """Fit both heads: urgency on ``urgency/train.jsonl``, relevance on the suite's dev tasks.

        Relevance is fitted on the dev messages that pass or hold on relevance alone: urgent and
        allowlisted ones are left out (they pass whatever their relevance), so the label of each
        remaining message is "bears on the task".
        """
        features, labels_u, _ = urgency_examples(reader)
        features_rel, labels, _, prior = relevance_examples(reader)
        return cls.fit_examples((features, labels_u), (features_rel, labels), prior)


def urgency_examples(reader: TextReader, *, suite_tasks: Sequence[str] | None = None
                     ) -> tuple[list[Any], list[bool], list[str]]:  # fmt: skip
    """The urgency head's training examples: the urgency data set and the suite's dev messages
    (``suite_tasks``: only those dev tasks' messages). Features, labels and a group per example
    (``"urgency"`` or the task id)."""
    rows = read_jsonl(URGENCY_TRAIN)
    messages = [Message(id=str(r["id"]), text=r["text"], subject=r.get("subject") or "") for r in rows]
    labels, groups = [bool(r["urgent"]) for r in rows], ["urgency"] * len(rows)
    dev_tasks = {t["task_id"] for t in read_jsonl(SCENARIOS_DIR / "tasks.jsonl") if t["split"] == "dev"}
    for m in read_jsonl(SCENARIOS_DIR / "messages.jsonl"):
        if m["task_id"] in dev_tasks and (suite_tasks is None or m["task_id"] in suite_tasks):
            messages.append(_suite_message(m))
            labels.append(bool(m["urgent"]))
            groups.append(m["task_id"])
    features = [urgency_features(r).numpy() for r in reader.read([message_input(m) for m in messages])]
    return features, labels, groups


def relevance_examples(reader: TextReader, split: str = "dev"
                       ) -> tuple[list[Any], list[bool], list[str], tuple[Tensor, Tensor]]:  # fmt: skip
    """The relevance head's training examples from the suite's ``split`` tasks: features, labels
    ("bears on the task"), task ids, and the prior of the similarities (mean, std over all messages).

    Each task's messages are standardised against the task's own traffic (all its messages, with the
    prior), as a session standardises against its own. Urgent and allowlisted messages are left out
    of the examples (they pass whatever their relevance, so their label says nothing about it), not
    out of the traffic.
    """
    tasks = {t["task_id"]: t for t in read_jsonl(SCENARIOS_DIR / "tasks.jsonl") if t["split"] == split}
    messages = [m for m in read_jsonl(SCENARIOS_DIR / "messages.jsonl") if m["task_id"] in tasks]
    task_readings = dict(zip(tasks, reader.read([t["task"] for t in tasks.values()]), strict=True))
    readings = reader.read([message_input(_suite_message(m)) for m in messages])
    tasks_of = [task_readings[m["task_id"]] for m in messages]
    raw = torch.stack([similarity_features(t, r, cross_attention(t, r))
                       for t, r in zip(tasks_of, readings, strict=True)])  # fmt: skip
    prior = (raw.mean(0), raw.std(0).clamp_min(1e-3))
    features, labels, groups = [], [], []
    for task_id, task in tasks.items():
        index = [i for i, m in enumerate(messages) if m["task_id"] == task_id]
        pool = FeatureStats()
        pool.update(raw[index])
        for i in index:
            m = messages[i]
            if m["urgent"] or allow_match(tuple(task.get("allow") or ()), _suite_message(m)) is not None:
                continue
            features.append(torch.cat([relevance_features(pool.standardise(raw[i], *prior), readings[i]),
                                       channel_features(m.get("channel") or "")]).numpy())  # fmt: skip
            labels.append(bool(m["pass"]))
            groups.append(task_id)
    return features, labels, groups, prior


#: How many messages' worth of weight the prior has in a pool's mean and spread.
PRIOR_WEIGHT = 10.0


@dataclass
class FeatureStats:
    """Running mean and spread of the similarity features over a session's traffic (Welford).

    Relevance reads each similarity as a z-score against the messages the session has seen, shrunk
    towards the dev suite's prior by :data:`PRIOR_WEIGHT` pseudo-messages: a short task or a stream
    of headlines gives every message lower similarities, and what matters is how a message stands
    out from the rest of the person's traffic (leave-one-task-out ROC AUC on dev 0.917 standardised,
    0.911 raw; on the news stream balanced accuracy 0.58 against 0.50).
    """

    count: int = 0
    mean: list[float] = field(default_factory=lambda: [0.0] * 4)
    m2: list[float] = field(default_factory=lambda: [0.0] * 4)

    def update(self, rows: Tensor) -> None:
        for row in rows.tolist():
            self.count += 1
            for j, x in enumerate(row):
                delta = x - self.mean[j]
                self.mean[j] += delta / self.count
                self.m2[j] += delta * (x - self.mean[j])

    def standardise(self, x: Tensor, prior_mean: Tensor, prior_std: Tensor) -> Tensor:
        n, k = float(self.count), PRIOR_WEIGHT
        mean = torch.tensor(self.mean)
        combined = (k * prior_mean + n * mean) / (k + n)
        spread = k * prior_std**2 + torch.tensor(self.m2) + (k * n / (k + n)) * (mean - prior_mean) ** 2
        return (x - combined) / (spread / (k + n)).sqrt().clamp_min(1e-3)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FeatureStats:
        if not data:
            return cls()
        return cls(int(data["count"]), [float(v) for v in data["mean"]], [float(v) for v in data["m2"]])


def similarity_features(task: Reading, message: Reading, attention: CrossAttention) -> Tensor:
    """``(4,)``: how the message relates to the task, from the cross-attention.

    - the sentence cosine of task and message;
    - the attended similarity (how much of the task the message covers, under the task's attention);
    - the mean of the three strongest task-to-message links: a message that nails the one specific
      thing the task names (a ticket number, a client) scores high even when it says little else;
    - the share of the task's content words that appear verbatim in the message.

    The relevance head reads them standardised against the session's traffic (:class:`FeatureStats`),
    with the message's sentence embedding beside them: what kind of message it is (a colleague's
    reply, a newsletter, a delivery notice), which bears on whether a task-related message needs the
    person now.
    """
    best = attention.similarity.max(-1).values if attention.similarity.numel() else torch.zeros(1)
    top = best.topk(min(3, best.numel())).values.mean()
    task_words = {w.lower() for w, keep in zip(token_words(task), task.content.tolist(), strict=True) if keep}
    message_words = {w.lower() for w in token_words(message)}
    overlap = len(task_words & message_words) / max(1, len(task_words))
    return torch.tensor([attention.sentence_similarity, attention.attended_similarity, float(top), overlap])


def urgency_features(reading: Reading) -> Tensor:
    """``(2E,)``: the sentence embedding and the max over tokens of the unit token states.

    The max keeps a single alarming word ("ambulance", "boarding closes") from being averaged away
    in a long message: 5-fold ROC AUC on the urgency training set 0.974, against 0.952 for the
    embedding alone.
    """
    pooled = (torch.zeros_like(reading.embedding) if reading.states.shape[0] == 0
              else F.normalize(reading.states, dim=-1).max(0).values)  # fmt: skip
    return torch.cat([reading.embedding, pooled])


def relevance_features(standardised: Tensor, reading: Reading) -> Tensor:
    """``(4 + E,)``: the standardised similarities and the message's sentence embedding (the head
    adds the channel, :meth:`Heads.channel_term`)."""
    return torch.cat([standardised, reading.embedding])


def _suite_message(row: dict[str, Any]) -> Message:
    return Message(id=str(row["id"]), text=row["text"], sender=row.get("sender") or "",
                   subject=row.get("subject") or "", time=row.get("time"),
                   channel=row.get("channel") or "")  # fmt: skip


def _contact_address(entry: str) -> str:
    """An allowlist entry with an address in angle brackets as that address; any other as it is."""
    return sender_key(entry) if "<" in entry and "@" in sender_key(entry) else entry


#: A bare domain in an allowlist: labels joined by points, no spaces, the last of letters.
_DOMAIN = re.compile(r"[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")


def allow_match(allow: Sequence[str], message: Message) -> str | None:
    """The allowlist entry ``message`` matches, or None.

    An entry with ``@`` is an address: the sender's address exactly, or, written ``@domain``, any
    address at that domain or one under it; a bare domain (``example.com``, its last label letters)
    matches those addresses too, and, like any other entry, the words (``node.js`` is a keyword as
    well: ``@example.com`` is the way to match addresses only). Any other
    entry is a whole word or phrase of the sender's name, the subject or the text, or the part of
    the sender's address before its ``@`` or a word of it (``marta`` and ``marta.lopez`` in
    ``marta.lopez@corp.example``, ``ops-alerts``; not the domain's labels), case-insensitive:
    ``Tom`` is not ``Tomasz``.
    """
    key = sender_key(message.sender)
    local = key.split("@", 1)[0] if "@" in key else ""
    local_words = {local, *re.split(r"[._+-]+", local)} - {""}  # the address had matched no entry of its own
    everything = f"{message.sender}\n{message.subject}\n{message.text}".lower()
    for entry in allow:
        low = entry.lower().strip()
        if low.startswith("@"):
            if key.endswith(low) or key.endswith(f".{low[1:]}"):  # the domain, or one under it
                return entry
        elif "@" in low:
            if low == key:
                return entry
        elif _DOMAIN.fullmatch(low) and (key.endswith(f"@{low}") or key.endswith(f".{low}")):
            return entry  # a bare domain (stmarys.example): any address at it, as @stmarys.example
        elif low in local_words or re.search(rf"(?<![\w.@-]){re.escape(low)}(?![\w@-]|\.\w)", everything):
            return entry  # (the pattern: not "corp" of "corp.example")
    return None


class FocusAssistant:
    """Triage messages against a focus session (see the module docstring for the rule).

    Args:
        reader: The MiniLM reader (default: the installed package's weights).
        heads: Fitted heads (default: fitted on first use and cached).
        costs: The rule's costs.
    """

    def __init__(self, reader: TextReader | None = None, heads: Heads | None = None, costs: Costs | None = None,
                 *, cache_dir: str | Path | None = None) -> None:  # fmt: skip
        self.reader = reader if reader is not None else TextReader()
        self.costs = costs if costs is not None else Costs()
        self.heads = heads if heads is not None else self._cached_heads(cache_dir)
        self._tasks: dict[str, Reading] = {}

    def _cached_heads(self, cache_dir: str | Path | None) -> Heads:
        from attend.data.datasets import cache_root

        files = [URGENCY_TRAIN, SCENARIOS_DIR / "tasks.jsonl", SCENARIOS_DIR / "messages.jsonl"]
        key = _sha256(files, f"{HEADS_VERSION}:{self.reader.encoder.weights_sha256}")[:16]
        path = cache_root(cache_dir) / "focus" / f"heads-{key}.safetensors"
        if (heads := _cached(path)) is not None:
            return heads
        # One fit at a time per cache: processes started together (serve's workers, a triage beside
        # them) had each read every example; the others wait, then load what the first saved.
        with _fit_lock(path):
            if (heads := _cached(path)) is not None:
                return heads
            started = time.perf_counter()
            _log.info("focus: fitting the urgency and relevance heads on the bundled examples (first use only); "
                      "cached in %s", path.parent)  # fmt: skip
            heads = Heads.fit(self.reader)
            _log.info("focus: heads fitted in %.0f s", time.perf_counter() - started)
            try:
                heads.save(path)
            except OSError:  # a read-only cache only costs the refit next time
                pass
        return heads

    def task_reading(self, task: str) -> Reading:
        if task not in self._tasks:
            if len(self._tasks) > 64:
                self._tasks.clear()
            self._tasks[task] = self.reader.read([task])[0]
        return self._tasks[task]

    def task_warning(self, task: str) -> str | None:
        """What the person should know when the encoder cannot read ``task`` (no letters, or a
        language or script it was not trained on): relevance to it is then guesswork."""
        unreadable, lost, letters = _unreadable(self.task_reading(task))
        if not letters:
            return "the task has no words to read, so relevance to it cannot be judged: describe it in words"
        if unreadable:
            return (f"the encoder cannot read {lost} of the task's {letters} letters (a language or script it "
                    "was not trained on), so relevance to it is a guess; urgency and the allowlist still apply")
        return None

    def read(self, messages: Sequence[Message], *, batch_size: int = 32,
             progress: Callable[[int], None] | None = None) -> list[Reading]:  # fmt: skip
        """The encoder's reading of each message (what :meth:`triage` decides from); ``progress`` is
        called with the number of messages each batch read."""
        return self.reader.read([message_input(m) for m in messages], batch_size=batch_size, progress=progress)

    def triage(self, session: Session, messages: Sequence[Message], *, person: PersonModel | None = None,
               readings: Sequence[Reading] | None = None, pool: FeatureStats | None = None,
               batch_size: int = 32, progress: Callable[[int], None] | None = None) -> list[Decision]:  # fmt: skip
        """One decision per message, in order.

        Args:
            session: The task and allowlist.
            messages: The messages.
            person: What the person taught (None: nothing yet).
            readings: From :meth:`read`, to reuse them.
            pool: The session's traffic so far; the batch is added to it first (updated in place).
                None: the batch alone (with the prior) is the traffic.
            progress: Called with the number of messages each batch read (the encoder's work, most of it).
        """
        task = self.task_reading(session.task)
        readings = readings if readings is not None else self.read(messages, batch_size=batch_size, progress=progress)
        attentions = [cross_attention(task, r) for r in readings]
        raw = [similarity_features(task, r, a) for r, a in zip(readings, attentions, strict=True)]
        pool = pool if pool is not None else FeatureStats()
        if raw:
            pool.update(torch.stack(raw))
        standardised = [pool.standardise(x, self.heads.prior_mean, self.heads.prior_std) for x in raw]
        return [self._decide(session, task, m, r, a, z, person)
                for m, r, a, z in zip(messages, readings, attentions, standardised, strict=True)]  # fmt: skip

    def _decide(self, session: Session, task: Reading, message: Message, reading: Reading, attention: CrossAttention,
                standardised: Tensor, person: PersonModel | None) -> Decision:  # fmt: skip
        channel_shift = self.heads.channel_term(message.channel)
        base_logit = self.heads.relevance_logit(relevance_features(standardised, reading), channel_shift)
        sender_shift, passed, held = person.sender_shift(message.sender) if person else (0.0, 0, 0)
        preference = person.preference_shift(reading.embedding.tolist()) if person and person.updates else 0.0
        relevance = _sigmoid(base_logit + sender_shift + preference)
        urgency = self.heads.urgency(reading)
        allowed = allow_match(session.allow, message)
        unknown = sum(piece == UNKNOWN_PIECE for piece in reading.pieces)
        unreadable, lost, letters = _unreadable(reading)
        c = self.costs
        hold_cost = urgency * c.urgent + (1 - urgency) * relevance * c.relevant
        interrupt_cost = (1 - urgency) * (1 - relevance) * c.interrupt
        decision = "pass" if allowed is not None or unreadable or hold_cost > interrupt_cost else "hold"
        score = 1 - (1 - urgency) * (1 - relevance)

        task_words = token_words(task)
        links = [task_words[int(attention.queries[i])] for i in attention.weights.argmax(0).tolist()] \
            if attention.weights.numel() else None  # fmt: skip
        content = reading.content.float()  # highlights show content words (stop words carry no reason)
        relevance_words = merge_words(reading, (attention.received * content).tolist(), links=links)
        urgency_words = merge_words(reading, (self.heads.urgency_contributions(reading) * content).tolist())
        # Which component would decide on its own: urgency alone (as if irrelevant), relevance alone
        # (as if not urgent). The reasons lead with the one that decided.
        urgent_alone = urgency * c.urgent > (1 - urgency) * c.interrupt
        relevant_alone = relevance * c.relevant > (1 - relevance) * c.interrupt
        # Relevance with what the person taught it (feedback, the sender's record, the channel); the
        # words' own share is named where that moved it.
        by_words = _sigmoid(base_logit - channel_shift)  # the channel is taught too: not the words' (it was in)
        words_relevant = by_words * c.relevant > (1 - by_words) * c.interrupt
        # Where both would pass it alone, urgency leads when relevance rests on what was taught rather
        # than on the words (a duty call at urgency 0.91 had led with its chat channel's +1.9), or
        # when its cost of holding is larger than the words' own.
        urgent_first = urgent_alone and (not relevant_alone or not words_relevant
                                         or urgency * c.urgent >= by_words * c.relevant)  # fmt: skip
        reasons: list[str] = []
        if allowed is not None:
            reasons.append(f"{allowed!r} is on the allowlist, so it always gets through.")
            highlights = _allow_highlight(reading, allowed) or relevance_words
        elif unreadable:
            reasons.append(f"{UNREADABLE_REASON} the encoder cannot read {lost} of its {letters} letters (a language "
                           "or script it was not trained on), so its urgency and relevance cannot be judged; it "
                           "passes rather than risk holding something urgent.")  # fmt: skip
            highlights = []
        elif decision == "pass" and urgent_first:
            highlights = urgency_words
        else:
            highlights = relevance_words
        urgent_terms = ", ".join(f"'{w.text}'" for w in urgency_words[:3])
        linked = []
        for w in relevance_words:  # one per word already (merge_words)
            if w.weight > 0 and len(linked) < 3:  # stop words weigh 0: no reason
                linked.append(
                    f"'{w.text}' ({w.link})" if w.link and w.link.lower() != w.text.lower() else f"'{w.text}'"
                )
        related = ", ".join(linked)
        on = f", on {urgent_terms}" if urgent_terms else ""
        urgent_reason = (f"Urgent: the urgency classifier gives {urgency:.2f}{on}; holding an urgent message costs "
                         f"{c.urgent / c.interrupt:g} interruptions." if urgent_alone
                         else f"Not urgent on its own: the urgency classifier gives {urgency:.2f}.")  # fmt: skip
        words_note = f"; its words alone give {by_words:.2f}" if abs(relevance - by_words) >= 0.01 else ""
        # What the person taught, by how far it moved the relevance ("what you have taught" had been said
        # of a channel alone): (log-odds, opening of its words, closed by ", log-odds ...)").
        taught = [(channel_shift, f"its channel ({channel_name(message.channel)!r}"),
                  (sender_shift, "the sender's record (you answered their messages before"),
                  (preference, "your feedback (what your answers taught")]  # fmt: skip
        if relevant_alone and words_relevant:  # what the channel, sender or feedback moved said too, as elsewhere
            relevant_reason = f"Bears on the task ({relevance:.2f}{words_note}): " + (
                f"{related} link it to the task." if related else "its meaning is close to the task's.")  # fmt: skip
        elif relevant_alone:  # what lifted it, largest first
            through = " and ".join(f"{text}, log-odds {shift:+.1f})" for shift, text in sorted(taught, reverse=True)
                                   if shift >= 0.05)  # fmt: skip
            through = through or "what it learnt beside its words"
            relevant_reason = f"Bears on the task ({relevance:.2f}) through {through}{words_note}."
        elif words_relevant:  # its words would pass it: what was taught held it, and decided (it was "little bearing")
            lowered = [f"{text}, log-odds {shift:+.1f})" for shift, text in sorted(taught) if shift <= -0.05]
            through = " and ".join(lowered) or "what it learnt beside its words"
            too_little = "too little to interrupt you for" if decision == "hold" else "too little on its own"
            relevant_reason = (f"Its words alone bear on the task ({by_words:.2f}), but {through} "
                               f"{'bring' if len(lowered) > 1 else 'brings'} its relevance to {relevance:.2f}, "
                               f"{too_little}" + (f"; the words that linked it: {related}." if related else "."))
        else:
            relevant_reason = f"Little bearing on the task on its own ({relevance:.2f}{words_note})" + (
                f"; the closest words were {related}." if related else ".")  # fmt: skip
        together = decision == "pass" and allowed is None and not unreadable and not (urgent_alone or relevant_alone)
        # What was taught passed it where the words would have held it, urgency with them (a CI notice at
        # relevance 0.03 by its words, passed after one "pass" answer, had led with "urgency and relevance").
        words_hold = urgency * c.urgent + (1 - urgency) * by_words * c.relevant
        taught_passed = together and words_hold <= (1 - urgency) * (1 - by_words) * c.interrupt
        if taught_passed:
            raised = " and ".join(f"{text}, log-odds {shift:+.1f})" for shift, text in sorted(taught, reverse=True)
                                  if shift >= 0.05) or "what it learnt beside its words"  # fmt: skip
            reasons.append(f"Passes on what was taught: its words and urgency alone would hold it (relevance "
                           f"{by_words:.2f} by its words), but {raised} bring its relevance to {relevance:.2f}, and "
                           f"holding it would cost {hold_cost:.2f} against interrupting you "
                           f"{interrupt_cost:.2f}.")  # fmt: skip
        elif together:  # neither would pass it alone: lead with what did, not a reason to hold it
            reasons.append(f"Passes on urgency and relevance together: neither would pass it alone, but holding it "
                           f"would cost {hold_cost:.2f} against interrupting you {interrupt_cost:.2f}.")  # fmt: skip
        reasons += [urgent_reason, relevant_reason] if urgent_first else [relevant_reason, urgent_reason]
        if passed or held:
            reasons.append(f"You passed {passed} and held {held} earlier messages from {sender_key(message.sender)}.")
        if abs(preference) >= 0.5:
            direction = "raised" if preference > 0 else "lowered"
            # Not "on similar messages": sentence embeddings of unrelated texts still point alike, so what
            # was learnt from one kind of message moves every other a little too (a known limit).
            reasons.append(f"What your feedback taught {direction} its relevance (log-odds {preference:+.1f}; learnt "
                           "from all your answers, it moves every message a little, and those that read like the ones "
                           "you answered most).")  # fmt: skip
        if abs(channel_shift) >= 0.5:
            direction = "raised" if channel_shift > 0 else "lowered"
            reasons.append(f"Coming as {channel_name(message.channel)!r} {direction} its relevance (log-odds "
                           f"{channel_shift:+.1f}, against a message of any channel).")  # fmt: skip
        verdict = "passes" if decision == "pass" else "is held for the digest"
        if allowed is None and not unreadable and not together:
            reasons.append(
                f"Holding it would cost {hold_cost:.2f}, interrupting you {interrupt_cost:.2f}: it {verdict}."
            )
        components = {
            "relevance": round(relevance, 4),
            "relevance_to_task": round(_sigmoid(base_logit), 4),
            "relevance_logit": round(base_logit, 4),
            "similarity": round(attention.sentence_similarity, 4),
            "attended_similarity": round(attention.attended_similarity, 4),
            "attended_similarity_z": round(float(standardised[1]), 4),
            "urgency": round(urgency, 4),
            "channel": round(channel_shift, 4),
            "sender": round(sender_shift, 4),
            "preference": round(preference, 4),
            "allowlist": allowed,
            "unknown_pieces": unknown,
            "unreadable_letters": lost,
            "cost_of_holding": round(hold_cost, 4),
            "cost_of_interrupting": round(interrupt_cost, 4),
        }
        return Decision(id=message.id, decision=decision, score=score, components=components, reasons=reasons,
                        highlights=highlights, truncated=reading.truncated or message.truncated,
                        embedding=reading.embedding, relevance_logit=base_logit)  # fmt: skip


def _unreadable(reading: Reading) -> tuple[bool, int, int]:
    """``(unreadable, letters lost, letters)``: whether the encoder cannot read the text, by
    :data:`UNREADABLE_LETTERS` and :data:`UNREADABLE_SHARE` (messages and tasks alike)."""
    lost, letters = unreadable_letters(reading)
    return lost >= UNREADABLE_LETTERS and lost >= UNREADABLE_SHARE * letters, lost, letters


def _allow_highlight(reading: Reading, entry: str) -> list[Weighted]:
    match = re.search(rf"(?<!\w){re.escape(entry.lower())}(?!\w)", reading.text.lower())
    if not match:
        return []
    return [Weighted(reading.text[match.start() : match.end()], match.start(), match.end(), 1.0)]
