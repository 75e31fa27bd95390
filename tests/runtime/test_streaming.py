"""Batch scoring of large files: chunked, lazy, resumable, and the same rows as one call."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attend.data.readers import DataError, TextStream
from attend.runtime import load
from attend.runtime.streaming import PredictionWriter, completed_rows, open_output, predict_stream
from tests.conftest import planted_rows, run_cli, write_csv


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rows = planted_rows(2600, seed=5)
    rows[3]["text"] = 'a "quoted" text, with a comma\nand a line break'
    rows[9]["text"] = "line\u2028separator and unicode 电影"
    return [r["text"] for r in rows]


def test_streamed_rows_equal_one_call_and_read_lazily(trained: dict[str, Path], texts: list[str]) -> None:
    predictor = load(trained["encoder"])
    pulled: list[int] = []

    def source() -> object:
        for i, text in enumerate(texts):
            pulled.append(i)
            yield text

    sink = io.StringIO()
    writer = PredictionWriter(sink, "jsonl")
    chunks: list[int] = []

    def on_chunk(count: int) -> None:
        chunks.append(count)
        assert len(pulled) - writer.rows <= 0  # nothing read beyond what has been written

    written = predict_stream(predictor, source(), writer, top_k=2, chunk=500, on_chunk=on_chunk)  # type: ignore[arg-type]
    assert written == len(texts) and chunks == [500] * 5 + [100]
    rows = [json.loads(line) for line in sink.getvalue().split("\n") if line]
    whole = predictor.predictions(texts)
    ranked = predictor.ranked(whole.probs, 2)
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == [top[0][0] for top in ranked]
    for row, top in zip(rows, ranked, strict=True):
        assert [t["probability"] for t in row["top"]] == pytest.approx([p for _, p in top], abs=1e-5)


@pytest.mark.processes
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_interrupted_output_resumes_to_the_file_of_one_run(
    trained: dict[str, Path], texts: list[str], tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture
) -> None:
    data = write_csv(tmp_path / "in.csv", [{"text": t} for t in texts])
    model = str(trained["encoder"])
    whole = tmp_path / f"whole.{fmt}"
    done = run_cli("predict", model, "--input", str(data), "--format", fmt, "--output", str(whole), "--top-k", "2")
    assert done.returncode == 0, done.stderr
    assert f"{len(texts)} predictions written" in done.stderr
    full = whole.read_bytes()
    # An interruption: the file ends part-way through a row (in a quoted multi-line one for CSV).
    cut = full.index(b"line break") if fmt == "csv" else full.index(b'"text"', len(full) // 2) + 3
    partial = tmp_path / f"partial.{fmt}"
    partial.write_bytes(full[:cut])
    again = run_cli("predict", model, "--input", str(data), "--format", fmt, "--output", str(partial), "--top-k", "2",
                    "--resume", "--no-progress")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "after the" in again.stderr
    assert partial.read_bytes() == full

    # Only the same run is continued: not another --top-k, another input, or a longer file than the input.
    from attend.cli import main

    partial.write_bytes(full[:cut])
    kept = completed_rows(partial, fmt)  # drops the cut row, as a resumed run does first
    whole_rows = partial.read_bytes()
    short = write_csv(tmp_path / "short.csv", [{"text": t} for t in texts[:2]])
    other = write_csv(tmp_path / "other.csv", [{"text": t + " again"} for t in texts])
    for argv, error in (([str(data), "--top-k", "1"], "resume with the --top-k it was written with"),
                        ([str(other), "--top-k", "2"], "it was written from another input"),
                        ([str(short), "--top-k", "2"], f"already holds {kept} rows")):  # fmt: skip
        code = main(["predict", model, "--input", *argv, "--format", fmt, "--output", str(partial), "--resume",
                     "--no-progress"])  # fmt: skip
        assert code == 2 and error in capsys.readouterr().err
        assert partial.read_bytes() == whole_rows  # nothing appended


def test_existing_output_is_never_overwritten_and_json_lists_do_not_resume(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "in.csv", planted_rows(20))
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    done = run_cli("predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--format", "csv")
    # not a prediction file, said at once (it had advised --resume, which then refused it)
    assert done.returncode == 2 and "exists and is not a prediction file" in done.stderr, done.stderr
    assert "--resume" not in done.stderr and "Traceback" not in done.stderr
    assert out.read_text() == "precious\n"
    for name, start in (("p.csv", "text,label_1,probability_1,truncated,warning\n"), ("p.jsonl", '{"text": "a"'),
                        ("p.json", "[]\n"), ("empty.csv", "")):  # fmt: skip
        (tmp_path / name).write_text(start)
        with pytest.raises(DataError, match=r"exists; --resume continues it"):
            open_output(tmp_path / name, resume=False, fmt="csv")
        assert (tmp_path / name).read_text() == start
    refused = run_cli("predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--resume",
                      "--format", "csv")  # fmt: skip
    assert refused.returncode == 2 and "not a prediction CSV" in refused.stderr
    assert out.read_text() == "precious\n"
    listing = tmp_path / "out.json"
    listing.write_text("[]\n")
    bad = run_cli("predict", str(trained["encoder"]), "--input", str(data), "--output", str(listing), "--resume")
    assert bad.returncode == 2 and "cannot be resumed" in bad.stderr


def test_json_output_is_still_one_list(trained: dict[str, Path], tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", planted_rows(30))
    done = run_cli("predict", str(trained["encoder"]), "--input", str(data), "--no-progress")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list) and len(rows) == 30 and {"text", "label", "top", "truncated"} <= set(rows[0])


def test_completed_rows_drops_a_cut_row(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label_1", "probability_1", "truncated", "warning"])
        writer.writerow(["one", "pos", "0.9", "false", ""])
        writer.writerow(["two\nlines", "neg", "0.8", "false", ""])
    whole = path.read_bytes()
    assert completed_rows(path, "csv") == 2 and path.read_bytes() == whole
    path.write_bytes(whole[:-8])
    assert completed_rows(path, "csv") == 1
    assert path.read_bytes() == whole[: whole.index(b'"two')]
    path.write_bytes(b"text,label_1")  # not even the header is whole
    assert completed_rows(path, "csv") == 0 and path.read_bytes() == b""


def test_text_stream_reads_every_format_with_progress(tmp_path: Path) -> None:
    rows = planted_rows(50)
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    stream = TextStream(jsonl)
    assert [t for _, t in stream] == [r["text"] for r in rows] and stream.position == stream.size
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": [r["text"] for r in rows]}), parquet)
    stream = TextStream(parquet)
    assert [t for _, t in stream] == [r["text"] for r in rows] and stream.position == stream.size == 50
    missing = tmp_path / "m.csv"
    missing.write_text("body\nhello\n")
    with pytest.raises(DataError, match="no column 'text'"):
        list(TextStream(missing))


def test_a_closed_pipe_ends_the_run_quietly(trained: dict[str, Path], texts: list[str], tmp_path: Path) -> None:
    """`attend predict ... | head -1`: the reader leaves; no error line, the exit status of SIGPIPE."""
    data = write_csv(tmp_path / "in.csv", [{"text": t} for t in texts])
    command = [sys.executable, "-m", "attend", "predict", str(trained["encoder"]), "--input", str(data), "--format",
               "jsonl", "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["text"] == texts[0]
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141 and "error" not in stderr and "Traceback" not in stderr, stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        # No line ends: the whole file was "a row cut off" and was emptied.
        ("notes.jsonl", b'{"notes": "irreplaceable"}', "not a prediction JSONL"),
        ("essay.csv", b"one line of my essay", "not a prediction CSV"),
        # The user's own data (a text,label file without a final newline) lost its last row.
        ("mydata.csv", b"text,label\ngood film,pos\nbad film,neg", "not a prediction CSV"),
        ("header.csv", b"text\nhello\n", "not a prediction CSV"),
        ("extra.csv", b"text,label_1,probability_1,score\n", "header is 'text,label_1,probability_1,score'"),
        ("partial.csv", b'[{"text": "a", "label": "pos"', "not a prediction CSV"),  # a JSON list, then --format csv
        # A prediction file of the other format (a .csv name written with --format jsonl): said so (it read
        # "not a prediction CSV", though it was one of this run's)
        ("other.csv", b'{"text": "a", "label": "pos"}\n', "a prediction JSONL (written with --format jsonl), not CSV"),
    ],
)
def test_resuming_a_file_that_is_no_prediction_file_leaves_it_as_it_was(
    trained: dict[str, Path], tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    data = write_csv(tmp_path / "in.csv", planted_rows(20))
    out = tmp_path / name
    out.write_bytes(content)
    done = run_cli("predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--resume",
                   "--no-progress")  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert out.read_bytes() == content


def test_a_csv_carries_each_texts_warning_and_an_older_csv_is_not_continued(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The warning JSON gives a text the model reads none of had no place in a CSV (the README
    promised it per text); a CSV written before that column is not continued with rows of another shape."""
    from attend.cli import main

    out = tmp_path / "p.csv"
    assert main(["predict", str(trained["encoder"]), "\u2603\u2603 \u2603", "great film", "--output", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert rows[0]["warning"].startswith("no piece of this text is in the model's vocabulary")
    assert rows[1]["warning"] == ""
    old = tmp_path / "old.csv"
    old.write_bytes(b"text,label_1,probability_1,label_2,probability_2,truncated\r\none,neg,0.9,pos,0.1,false\r\n")
    data = write_csv(tmp_path / "in.csv", planted_rows(4))
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(old), "--resume",
                 "--no-progress"]) == 2  # fmt: skip
    assert "written by an attend before 2026-12-07, without the warning column" in capsys.readouterr().err


