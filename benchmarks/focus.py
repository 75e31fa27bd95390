"""Focus assistant: latency of triaging one message, beside the encoder pass it cannot avoid.

Goal (issue "focus assistant"): triage of one message <= 50 ms on 2 cores. Contenders, timed
side by side in interleaved rounds through ``benchmarks/harness.py``, one message per call, the
messages of the scenario suite's test tasks in turn (the task's reading cached, as in a session):

- ``triage``: the whole decision (:meth:`FocusAssistant.triage`): MiniLM pass over the message,
  task-to-message cross-attention, urgency, the cost rule, reasons and highlights;
- ``encoder``: the reference, MiniLM's forward pass over the same message alone (tokenise, pad,
  encode): the floor any attention-based triage pays.

Prints each one's median and 90th-percentile time per message, the paired ratio triage/encoder
(what the decision adds to the pass it rests on), and whether the median meets 50 ms.

    python benchmarks/focus.py --threads 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

GOAL_MS = 50.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=harness.positive_int, default=2,
                        help="PyTorch threads (default 2: the goal's 2 cores)")  # fmt: skip
    parser.add_argument("--rounds", type=harness.positive_int, default=150, help="timed rounds (default 150)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    import torch

    from attend.apps.focus.assistant import FocusAssistant, Session, message_input
    from attend.apps.focus.evaluation import load_suite

    with harness.torch_threads(args.threads) as threads:
        assistant = FocusAssistant()
        tasks, rows = load_suite("test")
        cycle = itertools.cycle(rows)
        current = {}

        def triage() -> None:
            row = next(cycle)
            current["row"] = row
            task = tasks[row.task_id]
            assistant.triage(Session(task.task, task.allow), [row.message])

        def encoder() -> None:
            row = current.get("row") or rows[0]
            batch = assistant.reader.tokenizer.encode([message_input(row.message)])
            with torch.inference_mode():
                assistant.reader.model.encoder(batch["input_ids"], batch["attention_mask"])

        for task in tasks.values():  # a session reads its task once
            assistant.task_reading(task.task)
        timings = harness.interleave({"triage": triage, "encoder": encoder}, rounds=args.rounds, warmup=5,
                                     rotate=False)  # fmt: skip
    ratio = harness.paired_ratio(timings["triage"], timings["encoder"])
    median_ms = timings["triage"].median * 1e3
    result = {
        "threads": threads,
        "rounds": args.rounds,
        "triage_ms": {"median": median_ms, "p90": timings["triage"].quantile(0.9) * 1e3},
        "encoder_ms": {"median": timings["encoder"].median * 1e3, "p90": timings["encoder"].quantile(0.9) * 1e3},
        "triage_over_encoder": ratio.to_json(),
        "goal_ms": GOAL_MS,
        "meets_goal": median_ms <= GOAL_MS,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    rows_out = [
        ["triage (whole decision)", f"{median_ms:.1f}", f"{result['triage_ms']['p90']:.1f}", ratio.fmt()],
        ["encoder pass (reference)", f"{result['encoder_ms']['median']:.1f}", f"{result['encoder_ms']['p90']:.1f}",
         "1.00"],
    ]  # fmt: skip
    harness.print_table(
        f"focus triage, one message per call, {threads} thread(s), {args.rounds} rounds",
        ["contender", "median ms", "p90 ms", "x encoder (paired)"],
        rows_out,
        [f"goal: median <= {GOAL_MS:.0f} ms per message: {'met' if result['meets_goal'] else 'MISSED'}",
         "the messages of the scenario suite's test tasks in turn; the task's reading cached (one per session)"],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
