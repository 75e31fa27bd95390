"""Sentence pairs: every format, a clear error for each way a file can be wrong, and a split that keeps
every copy of a source sentence on one side."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from attend.data.parallel import ParallelTexts, group_split, normalise_whitespace, read_parallel
from attend.data.readers import DataError

PAIRS = [("I see.", "Ich verstehe."), ("Thank you!", "Danke!"), ("猫が好き。", "I like cats."), ("42", "42")]


def write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    """Write ``rows`` under ``header`` in the format the extension names."""
    fmt = path.suffix.lstrip(".")
    if fmt in {"csv", "tsv"}:
        import csv

        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t" if fmt == "tsv" else ",")
            writer.writerow(header)
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, row, strict=True))) + "\n" for row in rows), "utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({name: [row[i] for row in rows] for i, name in enumerate(header)}), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_every_format_reads_the_same(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path / f"pairs.{fmt}", ["source", "target"], [list(pair) for pair in PAIRS])
    data = read_parallel(path)
    assert isinstance(data, ParallelTexts)
    assert data.sources == [s for s, _ in PAIRS] and data.targets == [t for _, t in PAIRS]
    assert data.splits is None
    assert data.rows == ([1, 2, 3, 4] if fmt in {"jsonl", "parquet"} else [2, 3, 4, 5])
    assert data.origin == str(path) and len(data) == 4


def test_numbers_are_text_in_json(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text(json.dumps({"source": 42, "target": 4.5}) + "\n", encoding="utf-8")
    data = read_parallel(path)
    assert (data.sources, data.targets) == (["42"], ["4.5"])


def test_custom_columns_split_and_whitespace(tmp_path: Path) -> None:
    rows = [
        ["  Hello,\tWorld!  ", "Hallo,  Welt!", "train"],
        ["「電話が鳴っているよ。」\u3000「私が出ます。」", "Ring\nring.", "Validation"],
        ["A\u00a0B", "C", " TEST "],
    ]
    path = write(tmp_path / "p.csv", ["en", "de", "part"], rows)
    data = read_parallel(path, source_col="en", target_col="de", split_col="part")
    assert data.sources == ["Hello, World!", "「電話が鳴っているよ。」 「私が出ます。」", "A B"]
    assert data.targets == ["Hallo, Welt!", "Ring ring.", "C"]  # case and punctuation kept
    assert data.splits == ["train", "dev", "test"]
    assert data.subset([2, 0]).sources == ["A B", "Hello, World!"]
    assert data.subset([2, 0]).splits == ["test", "train"] and data.subset([2, 0]).rows == [5, 2]
    assert normalise_whitespace(" a \u3000 b\n") == "a b"


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", ["en", "de"], [["a", "b"]])
    with pytest.raises(DataError, match=r"p\.csv has no column 'source' \(columns: en, de\).*--source-col"):
        read_parallel(path)
    with pytest.raises(DataError, match=r"has no column 'split' \(columns: en, de\)"):
        read_parallel(path, source_col="en", target_col="de", split_col="split")


def test_empty_sentences_are_counted_and_located(tmp_path: Path) -> None:
    rows = [["a", "b"], ["", "x"], ["c", "   "], ["\u200b", "y"], ["d", "e"], *[["", "z"]] * 6]
    path = write(tmp_path / "p.csv", ["source", "target"], rows)
    with pytest.raises(DataError) as caught:
        read_parallel(path)
    message = str(caught.value)
    assert str(path) in message
    assert "8 empty sources in column 'source' (lines 3, 5, 7, 8, 9, ... (8 in all))" in message
    assert "1 empty target in column 'target' (line 4)" in message
    assert "remove those lines" in message
    notes = write(tmp_path / "n.csv", ["source", "notes"], [["a", ""], ["b", " "], ["c", ""]])
    with pytest.raises(DataError, match=r"column 'notes' is empty in every line \(3\): is it the right column\?"):
        read_parallel(notes, target_col="notes")  # a wrong column, not three lines to remove
    extra = tmp_path / "x.csv"  # a row's extra fields no longer hide the other rows' faults
    extra.write_text("source,target\na,b\nc,d,e\nf,g\nsource,target\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"2 rows cannot be used .*: line 3 has more fields than the header; line 5 "
                                        r"repeats the header"):  # fmt: skip
        read_parallel(extra)


def test_a_row_of_delimiters_alone_is_skipped_as_in_labelled_data(tmp_path: Path) -> None:
    """A spreadsheet's empty rows below the last (",") had been two empty sentences to remove."""
    path = tmp_path / "sheet.csv"
    path.write_bytes("\ufeffsource,target\ncat dog,TAC GOD\n,\n , \nsun,NUS\n,\n".encode())
    pairs = read_parallel(path)
    assert pairs.sources == ["cat dog", "sun"] and pairs.rows == [2, 5]
    tsv = tmp_path / "sheet.tsv"
    tsv.write_text("source\ttarget\tpart\na\tb\ttest\n\t\t\n", encoding="utf-8")
    assert read_parallel(tsv, split_col="part").splits == ["test"]