def test_a_resume_continues_only_the_same_input_and_the_same_model(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from attend.cli import main

    rows = planted_rows(40)
    data = write_csv(tmp_path / "in.csv", rows)
    whole = tmp_path / "whole.csv"  # named .csv: written as CSV without --format
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(whole), "--top-k", "1",
                 "--no-progress"]) == 0  # fmt: skip
    full = whole.read_bytes()
    assert full.startswith(b"text,label_1,probability_1,truncated,warning\r\n")
    partial = tmp_path / "partial.csv"
    partial.write_bytes(full[: full.index(rows[30]["text"].encode())] + b'"half a r')  # 30 rows and a cut one
    before = partial.read_bytes()
    # A row between the first and the last edited: only those two were compared, and it appended.
    edited = [dict(r) for r in rows]
    edited[12]["text"] = "an edited row " + edited[12]["text"]
    changed = write_csv(tmp_path / "changed.csv", edited)
    code = main(["predict", str(trained["encoder"]), "--input", str(changed), "--output", str(partial), "--top-k",
                 "1", "--resume", "--no-progress"])  # fmt: skip
    assert code == 2 and "some text between the first and the last differs" in capsys.readouterr().err
    # Another model with the same labels: it appended its predictions to the first model's.
    code = main(["predict", str(trained["encoder_cls"]), "--input", str(data), "--output", str(partial), "--top-k",
                 "1", "--resume", "--no-progress"])  # fmt: skip
    assert code == 2 and "another model" in capsys.readouterr().err
    assert partial.read_bytes() == before  # refused: nothing cut, nothing appended
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(partial), "--top-k", "1",
                 "--resume", "--no-progress"]) == 0  # fmt: skip
    assert partial.read_bytes() == full


