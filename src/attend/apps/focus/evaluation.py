"""How well the focus assistant triages, beside baselines scored in the same run.

Two test beds:

- **The scenario suite** (``scenarios/``, written by the project, labelled by the rule in its
  README, split by task). Everything a method fits or chooses (the assistant's relevance head,
  the baselines' thresholds) comes from the *dev* tasks; the test tasks are only scored.
- **A real text stream** (:func:`attend.apps.focus.corpora.news_headlines`: dated news headlines
  whose outlets filed them under a section). Each section in turn is the focus task
  (``"Following the news on <section>"``) and a headline is relevant iff it is in that section.
  No method is fitted on it; it checks that the defaults hold on text nobody wrote for them.
  It also carries the learning curve: a simulated person corrects wrong decisions through the
  feedback path on the earlier half of the stream; the later half is scored after each number of
  corrections.

Baselines (each also lets the session's allowlist through, as a user would configure it):
pass-all, hold-all, sender allowlist alone, keyword rules (a task word, or one of a fixed list
of alarm words, in the message), TF-IDF cosine of task and message over a threshold, BM25 of
the task against the message over a threshold, the message's channel (the share of dev messages
of that channel that pass) over a threshold (thresholds: best balanced accuracy on dev).

Metrics: urgent messages held (the goal is 0), pass recall, hold recall, balanced accuracy,
interruptions per 100 messages, and for the assistant the calibration of its score
(Brier score; expected calibration error over 10 bins).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attend.apps.focus.assistant import (
    SCENARIOS_DIR,
    URGENCY_TRAIN,
    FeatureStats,
    FocusAssistant,
    Session,
    allow_match,
    channel_name,
    read_jsonl,
)
from attend.apps.focus.person import PersonModel
from attend.data.messages import Message

__all__ = [
    "ALARM_WORDS",
    "evaluate_stream",
    "evaluate_suite",
    "format_report",
    "format_stream",
    "load_suite",
    "metrics",
]

#: The keyword baseline's alarm words (a baseline's rule, not used by the assistant).
ALARM_WORDS = ("urgent", "asap", "emergency", "immediately", "now", "help", "hospital", "accident", "deadline",
               "today", "important", "critical", "outage", "down")  # fmt: skip


@dataclass(frozen=True)
class SuiteTask:
    id: str
    task: str
    allow: tuple[str, ...]
    split: str


@dataclass(frozen=True)
class Labelled:
    task_id: str
    message: Message
    passed: bool
    urgent: bool


def load_suite(split: str | None = None) -> tuple[dict[str, SuiteTask], list[Labelled]]:
    """The suite's tasks and labelled messages (of one split, or all)."""
    tasks = {t["task_id"]: SuiteTask(t["task_id"], t["task"], tuple(t.get("allow") or ()), t["split"])
             for t in read_jsonl(SCENARIOS_DIR / "tasks.jsonl") if split is None or t["split"] == split}  # fmt: skip
    rows = [
        Labelled(r["task_id"], Message(id=str(r["id"]), text=r["text"], sender=r.get("sender") or "",
                 subject=r.get("subject") or "", time=r.get("time"), channel=r.get("channel") or ""),
                 bool(r["pass"]), bool(r["urgent"]))
        for r in read_jsonl(SCENARIOS_DIR / "messages.jsonl") if r["task_id"] in tasks
    ]  # fmt: skip
    return tasks, rows


def metrics(passed: Sequence[bool], truth: Sequence[bool], urgent: Sequence[bool] | None = None,
            scores: Sequence[float] | None = None) -> dict[str, Any]:  # fmt: skip
    """Triage metrics of decisions ``passed`` against labels ``truth`` (True = pass)."""
    from sklearn.metrics import balanced_accuracy_score, brier_score_loss

    p, t = np.asarray(passed, dtype=bool), np.asarray(truth, dtype=bool)
    out: dict[str, Any] = {
        "messages": len(t),
        "pass_recall": float((p & t).sum() / max(1, t.sum())),
        "hold_recall": float((~p & ~t).sum() / max(1, (~t).sum())),
        "balanced_accuracy": float(balanced_accuracy_score(t, p))
        if len(set(t.tolist())) > 1
        else float((p == t).mean()),
        "interruptions_per_100": float(100 * p.mean()) if len(p) else 0.0,
    }
    if urgent is not None:
        u = np.asarray(urgent, dtype=bool)
        out["urgent"] = int(u.sum())
        out["urgent_held"] = int((u & ~p).sum())
    if scores is not None:
        s = np.clip(np.asarray(scores, dtype=float), 0, 1)
        bins = np.minimum((s * 10).astype(int), 9)
        ece = sum(
            abs(s[bins == b].mean() - t[bins == b].mean()) * (bins == b).sum() for b in range(10) if (bins == b).any()
        )
        out["brier"] = float(brier_score_loss(t, s))
        out["ece"] = float(ece / len(s))
    return out