def test_empty_sentence_in_parquet_is_a_row(tmp_path: Path) -> None:
    path = write(tmp_path / "p.parquet", ["source", "target"], [["a", "b"], ["c", None]])
    with pytest.raises(DataError, match=r"1 empty target in column 'target' \(row 2\); remove those rows"):
        read_parallel(path)


def test_bad_split_values_are_named(tmp_path: Path) -> None:
    rows = [["a", "b", "train"], ["c", "d", "holdout"], ["e", "f", ""], ["g", "h", "holdout"]]
    path = write(tmp_path / "p.csv", ["source", "target", "split"], rows)
    with pytest.raises(DataError) as caught:
        read_parallel(path, split_col="split")
    message = str(caught.value)
    assert "column 'split'" in message and "'holdout' (line 3), '' (line 4)" in message
    jsonl = tmp_path / "p.jsonl"  # JSON values are shown as JSON writes them (they read None, True)
    jsonl.write_text('{"source": "a", "target": "b", "split": null}\n{"source": "c", "target": "d", "split": true}\n',
                     encoding="utf-8")  # fmt: skip
    with pytest.raises(DataError, match=r"holds split value\(s\) null \(line 1\), true \(line 2\)"):
        read_parallel(jsonl, split_col="split")
    assert "expected train, dev or test" in message


def test_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("source,target\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"p\.csv has a header but no rows"):
        read_parallel(path)
    with pytest.raises(DataError, match=r"has no rows"):
        read_parallel(write(tmp_path / "p.parquet", ["source", "target"], []))


def test_cell_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"source": ["a", "b"], "target": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1 has list \['a', 'b'\] in column 'source', expected text"):
        read_parallel(path)
    # Every unusable row in one error, the empty ones too (the last type error alone had been said)
    rows = [{"source": "ok", "target": "fine"}, {"source": "a", "target": None}, {"source": ["a"], "target": "x"},
            {"source": "b", "target": True}]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3 has list \['a'\] in column 'source', expected text; line 4 has bool "
                                        r"True in column 'target', expected text; and 1 empty target in column "
                                        r"'target' \(line 2\)$"):  # fmt: skip
        read_parallel(path)


def test_same_column_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", ["source", "target"], [["a", "b"]])
    with pytest.raises(DataError, match="source_col and target_col are both 'source'"):
        read_parallel(path, target_col="source")


def test_unequal_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="sources has 2 sentences but targets has 1"):
        ParallelTexts(sources=["a", "b"], targets=["c"])


def test_a_sentence_that_is_no_string_is_named() -> None:
    with pytest.raises(DataError, match=r"targets\[1\] is NoneType None, expected a string"):
        ParallelTexts(sources=["a", "b"], targets=["c", None])  # type: ignore[list-item]
    pairs = ParallelTexts(sources=(s for s in ["a", "b"]), targets=("c", "d"))  # type: ignore[arg-type]
    assert pairs.sources == ["a", "b"] and pairs.targets == ["c", "d"]


# --- group_split -----------------------------------------------------------------------------------


def corpus(n_groups: int = 300) -> list[str]:
    """Sources where group g is repeated 1 + g % 4 times, with case and spacing variants."""
    sources = []
    for g in range(n_groups):
        variants = [f"sentence {g}.", f"Sentence  {g}.", f" SENTENCE {g}. ", f"sentence\t{g}."]
        sources.extend(variants[: 1 + g % 4])
    return sources