def test_a_resume_predicts_the_files_last_rows_again_not_its_last_alone(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """int8 stays within the tolerance of fp32 on about half the rows: comparing the last row alone had
    let a file written without --int8 go on with int8 rows (or another model's close to it)."""
    from attend.cli import main

    data = write_csv(tmp_path / "in.csv", planted_rows(200))
    out = tmp_path / "o.csv"
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--top-k", "1",
                 "--no-progress"]) == 0  # fmt: skip
    lines = out.read_bytes().splitlines(keepends=True)[:101]  # the header and 100 rows
    row = lines[70].decode().split(",")  # a row 31 before the last one kept: its probability moved by 0.01
    row[2] = f"{float(row[2]) - 0.01:.6f}"
    lines[70] = ",".join(row).encode()
    out.write_bytes(b"".join(lines))
    before = out.read_bytes()
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--top-k", "1",
                 "--resume", "--no-progress"]) == 2  # fmt: skip
    assert "its row 70 gives" in capsys.readouterr().err and out.read_bytes() == before


def test_reading_a_file_to_continue_holds_a_few_rows_not_the_file(tmp_path: Path) -> None:
    """It had read the whole output, about 5.7 times its size: a million rows' resume needed gigabytes."""
    import tracemalloc

    from attend.runtime.streaming import read_existing

    for fmt in ("csv", "jsonl"):
        path = tmp_path / f"big.{fmt}"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            if fmt == "csv":
                handle.write("text,label_1,probability_1,truncated,warning\r\n")
                handle.writelines(f"text number {i} of many,pos,0.912345,False,\r\n" for i in range(40_000))
            else:
                handle.writelines(json.dumps({"text": f"text number {i} of many", "label": "pos", "top": [
                    {"label": "pos", "probability": 0.912345}], "truncated": False}) + "\n" for i in range(40_000))
        tracemalloc.start()
        existing = read_existing(path, fmt)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert existing.rows == 40_000 and existing.kept == path.stat().st_size
        assert peak < path.stat().st_size / 4, (fmt, peak, path.stat().st_size)


