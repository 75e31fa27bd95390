"""Choose the focus assistant's default costs on the scenario suite's dev tasks (never the test tasks).

Both heads are fitted with the dev tasks' messages, so their dev predictions are in-sample; to
choose the costs on honest numbers this script refits them leave-one-task-out: each dev task is
predicted by heads fitted without it (the urgency head keeps the urgency data set). Over a grid of
costs (urgent, relevant; interrupt = 1) it applies the rule to those predictions and prints the
best dev balanced accuracy of each, with the urgent dev messages each holds.

The urgent cost is chosen for safety first, by two checks: the lowest of the grid at which no
urgent dev message is held (leave-one-task-out), and at which urgency alone (passing a message
from ``1 / (1 + urgent cost)``) holds at most :data:`MAX_SET_HELD` of the urgency data set's 414
urgent messages, with the urgency head cross-validated on that set (5 folds, seeded): the dev
tasks have only 50 urgent messages, too few to tell a safe threshold from a lucky one. The
relevant cost is the one with the best dev balanced accuracy at that urgent cost, holding no urgent
dev message. ``Costs``' defaults are set from it: on 2026-12-05, urgent 4 (3 held an urgent dev
message; 4 holds 8 of the urgency set's 414 urgent messages), relevant 2, dev balanced accuracy 0.852.

    python scripts/choose_focus_costs.py [--errors]
    python scripts/choose_focus_costs.py --feedback   # the preference update's rate and steps
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from attend.apps.focus.assistant import (
    FocusAssistant,
    Heads,
    Session,
    relevance_examples,
    urgency_examples,
)
from attend.apps.focus.evaluation import load_suite

URGENT = (2, 3, 4, 5, 10, 20)
RELEVANT = (0.5, 0.75, 1, 1.5, 2, 3)
#: The most of the urgency data set's urgent messages that urgency alone may hold at the chosen cost
#: (cross-validated): one in fifty.
MAX_SET_HELD = 0.02


def urgency_arrays(assistant: FocusAssistant) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The urgency head's examples (features, labels, groups) as arrays, read once per run."""
    xu, yu, gu = urgency_examples(assistant.reader)
    return np.asarray(xu), np.asarray(yu), np.asarray(gu)


def held_out_assistants(assistant: FocusAssistant, urgency: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                        ) -> dict[str, FocusAssistant]:  # fmt: skip
    """Per dev task, an assistant whose two heads were fitted without that task's messages."""
    xr, yr, gr, prior = relevance_examples(assistant.reader)
    xr, yr, gr = np.asarray(xr), np.asarray(yr), np.asarray(gr)
    xu, yu, gu = urgency if urgency is not None else urgency_arrays(assistant)
    out = {}
    for task_id in load_suite("dev")[0]:
        heads = Heads.fit_examples((xu[gu != task_id], yu[gu != task_id]), (xr[gr != task_id], yr[gr != task_id]),
                                   prior)  # fmt: skip
        out[task_id] = FocusAssistant(assistant.reader, heads)
    return out


def feedback_rates(assistant: FocusAssistant) -> None:
    """The preference update's step size and steps per correction, compared on the dev tasks: the
    later half of each task scored after correcting the wrong decisions of its earlier half."""
    from attend.apps.focus import person
    from attend.apps.focus.evaluation import feedback_curve

    tasks, rows = load_suite("dev")
    held_out = held_out_assistants(assistant)
    for rate, steps in itertools.product((0.1, 0.3, 1.0, 3.0), (1, 3)):
        person.LEARNING_RATE, person.STEPS = rate, steps
        truth, taught, plain = [], [], []
        for task_id, task in tasks.items():
            mine = [r for r in rows if r.task_id == task_id]
            curve = feedback_curve(held_out[task_id], {task_id: task}, mine)
            half = len(mine) // 2
            truth += [r.passed for r in mine[half:]]
            taught.append(curve["with_feedback"]["balanced_accuracy"] * (len(mine) - half))
            plain.append(curve["without"]["balanced_accuracy"] * (len(mine) - half))
        print(f"rate {rate:g}, {steps} step(s): later halves' balanced accuracy (message-weighted mean over tasks) "
              f"{sum(taught) / len(truth):.3f} with corrections, {sum(plain) / len(truth):.3f} without")  # fmt: skip


