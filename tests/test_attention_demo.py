"""The demo trains for real and shows the marker word getting the attention."""

from __future__ import annotations

import pytest

from attend.attention_demo import MARKERS, VOCAB, run_demo
from attend.cli import main


def test_demo_model_learns_and_attends_to_the_marker() -> None:
    result = run_demo(seed=0, steps=150)
    assert result.accuracy > 0.95
    marker_positions = [i for i, t in enumerate(result.tokens) if t in {VOCAB[m] for m in MARKERS}]
    assert len(marker_positions) == 1
    assert max(range(len(result.received)), key=result.received.__getitem__) == marker_positions[0]


def test_cli_demo_prints_a_readable_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--attention", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "attention pooling" in out


def test_cli_rejects_unknown_verbs_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(("options", "said"), [({"steps": -1}, "steps=-1 must be a whole number of at least 1"),
                                               ({"length": 0}, "length=0 must be a whole number of at least 1"),
                                               ({"steps": 2.5}, "steps=2.5 must be a whole number")])
def test_a_bad_argument_is_named(options: dict[str, object], said: str) -> None:
    """steps=-1 had trained nothing and reported chance accuracy; length=0 failed inside torch.randint."""
    with pytest.raises(ValueError, match=said):
        run_demo(**options)  # type: ignore[arg-type]