def test_resume_needs_a_resumable_format_and_another_file_than_the_input(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from attend.cli import main

    data = write_csv(tmp_path / "in.csv", planted_rows(10))
    out = tmp_path / "out.txt"  # no .csv/.jsonl name and no --format: a JSON list, which cannot be resumed
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--resume"]) == 2
    assert "a --format json list cannot be resumed" in capsys.readouterr().err and not out.exists()
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(data), "--resume",
                 "--format", "csv"]) == 2  # fmt: skip
    assert "is the --input file" in capsys.readouterr().err
    assert data.read_text(encoding="utf-8").startswith("text,label")
    # A --format its --output's name contradicts: CSV had been written under f.jsonl without a word.
    named = tmp_path / "f.jsonl"
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(named),
                 "--format", "csv"]) == 2  # fmt: skip
    assert capsys.readouterr().err == f"error: --format csv: --output {named} is named as JSONL; name it as CSV, or " \
                                      "leave --format out\n"  # fmt: skip
    assert not named.exists()
    # Into a model directory (any: this one or another): a file beside the model had stopped
    # `attend train --overwrite` from replacing it ("holds p.csv ..., which attend did not write").
    inside = trained["encoder"] / "p.csv"
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(inside)]) == 2
    err = capsys.readouterr().err
    assert f"--output {inside}: that is in the model directory {trained['encoder'].resolve()}" in err
    assert not inside.exists()
    # Below a file: named so (it had been "in.csv: File exists").
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(data / "p.jsonl")]) == 2
    assert capsys.readouterr().err == f"error: --output {data / 'p.jsonl'}: {data} is a file, not a folder\n"


def test_a_multi_label_csv_resumes(tmp_path: Path) -> None:
    """Its header ends with a labels column: it was refused as 'not starting with text'."""
    path = tmp_path / "p.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = PredictionWriter(handle, "csv")
        writer.write(["one", "two"], [[("a", 0.9), ("b", 0.6)], [("b", 0.7), ("a", 0.2)]], [False, False],
                     [None, None], chosen=[["a", "b"], ["b"]])  # fmt: skip
    from attend.runtime.streaming import read_existing

    existing = read_existing(path, "csv")
    assert existing.rows == 2 and existing.width == 2 and existing.labels == {"a", "b"}
    assert existing.last == [("b", 0.7), ("a", 0.2)]  # the labels column is not read as a label


