"""What the assistant learns about one person from their feedback, online.

Two things, both updated the moment a ``pass``/``hold`` correction arrives (no retraining from
scratch) and both plain numbers that serialise to JSON:

- **Sender importance**: for each sender, how many of their messages the person passed and held.
  It shifts the log-odds of "worth interrupting" by ``log((passed + 1) / (held + 1))``, the
  log-odds of the posterior mean of a Beta(1, 1) prior: 0 for a stranger, +1.1 after two passes,
  -1.6 after four holds.
- **Preferences**: a logistic regression over the message's sentence embedding (plus a bias)
  whose output is added to the same log-odds. Each correction takes gradient steps (:data:`STEPS`) of the
  log-loss of the *whole* decision on that message (so it corrects what the components got wrong,
  and stops moving once they agree), with a small L2 pull towards zero. Messages that read like
  one the person corrected move the same way: "hold newsletters about Shakespeare sales" is learnt
  from the messages, not from a rule.

Feedback never touches urgency: the learned shifts act on relevance only, so a person's corrections
cannot teach the assistant to hold an emergency.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

__all__ = ["LEARNING_RATE", "PersonModel", "sender_key"]

#: Step size of the preference update (embeddings are unit vectors, so one step moves the logit of
#: the corrected message by at most this times the error). Rate 1 with 3 steps was set first and then
#: compared on the dev tasks (`scripts/choose_focus_costs.py --feedback`, rates 0.1-3, 1 or 3 steps):
#: the best later-half balanced accuracy after corrections, 0.882 (0.846 without). Compared again
#: when the relevance head began weighing the channel (2026-12-04): 3 steps at rate 1 then gave
#: 0.852 (0.858 without), 1 step at rates 0.1-1 0.861, a difference of about one message. On the 14
#: dev tasks of 2026-12-05: 0.847 (0.856 without), 1 step at rate 0.1 0.863. 3 steps stay: with 1,
#: three corrections no longer teach that a sender's messages must get through
#: (tests/apps/test_focus.py), which is what a person correcting the assistant expects.
LEARNING_RATE = 1.0
#: Gradient steps per correction.
STEPS = 3
#: L2 pull of the preference weights towards 0 per correction.
DECAY = 0.01


#: A sender's ``<local@domain>``, where mail to it goes (the last, outside quotes and comments).
_BRACKETED = re.compile(r"<([^<>\s@]+@[^<>\s@]+)>")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_COMMENT = re.compile(r"\([^()]*\)")


def sender_key(sender: str) -> str:
    """The address of ``sender`` lower-cased (``'Ana <Ana@X.org>'`` -> ``'ana@x.org'``), else the whole
    of it (``'Jess (coworker)'``: not the comment alone, which would count Tom (coworker) with Jess).

    The address in angle brackets is the one mail goes to: ``boss@corp.example <evil@phish.example>``
    is evil@phish.example, not the unquoted name (``parseaddr`` gave the name, so an allowlisted
    address could be worn as a display name)."""
    # Quoted names and (comments) may hold anything, brackets included: the address is outside them.
    bare = _QUOTED.sub(" ", sender or "")
    while _COMMENT.search(bare):  # innermost first: "(a (b) <x@y>)" is one comment
        bare = _COMMENT.sub(" ", bare)
    bracketed = _BRACKETED.findall(bare)
    _, address = (None, bracketed[-1]) if bracketed else parseaddr(sender or "")
    key = address if "@" in address else (sender or "")
    return " ".join(key.lower().split())


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass
class PersonModel:
    """One person's learned sender importance and preferences.

    Attributes:
        dim: Size of the sentence embeddings the preferences read.
        senders: ``sender_key -> [passed, held]``.
        weights: Preference weights, one per embedding dimension.
        bias: Preference bias.
        updates: Corrections learnt so far.
        steps: ``message id -> [step, bias step, decayed]``: how far each answered message moved the
            preferences along its embedding and their bias, and :attr:`decayed` just after, for
            :meth:`retract` to take back when the person changes that answer.
        decayed: The weight decay applied so far, in decay steps (each correction adds :data:`STEPS`;
            retracting the last correction takes its steps back).
    """

    dim: int
    senders: dict[str, list[int]] = field(default_factory=dict)
    weights: list[float] = field(default_factory=list)
    bias: float = 0.0
    updates: int = 0
    steps: dict[str, list[float | None]] = field(default_factory=dict)
    decayed: int = 0

    def __post_init__(self) -> None:
        if not self.weights:
            self.weights = [0.0] * self.dim
        if len(self.weights) != self.dim:
            raise ValueError(f"weights has {len(self.weights)} values; expected dim={self.dim}")

    def sender_shift(self, sender: str) -> tuple[float, int, int]:
        """``(log-odds shift, passed, held)`` for ``sender``."""
        passed, held = self.senders.get(sender_key(sender), [0, 0])
        return math.log((passed + 1) / (held + 1)), passed, held

    def preference_shift(self, embedding: Sequence[float]) -> float:
        return self.bias + sum(w * e for w, e in zip(self.weights, embedding, strict=True))

    def update(self, sender: str, embedding: Sequence[float], relevance_logit: float, passed: bool,
               message_id: str | None = None) -> None:  # fmt: skip
        """Learn one correction: the person wanted this message ``passed`` (True) or held (False).

        Args:
            sender: Its sender.
            embedding: Its sentence embedding (unit vector).
            relevance_logit: The log-odds of relevance the components gave it (before any shift).
            passed: The person's answer.
            message_id: The message's id, under which the step is kept for :meth:`retract`.
        """
        if len(embedding) != self.dim:
            raise ValueError(f"embedding has {len(embedding)} values; expected {self.dim}")
        target = 1.0 if passed else 0.0
        sender_shift = self.sender_shift(sender)[0]
        emb = [float(e) for e in embedding]
        keep = 1 - LEARNING_RATE * DECAY
        step = bias_step = 0.0  # along the embedding as the weights hold it after the steps (decay included)
        for _ in range(STEPS):
            logit = relevance_logit + sender_shift + self.preference_shift(emb)
            error = target - _sigmoid(logit)
            self.weights = [w * keep + LEARNING_RATE * error * e for w, e in zip(self.weights, emb, strict=True)]
            self.bias += LEARNING_RATE * error * 0.1
            step = step * keep + LEARNING_RATE * error
            bias_step += LEARNING_RATE * error * 0.1
        self.decayed += STEPS
        key = sender_key(sender)
        if key:
            counts = self.senders.setdefault(key, [0, 0])
            counts[0 if passed else 1] += 1
        if message_id is not None:
            self.steps[message_id] = [step, bias_step, self.decayed]
        self.updates += 1

    def retract(self, message_id: str, sender: str, embedding: Sequence[float], passed: bool) -> None:
        """Take back the earlier answer ``passed`` to message ``message_id`` (the person changed it): its
        sender's count, its step along the embedding as later corrections decayed it, and its bias step.
        When it is the last correction learnt (an answer changed at once, or changed back and forth),
        the decay it applied to every other weight is undone too, so the weights are what they were
        before it: flipping one answer twenty times had worn another sender's learnt preference from
        +5.2 to +3.3 log-odds. Only the count had been taken back at first, so each changed answer left
        the earlier one's push: a message answered pass, then hold, taught pass (+1.9 log-odds)."""
        counts = self.senders.get(sender_key(sender))
        if counts is not None:
            counts[0 if passed else 1] = max(0, counts[0 if passed else 1] - 1)
        kept = self.steps.pop(message_id, None)
        if kept is None:  # answered before steps were kept: the count alone
            return
        step, bias_step, decayed_at = kept
        keep = 1 - LEARNING_RATE * DECAY
        if decayed_at is not None:
            step *= keep ** (self.decayed - decayed_at)
        self.weights = [w - float(step) * float(e) for w, e in zip(self.weights, embedding, strict=True)]
        self.bias -= float(bias_step)
        if decayed_at is not None and decayed_at == self.decayed:  # the last correction: its decay undone
            self.weights = [w / keep**STEPS for w in self.weights]
            self.decayed -= STEPS
        self.updates = max(0, self.updates - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "senders": self.senders, "weights": [round(w, 6) for w in self.weights],
                "bias": self.bias, "updates": self.updates, "steps": self.steps, "decayed": self.decayed}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PersonModel:
        return cls(dim=int(data["dim"]), senders={k: [int(a), int(b)] for k, (a, b) in data["senders"].items()},
                   weights=[float(w) for w in data["weights"]], bias=float(data["bias"]),
                   updates=int(data["updates"]), steps={str(k): _kept_step(v) for k, v in
                                                        (data.get("steps") or {}).items()},
                   decayed=int(data.get("decayed") or 0))  # fmt: skip


def _kept_step(value: Any) -> list[float | None]:
    """A stored step as ``[step, bias step, decayed after it]``; one stored before 2026-12-08 was the
    step's sum of errors alone, whose bias step was a tenth of it and whose decay was not kept."""
    if isinstance(value, int | float):
        return [float(value), float(value) * 0.1, None]
    step, bias_step, decayed_at = value
    return [float(step), float(bias_step), None if decayed_at is None else int(decayed_at)]