def test_copies_of_a_source_stay_together() -> None:
    sources = corpus()
    splits = group_split(sources, dev_fraction=0.1, test_fraction=0.2, seed=3)
    assert len(splits) == len(sources)
    by_group: dict[str, set[str]] = {}
    for source, split in zip(sources, splits, strict=True):
        by_group.setdefault(normalise_whitespace(source).casefold(), set()).add(split)
    assert len(by_group) == 300
    assert all(len(assigned) == 1 for assigned in by_group.values())
    counts = Counter(splits)
    assert abs(counts["test"] - 0.2 * len(sources)) <= 4  # within one group of the target
    assert abs(counts["dev"] - 0.1 * len(sources)) <= 4


def test_copies_in_another_unicode_form_stay_together_and_a_recorded_scheme_is_kept() -> None:
    """A decomposed source (macOS, scraped text) is the sentence its composed form is, to the tokenizer;
    it had been another group: 65 of 200 café twins were split apart. Scheme 1 splits as before."""
    import unicodedata

    sources = [text for i in range(200) for text in (f"café {i}", unicodedata.normalize("NFD", f"Café {i}"))]
    splits = group_split(sources, dev_fraction=0.1, test_fraction=0.1, seed=0)
    assert all(splits[i] == splits[i + 1] for i in range(0, len(sources), 2))
    assert set(splits) == {"train", "dev", "test"}
    old = group_split(sources, dev_fraction=0.1, test_fraction=0.1, seed=0, scheme=1)
    assert sum(old[i] != old[i + 1] for i in range(0, len(sources), 2)) > 0  # the split a model made before
    composed = [unicodedata.normalize("NFC", text) for text in corpus()]  # text in one form: split as before
    assert group_split(composed, dev_fraction=0.1, test_fraction=0.1, seed=0) == \
        group_split(composed, dev_fraction=0.1, test_fraction=0.1, seed=0, scheme=1)
    with pytest.raises(ValueError, match="scheme=3: a split scheme is 1 to 2"):
        group_split(sources, dev_fraction=0.1, test_fraction=0.1, seed=0, scheme=3)


def test_split_is_seeded_and_deterministic() -> None:
    sources = corpus()
    first = group_split(sources, dev_fraction=0.1, test_fraction=0.1, seed=0)
    assert group_split(list(sources), dev_fraction=0.1, test_fraction=0.1, seed=0) == first
    assert group_split(sources, dev_fraction=0.1, test_fraction=0.1, seed=1) != first
    assert set(first) == {"train", "dev", "test"}


def test_zero_fractions_and_no_rows() -> None:
    assert group_split(["a", "b", "c"], dev_fraction=0.0, test_fraction=0.0, seed=0) == ["train"] * 3
    assert group_split([], dev_fraction=0.1, test_fraction=0.1, seed=0) == []


def test_small_data_gets_one_group_per_split() -> None:
    sources = ["a", "A", "b", "c", "c"]
    for seed in range(20):
        splits = group_split(sources, dev_fraction=0.05, test_fraction=0.05, seed=seed)
        assert set(splits) == {"train", "dev", "test"}
        assert splits[0] == splits[1] and splits[3] == splits[4]
    # Two groups: train keeps one, and cannot give both dev and test one.
    two = group_split(["a", "b"], dev_fraction=0.4, test_fraction=0.4, seed=0)
    assert "train" in two and len(set(two)) == 2
    # One group, however large the held-out fractions, is trained on.
    assert group_split(["a", "a"], dev_fraction=0.3, test_fraction=0.6, seed=0) == ["train", "train"]


def test_a_dominant_group_does_not_empty_train() -> None:
    sources = ["x"] * 10 + ["y", "z", "w"]
    for seed in range(10):
        splits = group_split(sources, dev_fraction=0.45, test_fraction=0.45, seed=seed)
        assert set(splits) == {"train", "dev", "test"}


@pytest.mark.parametrize(
    ("dev", "test", "message"),
    [
        (-0.1, 0.1, r"dev_fraction=-0\.1 must be in \[0, 1\)"),
        (0.1, 1.0, r"test_fraction=1\.0 must be in \[0, 1\)"),
        (float("nan"), 0.1, r"dev_fraction=nan must be in"),
        (0.5, 0.5, r"dev_fraction \+ test_fraction = 1\.0 must be below 1"),
    ],
)
def test_bad_fractions_name_the_field(dev: float, test: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        group_split(["a", "b", "c"], dev_fraction=dev, test_fraction=test, seed=0)