def test_the_library_resumes_with_a_count_and_a_cut_inside_a_quoted_line_break(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from attend.runtime.streaming import open_output

    predictor = load(trained["encoder"])
    texts = ["first text", 'a "quoted" text\r\nover two lines', "third", "fourth one"]
    whole = io.StringIO()
    predict_stream(predictor, texts, PredictionWriter(whole, "csv"), top_k=2)
    full = whole.getvalue().encode()
    path = tmp_path / "p.csv"
    # Cut just after the line break inside the quoted text: strict reading sees a cut field (it was
    # read as a one-field row, and the file refused), and a caller passing skip=rows (an int) appended
    # after the cut row (open_output no longer cut it at once).
    for cut in (full.index(b"over two"), full.index(b"third") + 2):
        path.write_bytes(full[:cut])
        sink, existing, fresh = open_output(path, resume=True, fmt="csv")
        predict_stream(predictor, texts, PredictionWriter(sink, "csv", header=fresh), top_k=2, skip=existing.rows)
        sink.close()
        assert path.read_bytes() == full, cut


def test_a_single_label_model_does_not_continue_a_multi_label_file(tmp_path: Path) -> None:
    from attend.runtime.streaming import read_existing

    path = tmp_path / "p.csv"
    path.write_bytes(b"text,label_1,probability_1,truncated,warning,labels\r\n")  # interrupted before its first row
    existing = read_existing(path, "csv")
    with pytest.raises(DataError, match=r"a multi-label model wrote it, this is a single-label one"):
        existing.check(["a", "b"], 1, multi_label=False)
    existing.check(["a", "b"], 1, multi_label=True)
    path.write_text(json.dumps({"text": "x", "label": "a", "top": [{"label": "a", "probability": 0.9}],
                                "truncated": False}) + "\n")  # fmt: skip
    with pytest.raises(DataError, match=r"a single-label model wrote it, this is a multi-label one"):
        read_existing(path, "jsonl").check(["a", "b"], 1, multi_label=True)


def test_a_malformed_row_in_the_middle_is_refused_not_cut(trained: dict[str, Path], tmp_path: Path) -> None:
    """Strict reading raised there too, and the rows after it were cut as if interrupted."""
    from attend.runtime.streaming import open_output, read_existing

    path = tmp_path / "p.csv"
    path.write_bytes(b'text,label_1,probability_1,truncated,warning\r\none,a,0.5,false,\r\n"two" x,a,0.5,false,\r\n'
                     b"three,a,0.5,false,\r\n")  # fmt: skip
    before = path.read_bytes()
    with pytest.raises(DataError, match=r"row 2 is not a CSV row attend writes"):
        read_existing(path, "csv")
    assert path.read_bytes() == before
    # The file open_output gives is a text file: `with`, writelines and print cut the interrupted row first.
    path.write_bytes(b"text,label_1,probability_1,truncated,warning\r\none,a,0.5,false,\r\ntw")
    with open_output(path, resume=True, fmt="csv")[0] as sink:
        sink.writelines(["two,a,0.5,false,\r\n"])
        print("three,a,0.5,false,", end="\r\n", file=sink)
    assert path.read_bytes() == (b"text,label_1,probability_1,truncated,warning\r\none,a,0.5,false,\r\n"
                                 b"two,a,0.5,false,\r\nthree,a,0.5,false,\r\n")


def test_a_bad_row_mid_file_says_what_was_written_and_resumes_once_mended(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The error named the row but not the partial output it left, nor how to go on."""
    from attend.cli import main

    rows = [{"text": f"row {i} good", "label": "pos"} for i in range(700)]
    bad = tmp_path / "in.csv"
    write_csv(bad, [*rows[:600], {"text": "", "label": "pos"}, *rows[600:]])
    out = tmp_path / "out.csv"
    assert main(["predict", str(trained["encoder"]), "--input", str(bad), "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "line 602 has an empty text" in err and f"predictions are in {out}: mend that line" in err, err
    kept = len(out.read_text(encoding="utf-8").splitlines()) - 1
    assert 0 < kept <= 600 and f"the first {kept} predictions" in err
    write_csv(bad, [*rows[:600], {"text": "mended", "label": "pos"}, *rows[600:]])
    assert main(["predict", str(trained["encoder"]), "--input", str(bad), "--output", str(out), "--resume",
                 "--no-progress"]) == 0  # fmt: skip
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1 + 701
    # An error about the output (another input's file) is not told to mend a line and resume.
    other = write_csv(tmp_path / "other.csv", [{"text": "something else", "label": "pos"}] * 3)
    assert main(["predict", str(trained["encoder"]), "--input", str(other), "--output", str(out), "--resume",
                 "--no-progress"]) == 2  # fmt: skip
    assert "mend that line" not in capsys.readouterr().err


def test_a_run_that_wrote_nothing_leaves_no_output_file(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A misnamed --text-col, or a bad first row, left an empty --output that refused the mended command."""
    from attend.cli import main

    out = tmp_path / "out.csv"
    data = write_csv(tmp_path / "in.csv", [{"id": "1", "text": " "}, {"id": "2", "text": "fine"}])
    for extra, said in ((["--text-col", "body"], "has no column 'body'"), ([], "line 2 has an empty text")):
        assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(out),
                     "--no-progress", *extra]) == 2  # fmt: skip
        assert said in capsys.readouterr().err and not out.exists()
    out.write_text("", encoding="utf-8")  # a file of the user's own is left as it was, empty or not
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--resume",
                 "--no-progress"]) == 2  # fmt: skip
    assert out.exists()


def test_a_compressed_output_name_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """`--output p.csv.gz` wrote a plain JSON list under that name."""
    from attend.runtime.streaming import open_output

    for name in ("p.csv.gz", "p.jsonl.xz"):
        with pytest.raises(DataError, match=rf"--output .*{name}: predictions are written as plain text, which an "
                                            r"interrupted run resumes from; name it .*p\.(csv|jsonl) and compress"):
            open_output(tmp_path / name, resume=False, fmt="csv")
        assert not (tmp_path / name).exists()