def _content_words(text: str) -> set[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return {w for w in re.findall(r"[^\W_]+", text.lower()) if len(w) > 2 and w not in ENGLISH_STOP_WORDS}


def _text(m: Message) -> str:
    return f"{m.subject}\n{m.text}" if m.subject else m.text


class _Thresholded:
    """A similarity baseline: pass when the allowlist matches or the score reaches a threshold chosen on dev."""

    def __init__(self, name: str, score: Callable[[dict[str, SuiteTask], list[Labelled]], np.ndarray]) -> None:
        self.name = name
        self.score = score
        self.threshold = 0.0

    def fit(self, tasks: dict[str, SuiteTask], rows: list[Labelled]) -> _Thresholded:
        from sklearn.metrics import balanced_accuracy_score

        scores, truth = self.score(tasks, rows), [r.passed for r in rows]
        allowed = np.array([allow_match(tasks[r.task_id].allow, r.message) is not None for r in rows])
        best = (-1.0, 0.0)
        for threshold in np.unique(scores):
            value = balanced_accuracy_score(truth, allowed | (scores >= threshold))
            best = max(best, (value, float(threshold)))
        self.threshold = best[1]
        return self

    def decide(self, tasks: dict[str, SuiteTask], rows: list[Labelled]) -> list[bool]:
        allowed = np.array([allow_match(tasks[r.task_id].allow, r.message) is not None for r in rows])
        return (allowed | (self.score(tasks, rows) >= self.threshold)).tolist()


def _tfidf_scores(fitted: Any) -> Callable[[dict[str, SuiteTask], list[Labelled]], np.ndarray]:
    def score(tasks: dict[str, SuiteTask], rows: list[Labelled]) -> np.ndarray:
        t = fitted.transform([tasks[r.task_id].task for r in rows])
        m = fitted.transform([_text(r.message) for r in rows])
        return np.asarray(t.multiply(m).sum(axis=1)).ravel()  # rows are L2-normalised: the cosine

    return score


def _channel_rates(dev: list[Labelled]) -> Callable[[dict[str, SuiteTask], list[Labelled]], np.ndarray]:
    """The channel baseline's score: the share of the dev messages of the message's channel that pass
    (the channel as the assistant's relevance head reads it; any other channel, or none, is one group)."""
    from collections import defaultdict

    counts: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for r in dev:
        tally = counts[channel_name(r.message.channel)]
        tally[0] += r.passed
        tally[1] += 1
    overall = sum(r.passed for r in dev) / max(1, len(dev))

    def score(tasks: dict[str, SuiteTask], rows: list[Labelled]) -> np.ndarray:
        rates = []
        for r in rows:
            passed, total = counts.get(channel_name(r.message.channel), (0, 0))
            rates.append(passed / total if total else overall)
        return np.asarray(rates)

    return score


def _bm25_scores(tasks: dict[str, SuiteTask], rows: list[Labelled]) -> np.ndarray:
    """BM25 of each task's description against its own messages (Okapi, rank_bm25's defaults)."""
    from rank_bm25 import BM25Okapi

    def tokens(text: str) -> list[str]:
        return re.findall(r"[^\W_]+", text.lower())

    out = np.zeros(len(rows))
    for task_id, task in tasks.items():
        index = [i for i, r in enumerate(rows) if r.task_id == task_id]
        if not index:
            continue
        bm25 = BM25Okapi([tokens(_text(rows[i].message)) or ["_"] for i in index])
        out[index] = bm25.get_scores(tokens(task.task))
    return out


def _baselines(dev_tasks: dict[str, SuiteTask], dev: list[Labelled]) -> dict[str, Callable[..., list[bool]]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english")
    vectorizer.fit([t.task for t in dev_tasks.values()] + [_text(r.message) for r in dev])
    tfidf = _Thresholded("tfidf", _tfidf_scores(vectorizer)).fit(dev_tasks, dev)
    bm25 = _Thresholded("bm25", _bm25_scores).fit(dev_tasks, dev)
    channel = _Thresholded("channel", _channel_rates(dev)).fit(dev_tasks, dev)

    def allowlist(tasks: dict[str, SuiteTask], rows: list[Labelled]) -> list[bool]:
        return [allow_match(tasks[r.task_id].allow, r.message) is not None for r in rows]

    def keywords(tasks: dict[str, SuiteTask], rows: list[Labelled]) -> list[bool]:
        out = []
        for r, allowed in zip(rows, allowlist(tasks, rows), strict=True):
            words = _content_words(_text(r.message))
            out.append(allowed or bool(words & _content_words(tasks[r.task_id].task)) or bool(words & set(ALARM_WORDS)))
        return out

    return {
        "pass_all": lambda tasks, rows: [True] * len(rows),
        "hold_all": lambda tasks, rows: [False] * len(rows),
        "allowlist": allowlist,
        "keywords": keywords,
        "tfidf": tfidf.decide,
        "bm25": bm25.decide,
        "channel": channel.decide,
    }


def evaluate_suite(split: str = "test", *, assistant: FocusAssistant | None = None) -> dict[str, Any]:
    """Score the assistant and every baseline on the suite's ``split`` tasks (fitting on dev only)."""
    if split not in ("dev", "test"):
        raise ValueError(f"split={split!r}; choose dev or test")
    assistant = assistant if assistant is not None else FocusAssistant()
    dev_tasks, dev = load_suite("dev")
    tasks, rows = load_suite(split)
    truth, urgent = [r.passed for r in rows], [r.urgent for r in rows]
    decisions = []
    for task_id, task in tasks.items():
        mine = [r for r in rows if r.task_id == task_id]
        decisions += assistant.triage(Session(task.task, task.allow), [r.message for r in mine])
    by_id = {d.id: d for d in decisions}
    ordered = [by_id[r.message.id] for r in rows]
    report: dict[str, Any] = {
        "split": split,
        "tasks": len(tasks),
        "messages": len(rows),
        # the dev tasks are what the heads and the costs were fitted on: their figures are not held out
        "held_out": split == "test",
        "assistant": metrics([d.decision == "pass" for d in ordered], truth, urgent, [d.score for d in ordered]),
        "baselines": {
            name: metrics(decide(tasks, rows), truth, urgent) for name, decide in _baselines(dev_tasks, dev).items()
        },
    }
    report["per_task"] = {
        task_id: metrics(
            [by_id[r.message.id].decision == "pass" for r in rows if r.task_id == task_id],
            [r.passed for r in rows if r.task_id == task_id],
            [r.urgent for r in rows if r.task_id == task_id],
        )
        for task_id in tasks
    }
    report["feedback"] = feedback_curve(assistant, tasks, rows)
    report["urgency_classifier"] = _urgency_report([d.components["urgency"] for d in ordered], urgent,
                                                   assistant.costs)  # fmt: skip
    best = max(report["baselines"].items(), key=lambda kv: kv[1]["balanced_accuracy"])
    report["best_baseline"] = {"name": best[0], "balanced_accuracy": best[1]["balanced_accuracy"]}
    report["margin_over_best_baseline"] = report["assistant"]["balanced_accuracy"] - best[1]["balanced_accuracy"]
    return report


def feedback_curve(assistant: FocusAssistant, tasks: dict[str, SuiteTask], rows: list[Labelled]) -> dict[str, Any]:
    """Each task's messages in time order: a simulated person corrects every wrong decision in the
    first half (one message at a time, through :meth:`PersonModel.update`); the second half is scored
    with the corrections learnt, beside the same half decided without any."""
    truth, with_feedback, without, corrections = [], [], [], 0
    for task_id, task in tasks.items():
        mine = [r for r in rows if r.task_id == task_id]
        readings = assistant.read([r.message for r in mine])
        session, half = Session(task.task, task.allow), len(mine) // 2
        person, pool = PersonModel(dim=assistant.reader.dim), FeatureStats()
        for row, reading in zip(mine[:half], readings[:half], strict=True):
            d = assistant.triage(session, [row.message], person=person, readings=[reading], pool=pool)[0]
            if (d.decision == "pass") != row.passed:
                person.update(row.message.sender, reading.embedding.tolist(), d.relevance_logit, row.passed)
        corrections += person.updates
        later = [r.message for r in mine[half:]]
        taught = assistant.triage(session, later, person=person, readings=readings[half:],
                                  pool=FeatureStats.from_dict(pool.to_dict()))  # fmt: skip
        plain = assistant.triage(session, later, readings=readings[half:], pool=FeatureStats.from_dict(pool.to_dict()))
        truth += [r.passed for r in mine[half:]]
        with_feedback += [d.decision == "pass" for d in taught]
        without += [d.decision == "pass" for d in plain]
    return {"corrections": corrections, "without": metrics(without, truth),
            "with_feedback": metrics(with_feedback, truth)}  # fmt: skip


def _urgency_report(probabilities: Sequence[float], urgent: Sequence[bool], costs: Any) -> dict[str, Any]:
    """The urgency classifier alone on the split's messages (held out on the test tasks: it trained on the
    urgency data set and the dev tasks only)."""
    from sklearn.metrics import roc_auc_score

    p, u = np.asarray(probabilities), np.asarray(urgent, dtype=bool)
    alone = costs.interrupt / (costs.interrupt + costs.urgent)  # urgency at which it passes on its own
    return {
        "training_examples": sum(1 for _ in open(URGENCY_TRAIN, encoding="utf-8")) + len(load_suite("dev")[1]),
        "roc_auc": float(roc_auc_score(u, p)) if 0 < u.sum() < len(u) else None,
        "threshold_alone": round(alone, 4),
        "recall_alone": float((p[u] > alone).mean()) if u.any() else None,
        "false_alarm_rate_alone": float((p[~u] > alone).mean()) if (~u).any() else None,
    }


def format_report(report: dict[str, Any]) -> str:
    """The suite report as a table."""
    lines = [
        f"scenario suite, {report['split']} tasks: {report['tasks']} tasks, {report['messages']} messages"
        + ("" if report.get("held_out", True) else " (the tasks the assistant's heads and costs were fitted on: "
           "not held-out figures; see --split test, and the README's leave-one-task-out figure)"),
        f"{'method':12} {'bal.acc':>8} {'pass rec':>8} {'hold rec':>8} {'urg.held':>8} {'int/100':>8}",
    ]
    rows = [("assistant", report["assistant"]), *report["baselines"].items()]
    for name, m in rows:
        lines.append(f"{name:12} {m['balanced_accuracy']:8.3f} {m['pass_recall']:8.3f} {m['hold_recall']:8.3f} "
                     f"{m['urgent_held']:>5}/{m['urgent']:<2} {m['interruptions_per_100']:8.1f}")  # fmt: skip
    a = report["assistant"]
    lines.append(f"assistant score calibration: Brier {a['brier']:.3f}, ECE {a['ece']:.3f}")
    u = report["urgency_classifier"]
    lines.append(f"urgency classifier (trained on {u['training_examples']} project-written messages, the dev tasks' "
                 f"among them): ROC AUC "
                 f"{u['roc_auc']:.3f}; alone (p > {u['threshold_alone']}) recall {u['recall_alone']:.3f}, "
                 f"false alarms {u['false_alarm_rate_alone']:.3f}")  # fmt: skip
    b = report["best_baseline"]
    f = report["feedback"]
    lines.append(f"feedback: correcting the {f['corrections']} wrong decisions in the tasks' first halves takes the "
                 f"second half from {f['without']['balanced_accuracy']:.3f} to "
                 f"{f['with_feedback']['balanced_accuracy']:.3f} balanced accuracy")  # fmt: skip
    lines.append(f"best baseline: {b['name']} ({b['balanced_accuracy']:.3f}); assistant margin "
                 f"{report['margin_over_best_baseline'] * 100:+.1f} points")  # fmt: skip
    return "\n".join(lines)


def format_stream(report: dict[str, Any]) -> str:
    """The stream report as a table, with the learning curve."""
    ks = report["feedback_budgets"]
    lines = [f"news stream: {report['headlines']} dated headlines; each section in turn is the task; scored on the "
             f"later half ({report['scored']} headlines), corrections drawn from the earlier half",
             f"{'section':14} {'relevant':>8} " + " ".join(f"{'k=' + str(k):>7}" for k in ks)
             + f" {'keywords':>8} {'tfidf':>6} {'bm25':>6}   (balanced accuracy; k = corrections seen)"]  # fmt: skip
    for topic, t in report["topics"].items():
        b = t["baselines"]
        lines.append(f"{topic:14} {t['relevant']:8d} " + " ".join(f"{t['learning_curve'][str(k)]:7.3f}" for k in ks)
                     + f" {b['keywords']['balanced_accuracy']:8.3f} {b['tfidf']['balanced_accuracy']:6.3f} "
                     f"{b['bm25']['balanced_accuracy']:6.3f}")  # fmt: skip
    mean = report["mean"]
    lines.append(f"{'mean':14} {'':8} " + " ".join(f"{mean['learning_curve'][str(k)]:7.3f}" for k in ks)
                 + f" {mean['keywords']:8.3f} {mean['tfidf']:6.3f} {mean['bm25']:6.3f}")  # fmt: skip
    return "\n".join(lines)


def stream_task(topic: str) -> str:
    """The focus task of the news stream for one section (a fixed template, not tuned)."""
    names = {"scitech": "science and technology", "defense": "defence and the military"}
    return f"Following the news on {names.get(topic, topic)}"


def evaluate_stream(*, topics: Sequence[str] | None = None, min_items: int = 30,
                    budgets: Sequence[int] = (0, 25, 50, 100, 200, 400), assistant: FocusAssistant | None = None,
                    cache_dir: Any = None) -> dict[str, Any]:  # fmt: skip
    """The news stream: per section, the assistant with no feedback and after ``k`` corrections, beside
    the similarity baselines with their dev-suite thresholds.

    The stream is cut in time: the earlier half is where a simulated person reads the decisions and
    corrects each wrong one, in order, until ``k`` corrections are made; the later half is scored
    (the same headlines for every ``k`` and every method), so the curve shows what feedback taught,
    not what it memorised.
    """
    from collections import Counter

    from attend.apps.focus.corpora import news_headlines

    assistant = assistant if assistant is not None else FocusAssistant()
    headlines = news_headlines(cache_dir=cache_dir)
    counts = Counter(h.topic for h in headlines)
    chosen = [t for t in (topics or sorted(counts)) if counts[t] >= min_items]
    messages = [Message(id=h.id, text=h.text, time=h.date) for h in headlines]
    readings = assistant.read(messages)
    half = len(messages) // 2
    dev_tasks, dev = load_suite("dev")
    baselines = _baselines(dev_tasks, dev)
    out: dict[str, Any] = {"headlines": len(headlines), "scored": len(messages) - half,
                           "feedback_budgets": list(budgets), "topics": {}}  # fmt: skip
    for topic in chosen:
        truth = [h.topic == topic for h in headlines]
        session = Session(stream_task(topic))
        curve: dict[str, float] = {}
        person = PersonModel(dim=assistant.reader.dim)
        seen = FeatureStats()  # the traffic of the earlier half: what the scored half is standardised against
        assistant.triage(session, messages[:half], readings=readings[:half], pool=seen)
        running = FeatureStats()  # the traffic as the person reads on
        position = 0
        for k in sorted(budgets):
            while person.updates < k and position < half:  # read on through the earlier half, correcting
                decision = assistant.triage(session, [messages[position]], person=person,
                                            readings=[readings[position]], pool=running)[0]  # fmt: skip
                if (decision.decision == "pass") != truth[position]:
                    person.update("", readings[position].embedding.tolist(), decision.relevance_logit, truth[position])
                position += 1
            scored = assistant.triage(session, messages[half:], person=person, readings=readings[half:],
                                      pool=FeatureStats.from_dict(seen.to_dict()))  # fmt: skip
            curve[str(k)] = metrics([d.decision == "pass" for d in scored], truth[half:])["balanced_accuracy"]
        tasks = {"stream": _suite_task(session)}
        rows = [Labelled("stream", m, t, False) for m, t in zip(messages[half:], truth[half:], strict=True)]
        out["topics"][topic] = {
            "task": session.task,
            "relevant": int(sum(truth[half:])),
            "learning_curve": curve,
            "corrections_available": person.updates,
            "baselines": {
                name: metrics(baselines[name](tasks, rows), truth[half:]) for name in ("keywords", "tfidf", "bm25")
            },
        }
    topics_out = out["topics"].values()
    out["mean"] = {
        "learning_curve": {str(k): float(np.mean([t["learning_curve"][str(k)] for t in topics_out])) for k in budgets},
        **{name: float(np.mean([t["baselines"][name]["balanced_accuracy"] for t in topics_out]))
           for name in ("keywords", "tfidf", "bm25")},
    }  # fmt: skip
    return out


def _suite_task(session: Session) -> SuiteTask:
    return SuiteTask("stream", session.task, session.allow, "stream")