def urgency_set_held(urgency: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[int, tuple[int, int]]:
    """Per urgent cost, the urgency data set's urgent messages that urgency alone would hold, with the
    head cross-validated on that set (5 seeded folds; the suite's messages stay in every fold's fit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from attend.apps.focus.assistant import URGENCY_C

    x, y, g = urgency
    own = np.flatnonzero(g == "urgency")
    suite = np.flatnonzero(g != "urgency")
    p = np.zeros(len(own))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(own, y[own]):
        fit = np.concatenate([own[train], suite])
        head = LogisticRegression(C=URGENCY_C, max_iter=5000).fit(x[fit], y[fit])
        p[test] = head.predict_proba(x[own[test]])[:, 1]
    urgent = y[own].astype(bool)
    print(f"urgency head, 5-fold on the urgency data set ({len(own)} messages): ROC AUC {roc_auc_score(urgent, p):.3f}")
    return {cu: (int((urgent & (p * cu <= 1 - p)).sum()), int(urgent.sum())) for cu in URGENT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--feedback", action="store_true", help="compare feedback learning rates on dev instead")
    parser.add_argument("--errors", action="store_true", help="also list the dev messages the chosen costs get wrong")
    options = parser.parse_args()
    assistant = FocusAssistant()
    if options.feedback:
        feedback_rates(assistant)
        return
    tasks, rows = load_suite("dev")
    urgency_data = urgency_arrays(assistant)
    held_out_by_task = held_out_assistants(assistant, urgency_data)
    urgency, relevance, allowed, truth, urgent, texts = [], [], [], [], [], []
    for task_id, task in tasks.items():
        held_out = held_out_by_task[task_id]
        mine = [r for r in rows if r.task_id == task_id]
        for row, decision in zip(mine, held_out.triage(Session(task.task, task.allow), [r.message for r in mine]),
                                 strict=True):  # fmt: skip
            relevance.append(decision.components["relevance"])
            urgency.append(decision.components["urgency"])
            allowed.append(decision.components["allowlist"] is not None)
            truth.append(row.passed)
            urgent.append(row.urgent)
            texts.append(row.message.text.replace("\n", " "))
    u, r, a = np.asarray(urgency), np.asarray(relevance), np.asarray(allowed)
    t, urg_true = np.asarray(truth), np.asarray(urgent)
    print(f"lowest urgency of an urgent dev message: {u[urg_true].min():.3f}")
    results = []
    for cu, cr in itertools.product(URGENT, RELEVANT):
        hold = u * cu + (1 - u) * r * cr
        interrupt = (1 - u) * (1 - r)
        passed = a | (hold > interrupt)
        results.append((int((urg_true & ~passed).sum()), -round(balanced_accuracy_score(t, passed), 4), -cu, cr))
    results.sort()
    print("urgent held, balanced accuracy, costs (dev, both heads leave-one-task-out)")
    for held, acc, cu, cr in results[:10]:
        print(f"{held:3d}  {-acc:.3f}  urgent={-cu:g}  relevant={cr:g}")
    print("urgent cost: urgency-set urgent messages held on urgency alone (cross-validated); best dev "
          "balanced accuracy holding no urgent dev message")  # fmt: skip
    set_held = urgency_set_held(urgency_data)
    for cost, (held, total) in set_held.items():
        ok = [-res[1] for res in results if res[2] == -cost and res[0] == 0]
        print(f"  {cost:3g}: {held}/{total} held; dev {max(ok) if ok else float('nan'):.3f}")
    # The lowest urgent cost that holds no urgent dev message and at most MAX_SET_HELD of the urgency
    # set's; the relevant cost is the best on dev at it.
    safe = [res for res in results if res[0] == 0 and set_held[-res[2]][0] <= MAX_SET_HELD * set_held[-res[2]][1]]
    if not safe:
        raise SystemExit(f"every urgent cost in {URGENT} holds too many urgent messages; extend the grid")
    urgent_cost = min(-res[2] for res in safe)
    held, acc, cu, cr = min((res for res in safe if res[2] == -urgent_cost), key=lambda res: res[1])
    if options.errors:
        hold = u * -cu + (1 - u) * r * cr
        passed = a | (hold > (1 - u) * (1 - r))
        for i in np.flatnonzero(passed != t):
            print(f"{'FALSE PASS' if passed[i] else 'FALSE HOLD'} u={u[i]:.2f} r={r[i]:.2f} {texts[i][:110]!r}")
    print(f"chosen: urgent={-cu:g}, relevant={cr:g}, interrupt=1 (dev balanced accuracy {-acc:.3f}, "
          f"{held} urgent held)")  # fmt: skip


if __name__ == "__main__":
    main()