def test_a_full_disk_names_the_output_and_what_is_kept(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A full disk mid-run was "error: [Errno 28] No space left on device", naming no file."""
    import errno

    from attend.cli import main
    from attend.runtime.streaming import PredictionWriter

    real = PredictionWriter.write
    calls = []

    def full_after_one(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PredictionWriter, "write", full_after_one)
    data = write_csv(tmp_path / "in.csv", planted_rows(600))
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"error: {out}: No space left on device while writing it; the predictions written before it are kept" in err
    assert out.read_text(encoding="utf-8").count("\n") >= 1  # the first chunk's rows, for --resume


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_kept_columns_ride_with_each_prediction_and_resume(
    trained: dict[str, Path], tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture
) -> None:
    """--keep-cols: an id in every row, to join the predictions back on (the output had only the text)."""
    from attend.cli import main

    rows = [{"id": 10, "text": "a great film", "note": "x"}, {"id": 11, "text": "dull, long", "note": None},
            {"text": "fine", "note": "z", "id": 12.5}]  # fmt: skip
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    model = str(trained["encoder"])
    whole = tmp_path / f"whole.{fmt}"
    argv = ["predict", model, "--input", str(data), "--keep-cols", "id,note", "--no-progress", "--top-k", "2"]
    assert main([*argv, "--output", str(whole)]) == 0
    full = whole.read_bytes()
    if fmt == "csv":
        read = list(csv.DictReader(io.StringIO(full.decode())))
        assert list(read[0])[-2:] == ["id", "note"]
        assert [(r["id"], r["note"]) for r in read] == [("10", "x"), ("11", ""), ("12.5", "z")]
    else:
        read = [json.loads(line) for line in full.decode().splitlines()]
        assert list(read[0])[:3] == ["text", "id", "note"]
        assert [(r["id"], r["note"]) for r in read] == [(10, "x"), (11, None), (12.5, "z")]  # JSON's own types
    assert [r["text"] for r in read] == [r["text"] for r in rows]

    partial = tmp_path / f"partial.{fmt}"
    partial.write_bytes(full[: full.index(b"dull") + 2])  # interrupted in the second row
    assert main([*argv, "--output", str(partial), "--resume"]) == 0
    assert partial.read_bytes() == full
    partial.write_bytes(full[: full.index(b"dull") + 2])
    capsys.readouterr()
    for keep, said in (("id", "written with --keep-cols id,note, this run has --keep-cols id"),
                       (None, "this run has no --keep-cols")):  # fmt: skip
        other = [*argv[:4], *(["--keep-cols", keep] if keep else []), *argv[6:]]
        assert main([*other, "--output", str(partial), "--resume"]) == 2
        assert said in capsys.readouterr().err
    assert partial.read_bytes() == full[: full.index(b"dull") + 2]  # nothing appended, nothing cut
    # The same texts under another id: the file would join two inputs' ids (it had been continued).
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps({**r, "id": 99 if r["id"] == 10 else r["id"]}) + "\n" for r in rows))
    assert main([*argv[:3], str(changed), *argv[4:], "--output", str(partial), "--resume"]) == 2
    assert "some text, or --keep-cols value, between the first and the last differs" in capsys.readouterr().err
    assert partial.read_bytes() == full[: full.index(b"dull") + 2]


def test_kept_values_are_json_whatever_the_input_holds(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"text": "a", "tags": [1, float("nan"), "x"], "meta": {"k": float("inf")}}) + "\n",
                    encoding="utf-8")  # fmt: skip
    ((_, text, values),) = list(TextStream(data, keep=["tags", "meta"]).with_columns())
    assert text == "a" and values == {"tags": [1, None, "x"], "meta": {"k": "inf"}}  # NaN inside was bare NaN
    table = pa.table({"text": ["b"], "raw": [b"caf\xc3\xa9 \xff"]})
    pq.write_table(table, tmp_path / "in.parquet")
    ((_, _, values),) = list(TextStream(tmp_path / "in.parquet", keep=["raw"]).with_columns())
    assert values == {"raw": "café \ufffd"}  # bytes were written as Python's b'...'


@pytest.mark.parametrize(("keep", "error"), [
    ("id,nope", "has no column 'nope' (columns: id, text); choose the columns to keep with --keep-cols"),
    ("label", "--keep-cols 'label': the predictions have a 'label' of their own"),
    ("probability_3", "--keep-cols 'probability_3': the predictions have"),
    # Of a single-label model too, said so (its predictions have none, and the refusal read as wrong).
    ("labels", "--keep-cols 'labels': a multi-label model's predictions have a 'labels' of their own, and the name "
     "is kept for them whatever the model; rename"),
    ("id,,x", "a column name is empty"),
    ("id,id", "'id' is named twice"),
])  # fmt: skip
def test_kept_columns_are_refused_by_name(
    trained: dict[str, Path], tmp_path: Path, keep: str, error: str, capsys: pytest.CaptureFixture
) -> None:
    from attend.cli import main

    data = write_csv(tmp_path / "in.csv", [{"id": "1", "text": "a text"}])
    out = tmp_path / "out.csv"
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--keep-cols", keep, "--output",
                 str(out), "--no-progress"]) == 2  # fmt: skip
    assert error in capsys.readouterr().err
    assert not out.exists()  # an empty file had stayed, and refused the mended command ("exists; --resume")
    assert main(["predict", str(trained["encoder"]), "a text", "--keep-cols", "id"]) == 2
    assert "--keep-cols copies columns of an --input file: give --input" in capsys.readouterr().err


def test_a_file_refused_at_its_first_read_draws_no_bar(trained: dict[str, Path], tmp_path: Path) -> None:
    """Two bar lines had come before the one-line error of a file of blank lines."""
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n")
    done = run_cli("predict", str(trained["encoder"]), "--input", str(blank))
    assert done.returncode == 2 and done.stderr == f"error: {blank}: no text in it (every line is blank)\n"


def test_progress_into_a_log_file_is_a_line_per_redraw(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`attend predict --input` into a log (no terminal) had redrawn its bar with carriage returns every
    second, one line of every redraw; it is paced and lined as training's bar is."""
    from attend.cli import main

    data = write_csv(tmp_path / "in.csv", planted_rows(600))
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # every chunk redrawn (the default without a terminal: 30 s)
    monkeypatch.setenv("TQDM_DELAY", "0")  # drawn from the start (the default: after a second)
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(tmp_path / "o.csv")]) == 0
    err = capsys.readouterr().err
    bars = [line for line in err.splitlines() if line.startswith("predict:")]
    assert "\r" not in err and len(bars) >= 2 and bars[-1].startswith("predict: 100%"), err


def test_a_resumed_runs_bar_starts_where_the_file_left_off(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes a resumed run read past had been counted as its progress: its rate and ETA 20 times too fast."""
    import attend.progress
    from attend.cli import main

    data = write_csv(tmp_path / "in.csv", planted_rows(600))
    out = tmp_path / "o.csv"
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--no-progress"]) == 0
    whole = out.read_bytes()
    out.write_bytes(whole[: whole.index(b"\n", len(whole) // 2) + 1])  # the first half of the rows
    started: list[dict[str, Any]] = []
    real = attend.progress.progress_bar
    monkeypatch.setattr(attend.progress, "progress_bar", lambda *a, **options: started.append(options) or real(
        *a, **options))  # fmt: skip
    assert main(["predict", str(trained["encoder"]), "--input", str(data), "--output", str(out), "--resume"]) == 0
    assert out.read_bytes() == whole
    (options,) = started
    assert 0.4 < options["initial"] / options["total"] < 0.6, options  # where the input is read to, not 0


def test_a_data_set_name_given_as_input_says_what_reads_it(trained: dict[str, Path], tmp_path: Path) -> None:
    # `predict --input rotten_tomatoes` had said "no such file" alone, where train and evaluate take the name
    for verb in ("predict", "explain"):
        done = run_cli(verb, str(trained["encoder"]), "--input", "rotten_tomatoes", cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "--input rotten_tomatoes: no such file; rotten_tomatoes is the name of a data set" in done.stderr
        assert "`attend evaluate MODEL_DIR rotten_tomatoes`" in done.stderr


def test_a_txt_input_is_one_text_per_line(trained: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """predict and explain read a .txt file as translate does, one text per line (it had been refused:
    "cannot tell the format from the extension '.txt'"); blank lines are skipped, and --text-col and
    --keep-cols, which name columns it has not, are refused."""
    import gzip

    from attend.cli import main

    model = str(trained["encoder"])
    lines = ["a great film", "", "  ", 'dull, "long", and slow\r', "电影 很好"]
    data = tmp_path / "in.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert [(n, t) for n, t in TextStream(data)] == [(1, "a great film"), (4, 'dull, "long", and slow'),
                                                      (5, "电影 很好")]  # fmt: skip
    packed = tmp_path / "in.txt.gz"
    packed.write_bytes(gzip.compress(data.read_bytes()))
    for given in (data, packed):
        assert main(["predict", model, "--input", str(given), "--no-progress", "--top-k", "1"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [r["text"] for r in rows] == ["a great film", 'dull, "long", and slow', "电影 很好"]
    assert main(["explain", model, "--input", str(data), "--json", "--no-progress"]) == 0
    assert [r["text"] for r in json.loads(capsys.readouterr().out)] == [r["text"] for r in rows]
    for verb in ("predict", "explain"):
        assert main([verb, model, "--input", str(data), "--text-col", "body"]) == 2
        assert f"--text-col body: {data} is a .txt file, one text per line, with no columns" in capsys.readouterr().err
    out = tmp_path / "out.csv"
    for kept in ("id", "text"):  # the model's own text column too (it had been "in every prediction already")
        assert main(["predict", model, "--input", str(data), "--keep-cols", kept, "--output", str(out)]) == 2
        assert f"--keep-cols {kept}: {data} is a .txt file" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(DataError, match=r"a \.txt file is one text per line, with no columns to keep \(id\)"):
        TextStream(data, keep=["id"])
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n", encoding="utf-8")
    assert main(["predict", model, "--input", str(blank)]) == 2
    assert f"{blank}: no text in it (every line is blank)" in capsys.readouterr().err
    # A spreadsheet's export ends in rows of delimiters alone: training and evaluate skipped them, predict
    # and explain stopped at them ("line 4 has an empty text").
    excel = tmp_path / "excel.csv"
    excel.write_bytes("\ufefftext,id\r\na great film,1\r\ndull and slow,2\r\n,\r\n,\r\n".encode())
    assert main(["predict", model, "--input", str(excel), "--no-progress", "--keep-cols", "id"]) == 0
    said = capsys.readouterr()
    assert [r["id"] for r in json.loads(said.out)] == ["1", "2"]
    # said, as rows that got no prediction (an empty cell of a one-column file had gone unsaid)
    assert f"note: 2 rows of {excel} held no text" in said.err and "join predictions to rows by --keep-cols" in said.err
    assert main(["explain", model, "--input", str(excel), "--json", "--no-progress"]) == 0
    assert [r["text"] for r in json.loads(capsys.readouterr().out)] == ["a great film", "dull and slow"]
    doubled = tmp_path / "doubled.txt"  # "\r\n" written in text mode on Windows: lines, not an old Mac file
    doubled.write_bytes(b"a great film\r\r\ndull and slow\r\r\n")
    assert [t for _, t in TextStream(doubled)] == ["a great film", "dull and slow"]
    mac = tmp_path / "mac.txt"  # an old Mac file's texts had been one text, answered as one
    mac.write_bytes(b"a great film\rdull and slow\r")
    for verb in ("predict", "explain"):
        assert main([verb, model, "--input", str(mac), "--no-progress"]) == 2
        assert capsys.readouterr().err == f"error: {mac}: line 1 has a carriage return inside it: its lines end " \
                                          "in a bare carriage return (an old Mac format); re-save it with \\n line " \
                                          "endings\n"


def test_input_dash_reads_standard_input(trained: dict[str, Path], tmp_path: Path) -> None:
    """``--input -`` is standard input, one text per line, as translate reads it (it had been "-: no such
    file"): predict streams it (to a resumable --output too) and explain reads it; columns are refused."""
    model = str(trained["encoder"])
    piped = "a great film\n\ndull and slow\n"
    done = run_cli("predict", model, "--input", "-", "--top-k", "1", stdin=piped)
    assert done.returncode == 0, done.stderr
    assert [r["text"] for r in json.loads(done.stdout)] == ["a great film", "dull and slow"]
    given = run_cli("predict", model, "a great film", "dull and slow", "--top-k", "1")
    assert json.loads(done.stdout) == json.loads(given.stdout)
    out = tmp_path / "out.csv"
    assert run_cli("predict", model, "--input", "-", "--output", str(out), stdin=piped).returncode == 0
    written = out.read_text(encoding="utf-8")
    again = run_cli("predict", model, "--input", "-", "--output", str(out), "--resume", stdin=piped)
    assert again.returncode == 0 and "0 predictions written" in again.stderr
    assert out.read_text(encoding="utf-8") == written and len(written.splitlines()) == 3
    explained = run_cli("explain", model, "--input", "-", "--json", stdin=piped)
    assert [r["text"] for r in json.loads(explained.stdout)] == ["a great film", "dull and slow"]
    for verb, flag in (("predict", "--text-col"), ("explain", "--text-col"), ("predict", "--keep-cols")):
        refused = run_cli(verb, model, "--input", "-", flag, "id", stdin=piped)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert f"{flag} id: standard input is read as text, one text per line, with no columns" in refused.stderr
    blank = run_cli("predict", model, "--input", "-", stdin="\n \n")
    assert blank.returncode == 2 and "error: standard input: no text in it (every line is blank)" in blank.stderr
    bad = run_cli("explain", model, "--input", "-", stdin=b"good\n\xff\n")  # named so, not /dev/stdin
    assert bad.returncode == 2 and "error: standard input: line 2 is not valid UTF-8" in bad.stderr
