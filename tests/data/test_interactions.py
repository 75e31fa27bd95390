"""Interaction logs: reading every format, errors a user can act on, item features, and leak-free splits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attend.data.interactions import (
    CtrSplit,
    Interactions,
    ctr_split,
    item_counts,
    make_interactions,
    read_interactions,
    read_item_features,
    sequential_split,
)
from attend.data.readers import DataError

# user, item, timestamp, rating; u1's three rows at t=5 must keep this order.
LOG = [
    ("u2", "b", "3", "5"),
    ("u1", "c", "5", "4"),
    ("u1", "a", "5", "2"),
    ("u1", "b", "5", "5"),
    ("u1", "d", "1", "3"),
    ("u10", "a", "9", "1"),
]


def write_log(path: Path, rows: list[tuple[str, ...]], header: str = "user,item,timestamp,rating", sep: str = ","
              ) -> Path:  # fmt: skip
    lines = [header.replace(",", sep), *(sep.join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ids(data: Interactions) -> list[tuple[str, str]]:
    return [(data.user_ids[u], data.item_ids[i]) for u, i in zip(data.users, data.items, strict=True)]


# --- reading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_every_format_reads_the_same(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"log.{fmt}"
    if fmt in ("csv", "tsv"):
        write_log(path, LOG, sep="," if fmt == "csv" else "\t")
    elif fmt == "jsonl":
        # Numbers as JSON numbers: a time or rating need not be a string.
        rows = [{"user": u, "item": i, "timestamp": float(t), "rating": int(r)} for u, i, t, r in LOG]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*LOG, strict=True))
        table = pa.table({"user": columns[0], "item": columns[1], "timestamp": [float(t) for t in columns[2]],
                          "rating": [float(r) for r in columns[3]]})  # fmt: skip
        pq.write_table(table, path)
    data = read_interactions(path, rating_col="rating")
    # Ids that are not all integers sort as strings; indices do not follow the file order.
    assert data.user_ids == ["u1", "u10", "u2"]
    assert data.item_ids == ["", "a", "b", "c", "d"]
    assert data.n_users == 3 and data.n_items == 4 and len(data) == 6
    # Stable by (user, time): u1's t=5 rows keep the file's order c, a, b after d (t=1).
    assert ids(data) == [("u1", "d"), ("u1", "c"), ("u1", "a"), ("u1", "b"), ("u10", "a"), ("u2", "b")]
    assert data.times.tolist() == [1.0, 5.0, 5.0, 5.0, 9.0, 3.0]
    assert data.ratings is not None and data.ratings.tolist() == [3.0, 4.0, 2.0, 5.0, 1.0, 5.0]
    assert data.users.dtype == np.int64 and data.items.dtype == np.int64
    assert data.times.dtype == np.float64 and data.ratings.dtype == np.float32
    assert data.source == str(path) and data.notes == []


def test_numeric_ids_sort_numerically_and_items_start_at_one(tmp_path: Path) -> None:
    path = write_log(tmp_path / "log.csv", [("10", "20", "1"), ("2", "3", "1"), ("1", "100", "2")],
                     header="user,item,timestamp")  # fmt: skip
    data = read_interactions(path)
    assert data.user_ids == ["1", "2", "10"]
    assert data.item_ids == ["", "3", "20", "100"]
    assert data.ratings is None
    assert data.item_index() == {"3": 1, "20": 2, "100": 3}
    assert data.user_index() == {"1": 0, "2": 1, "10": 2}
    assert [s.tolist() for s in data.sequences()] == [[3], [1], [2]]


def test_iso_times_and_custom_columns(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "who,what,when\n"
        "a,x,2024-03-01T10:00:00+01:00\n"  # 09:00 UTC
        "a,y,2024-03-01T09:30:00Z\n"
        "a,z,2024-03-01\n"  # a date without a zone is midnight UTC
        "a,w,1709283600\n",  # 2024-03-01T09:00:00Z in seconds: ties with x, after it in the file
        encoding="utf-8",
    )
    data = read_interactions(path, user_col="who", item_col="what", time_col="when")
    assert [data.item_ids[i] for i in data.items] == ["z", "x", "w", "y"]
    expected = datetime(2024, 3, 1, 9, tzinfo=UTC).timestamp()
    assert data.times[1] == data.times[2] == expected


def test_parquet_timestamp_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    moments = [datetime(2024, 1, 2, 3, 4, 5), datetime(2023, 1, 1)]  # naive: read as UTC
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user": [7, 7], "item": [1, 2], "timestamp": pa.array(moments, pa.timestamp("s"))}), path)
    data = read_interactions(path)
    assert data.user_ids == ["7"] and [data.item_ids[i] for i in data.items] == ["2", "1"]
    assert data.times.tolist() == [moment.replace(tzinfo=UTC).timestamp() for moment in reversed(moments)]


def test_without_time_column_file_order_is_time(tmp_path: Path) -> None:
    path = write_log(tmp_path / "log.csv", [("a", "y"), ("a", "x")], header="user,item")
    data = read_interactions(path, time_col=None)
    assert [data.item_ids[i] for i in data.sequences()[0]] == ["y", "x"]


def test_exact_duplicates_dropped_and_noted(tmp_path: Path) -> None:
    first, later, other_rating = ("a", "x", "1", "5"), ("a", "x", "2", "5"), ("a", "x", "1", "4")
    rows = [first, first, later, other_rating, first]
    data = read_interactions(write_log(tmp_path / "log.csv", rows), rating_col="rating")
    assert len(data) == 3  # a later time or another rating is a distinct event
    assert data.notes[0] == "dropped 2 duplicate rows (same user, item, time and rating; first: line 3)"
    # The same event rated twice, differently: both kept, and said (they had been kept in silence).
    assert data.notes[1] == ("1 row with another rating than an earlier row of the same user, item and time (first: "
                             "line 5): kept, each as an event of its own")  # fmt: skip
    # Without ratings they are one event (the note had said "and rating" of a rating never read).
    unrated = read_interactions(tmp_path / "log.csv")
    assert len(unrated) == 2 and unrated.notes == [
        "its 'rating' column is not read (no rating column was asked for: --rating-col reads one, for a model that "
        "uses ratings)",  # its values, whatever they hold, are not checked either: said, not dropped in silence
        "dropped 3 duplicate rows (same user, item and time; first: line 3)",
    ]


def test_a_column_of_image_paths_is_left_out_and_refused_when_chosen(tmp_path: Path) -> None:
    """Read as text, the paths' words were the items' MiniLM "titles", and named them in explanations."""
    from attend.training.tasks.recommendation import _select

    path = tmp_path / "items.csv"
    path.write_text("item,title,img\na,Alpha,/data/img/a.png\nb,Beta,https://x.org/b.JPG?s=2\nc,Gamma,\n",
                    encoding="utf-8")  # fmt: skip
    features = read_item_features(path, {"a": 1, "b": 2, "c": 3})
    assert features.columns == {"title": "text"} and list(features.left_out) == ["img"]
    assert any("column 'img' holds file paths ('/data/img/a.png', ...)" in note and note.endswith("left out")
               for note in features.notes)  # fmt: skip
    with pytest.raises(DataError, match=r"attend reads no image or audio from a path; .* --feature-types img=text"):
        _select(features, ["title", "img"])
    assert _select(features, ["title"]).columns == {"title": "text"}  # type: ignore[union-attr]
    as_text = read_item_features(path, {"a": 1, "b": 2, "c": 3}, types={"img": "text"})
    assert as_text.columns == {"title": "text", "img": "text"} and not as_text.left_out


@pytest.mark.parametrize("types", [None, {"notes": "numeric"}, {"notes": "categorical"}])
def test_a_column_empty_in_every_row_is_left_out_and_refused_when_chosen(tmp_path: Path, types: dict | None) -> None:
    """Before the titles, it had named every item by its empty cell; chosen alone, the model had trained
    on nothing; a type given to it had been taken (numeric: mean 0, std 1)."""
    from attend.training.tasks.recommendation import _select, item_names

    path = tmp_path / "items.csv"
    path.write_text("item,notes,title\na,,Alpha\nb, ,Beta\nc,,Gamma\n", encoding="utf-8")
    features = read_item_features(path, {"a": 1, "b": 2, "c": 3}, types=types)
    assert features.columns == {"title": "text"} and list(features.left_out) == ["notes"]
    assert "column 'notes' of items.csv is empty in every row; left out" in features.notes
    assert item_names(features, ["<pad>", "a", "b", "c"]) == {"a": "Alpha", "b": "Beta", "c": "Gamma"}
    with pytest.raises(DataError, match=r"features: column 'notes' of items\.csv is empty in every row"):
        _select(features, ["notes"])
    # a file of other ids: no column is called empty for it (the caller says no row names a log item)
    assert not read_item_features(path, {"x": 1, "y": 2}, types=types).left_out


def test_the_notes_say_which_read_columns_features_leaves_unused(tmp_path: Path) -> None:
    """"feature columns read as" named title and price beside the chosen genre, as if all fed the model."""
    from attend.training.tasks.recommendation import _select

    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"item": i, "title": f"T {i}", "genre": "g" if i % 2 else "h", "price": i,
                                        "emb": [0.1 * i, 0.2]}) + "\n" for i in range(1, 4)),
                    encoding="utf-8")  # fmt: skip
    chosen = _select(read_item_features(path, {"1": 1, "2": 2, "3": 3}), ["genre"])
    assert chosen is not None and list(chosen.columns) == ["genre"]
    assert chosen.notes[-1] == "feature columns not used (not in --features): emb, price, title"
    element = _select(read_item_features(path, {"1": 1, "2": 2, "3": 3}), ["emb[0]"])
    assert element is not None and element.notes[-1].endswith(": emb[1], genre, price, title")  # not all of emb
    everything = _select(read_item_features(path, {"1": 1, "2": 2, "3": 3}), ["genre", "title", "price", "emb"])
    assert everything is not None and not any("not used" in note for note in everything.notes)


def test_one_column_named_for_two_roles_is_refused(tmp_path: Path) -> None:
    """--user-col item --item-col item trained on and scored HR@10 = 1.0 on the ids themselves."""
    (tmp_path / "log.csv").write_text("user,item,timestamp\nu,a,1\nu,b,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"user_col and item_col are both 'item': each names a column of its own"):
        read_interactions(tmp_path / "log.csv", user_col="item", item_col="item")
    with pytest.raises(DataError, match=r"time_col and rating_col are both 'timestamp'"):
        read_interactions(tmp_path / "log.csv", rating_col="timestamp")


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("", {}, r"log\.csv is empty"),
        ("user,item,timestamp\n", {}, r"log\.csv has a header but no rows"),
        ("usr,item,timestamp\na,x,1\n", {}, r"no column 'user' \(columns: usr, item, timestamp\)"),
        ("user,item,timestamp\na,x,1\n", {"rating_col": "stars"}, r"no column 'stars' \(columns: user, item, time"),
        ("user,item,timestamp\na,x,1\n,y,2\n", {}, r"log\.csv: line 3 has an empty 'user'"),
        ("user,item,timestamp\na,x,1\na,  ,2\n", {}, r"line 3 has an empty 'item'"),
        ("user,item,timestamp\na,x,1\na,y,yesterday\n", {}, r"line 3 has 'timestamp' 'yesterday', which is neither"),
        ("user,item,timestamp\na,x,\n", {}, r"line 2 has 'timestamp' '', which is neither a number .* nor an ISO-8601"),
        ("user,item,timestamp\na,x,2024-13-45\n", {}, r"line 2 has 'timestamp' '2024-13-45'"),
        ("user,item,timestamp\na,x,nan\n", {}, r"line 2 has 'timestamp' 'nan'"),
        ("user,item,timestamp,rating\na,x,1,4\na,y,2,five\n", {"rating_col": "rating"},
         r"log\.csv: line 3 has 'rating' 'five', which is not a number"),
        ("user,item,timestamp,rating\na,x,1,\n", {"rating_col": "rating"}, r"line 2 has 'rating' ''"),
        # Every unusable row in one error (each had taken a run of its own).
        ("user,item,timestamp,rating\na,x,1,4\n,y,2,5\na,z,soon,5\nb,x,3,five\n", {"rating_col": "rating"},
         r"log\.csv: 3 rows cannot be used \(mend or remove them\): line 3 has an empty 'user'; line 4 has "
         r"'timestamp' 'soon', which is neither .*; line 5 has 'rating' 'five', which is not a number$"),
    ],
)
def test_errors_name_file_line_and_value(tmp_path: Path, content: str, kwargs: dict, message: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_interactions(path, **kwargs)


def test_jsonl_error_line_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"user": "a", "item": "x", "timestamp": 1}\n\n{"user": "a", "item": null, "timestamp": 2}\n')
    with pytest.raises(DataError, match=r"log\.jsonl: line 3 has an empty 'item'"):
        read_interactions(path)
    path.write_text('{"user": "a", "item": "x", "timestamp": 1, "rating": null}\n')
    with pytest.raises(DataError, match=r"line 1 has 'rating' null, which is not a number"):  # not Python's None
        read_interactions(path, rating_col="rating")
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_interactions(write_log(tmp_path / "log.txt", LOG))


def test_make_interactions_refuses_nothing() -> None:
    with pytest.raises(DataError, match="no interactions"):
        make_interactions([], [], [], source="empty")


def test_item_counts() -> None:
    counts = item_counts([np.array([1, 2, 2]), np.array([], dtype=np.int64), np.array([3, 0])], 4)
    assert counts.tolist() == [0, 1, 2, 1, 0]  # padding (0) never counts
    assert item_counts([], 2).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match=r"0\.\.2"):
        item_counts([np.array([3])], 2)


# --- item features -----------------------------------------------------------------------------------


def test_item_features_inference_alignment_and_notes(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "item,title,genres,price,brand\n"
        "b,Beta,comedy|drama,2.5,acme\n"
        "a,Alpha,drama,,acme\n"
        "zz,Not in log,horror,1,other\n"  # ignored
        "a,Alpha again,war,9,other\n",  # a repeated row: the first wins
        encoding="utf-8",
    )
    items = {"a": 1, "b": 2, "c": 3}
    # A value per item is text however small the catalogue (a title is not a category); brands repeat.
    features = read_item_features(path, items)
    assert features.columns == {"title": "text", "brand": "categorical", "genres": "categorical", "price": "numeric"}
    assert features.text["title"] == ["", "Alpha", "Beta", ""]
    assert features.categorical["brand"] == [[], ["acme"], ["acme"], []]
    assert features.categorical["genres"] == [[], ["drama"], ["comedy", "drama"], []]
    price = features.numeric["price"]
    assert price.dtype == np.float32 and np.isnan(price[[0, 1, 3]]).all() and price[2] == 2.5
    assert features.missing == 1
    assert any("ignored rows of 1 item(s) that are not in the log (e.g. 'zz')" in note for note in features.notes)
    assert any("repeated" in note and "first repeat: line 5, item 'a'" in note for note in features.notes)
    assert any("1 item(s) of the log have no row in items.csv" in note for note in features.notes)


def test_nan_in_a_numeric_feature_is_a_missing_value(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"  # as pandas writes a missing price: NaN in JSONL, "nan" in a CSV cell
    rows = [{"item": "a", "price": 2.0}, {"item": "b", "price": float("nan")}, {"item": "c", "price": "nan"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    features = read_item_features(path, {"a": 1, "b": 2, "c": 3})
    price = features.numeric["price"]
    assert features.columns == {"price": "numeric"} and price[1] == 2.0 and np.isnan(price[[2, 3]]).all()


def test_few_distinct_values_are_categorical_many_are_text(tmp_path: Path) -> None:
    n = 200
    rows = [{"item": str(i), "brand": f"b{i % 7}", "blurb": f"a unique sentence number {i}"} for i in range(1, n + 1)]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    features = read_item_features(path, {str(i): i for i in range(1, n + 1)})
    assert set(features.categorical) == {"brand"} and set(features.text) == {"blurb"}
    assert features.categorical["brand"][8] == ["b1"]
    # An override wins over inference: even a numeric-looking column can be categorical.
    features = read_item_features(path, {"1": 1}, types={"blurb": "categorical"})
    assert features.categorical["blurb"][1] == ["a unique sentence number 1"]


def test_one_title_with_a_bar_leaves_titles_text_and_genres_stay_categorical(tmp_path: Path) -> None:
    """One title "Live | Remastered" turned the whole title column categorical: every title vanished."""
    n = 40
    rows = [{"item": str(i), "title": f"Album number {i}" + (" | Remastered" if i == 7 else ""),
             "genres": ["rock|pop", "jazz", "pop|folk", "rock"][i % 4]} for i in range(1, n + 1)]  # fmt: skip
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    features = read_item_features(path, {str(i): i for i in range(1, n + 1)})
    assert features.columns == {"title": "text", "genres": "categorical"}
    assert features.text["title"][7] == "Album number 7 | Remastered"
    assert features.categorical["genres"][2] == ["pop", "folk"]


def test_header_names_are_read_without_the_spaces_around_them(tmp_path: Path) -> None:
    """" genre " had been read as such, while --features and --feature-types, which strip what is
    typed, had no spelling that reached it."""
    from attend.training.tasks.recommendation import _select

    path = tmp_path / "items.csv"
    path.write_text(" item , genre ,price\na,rock,3\nb,pop,4\nc,rock,5\n", encoding="utf-8")
    features = read_item_features(path, {"a": 1, "b": 2, "c": 3}, item_col=" item", types={"genre": "categorical"})
    assert features.columns == {"genre": "categorical", "price": "numeric"}
    assert features.categorical["genre"][2] == ["pop"]
    assert _select(features, ["genre"]).columns == {"genre": "categorical"}  # type: ignore[union-attr]
    assert any("2 column name(s) had spaces around them, removed (e.g. ' item ' read as 'item')" in note
               for note in features.notes)  # fmt: skip
    path.write_text("item,genre,,  ,price\na,rock,,,3\n", encoding="utf-8")  # Excel's unnamed columns: left out
    assert set(read_item_features(path, {"a": 1}).columns) == {"genre", "price"}
    path.write_text("item,genre, genre\na,rock,pop\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"columns 'genre' and ' genre' are one name once the spaces around it are"):
        read_item_features(path, {"a": 1})


@pytest.mark.parametrize("cell", [[[0.1, 0.2], [0.3, 0.4]], {"r": 1, "g": 2}, ["rock", ["pop"]]])
def test_a_jsonl_cell_of_nested_lists_or_an_object_is_refused_at_its_line(tmp_path: Path, cell: Any) -> None:
    """Patch embeddings as a list of lists had become categories named "[0.1, 0.2]", in silence."""
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"item": "a", "emb": [0.5, 0.5]}) + "\n" + json.dumps({"item": "b", "emb": cell}) + "\n",
                    encoding="utf-8")  # fmt: skip
    with pytest.raises(DataError, match=r"items\.jsonl: line 2 has 'emb' .*, a nested list or an object; a feature "
                                        r"cell holds a value, a list of categories, or a flat list of numbers"):
        read_item_features(path, {"a": 1, "b": 2})


def test_a_column_of_numbers_with_a_few_others_is_said_when_it_becomes_text(tmp_path: Path) -> None:
    """A price written "1,000" among plain ones had turned the column into text without a word."""
    path = tmp_path / "items.csv"
    path.write_text('item,price,title\na,3,Alpha\nb,"1,000",Beta\nc,5,Gamma\nd,7,Delta\n', encoding="utf-8")
    features = read_item_features(path, {"a": 1, "b": 2, "c": 3, "d": 4})
    assert features.columns["price"] == "text"
    assert any("column 'price' is read as text, though most of its values are numbers: line 3 has '1,000', which "
               "is not one; write such values as plain numbers and give --feature-types price=numeric" in note
               for note in features.notes)  # fmt: skip
    assert not any("'title' is read as" in note for note in features.notes)  # titles: no number among them


@pytest.mark.parametrize(
    ("content", "types", "message"),
    [
        # float32 had made 1e40 infinite and its column's statistics NaN: training stopped blaming the lr
        ("item,price\na,1\nb,1e40\n", None, r"line 3 has 'price' '1e40', beyond the range of the model's 32-bit"),
        ('{"item": "a", "img": [1, 2]}\n{"item": "b", "img": [1e39, 2]}\n', None,
         r"line 2 has 1e\+39 as img\[0\], beyond the range"),
        ("item,title\na,x\n", {"title": "image"}, r"feature column 'title': unknown type 'image'; choose one of text"),
        ("item,title\na,x\n", {"genre": "categorical"}, r"column 'genre' .* no such column \(columns: item, title\)"),
        ("id,title\na,x\n", None, r"items\.csv has no column 'item' \(columns: id, title\)"),
        ("item,price\na,1\nb,cheap\n", {"price": "numeric"}, r"items\.csv: line 3 has 'price' 'cheap', which is not a"),
        ("item,title\na,x\n,y\n", None, r"line 3 has an empty 'item'"),
        ("item,title\n", None, r"header but no rows"),
    ],
)
def test_item_feature_errors(tmp_path: Path, content: str, types: dict | None, message: str) -> None:
    path = tmp_path / ("items.jsonl" if content.startswith("{") else "items.csv")
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_item_features(path, {"a": 1, "b": 2}, types=types)


# --- sequential split --------------------------------------------------------------------------------


def log(rows: list[tuple[str, str, float]], ratings: list[float] | None = None) -> Interactions:
    return make_interactions([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], ratings)


def test_sequential_split_holds_out_each_users_last_items() -> None:
    data = log([
        ("u", "i1", 1), ("u", "i2", 2), ("u", "i3", 3), ("u", "i4", 3),  # i3/i4 tie: file order, i4 last
        ("v", "i1", 5), ("v", "i2", 6),  # fewer than 3: train-only
        ("w", "i3", 1), ("w", "i2", 1), ("w", "i1", 1),  # all tied: file order
    ])  # fmt: skip
    split = sequential_split(data)
    index = data.item_index()
    u, v, w = (data.user_index()[name] for name in "uvw")
    assert split.train[u].tolist() == [index["i1"], index["i2"]]
    assert split.dev_target[u] == index["i3"] and split.test_target[u] == index["i4"]
    assert split.train[v].tolist() == [index["i1"], index["i2"]]
    assert split.dev_target[v] == split.test_target[v] == 0
    assert split.train[w].tolist() == [index["i3"]]
    assert (split.dev_target[w], split.test_target[w]) == (index["i2"], index["i1"])
    assert split.history(u, "dev").tolist() == [index["i1"], index["i2"]]
    assert split.history(u, "test").tolist() == [index["i1"], index["i2"], index["i3"]]
    assert split.history(v, "test").tolist() == [index["i1"], index["i2"]]
    assert split.users("test").tolist() == [u, w] and split.targets("dev") is split.dev_target
    with pytest.raises(ValueError, match="'dev' or 'test'"):
        split.history(u, "train")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 9), st.integers(0, 4)), min_size=1, max_size=80))
def test_sequential_split_never_trains_on_a_later_event(rows: list[tuple[int, int, int]]) -> None:
    data = log([(str(u), str(i), float(t)) for u, i, t in rows])
    split = sequential_split(data)
    for user, sequence in enumerate(data.sequences()):
        times = data.times[data.users == user]
        if len(sequence) < 3:
            assert split.train[user].tolist() == sequence.tolist() and split.test_target[user] == 0
            continue
        # Train, then dev, then test is exactly the user's stable order: no held-out event precedes a train one.
        assert [*split.train[user].tolist(), split.dev_target[user], split.test_target[user]] == sequence.tolist()
        assert (np.diff(times) >= 0).all()


# --- CTR split -----------------------------------------------------------------------------------------


def test_ctr_split_sizes_labels_and_histories() -> None:
    # One user with 10 events (test round(2.0)=2, dev round(1.0)=1), one with 3 (test 1, dev round(0.3)=0,
    # raised to 1: a user with 3 events or more gives dev one).
    rows = [("a", f"i{t}", float(t)) for t in range(10)] + [("b", "i1", 0.0), ("b", "i2", 1.0), ("b", "i3", 2.0)]
    ratings = [5, 1, 4, 3, 5, 2, 4, 4, 1, 5, 4, 4, 1]
    split = ctr_split(log(rows, ratings))
    assert isinstance(split, CtrSplit) and split.threshold == 4.0
    assert (len(split.train), len(split.dev), len(split.test)) == (7 + 1, 1 + 1, 2 + 1)
    assert split.test.labels.tolist() == [0.0, 1.0, 0.0] and split.test.labels.dtype == np.float32
    assert split.dev.labels.tolist() == [1.0, 1.0]
    a_positives = [f"i{t}" for t in (0, 2, 4, 6, 7, 9)]
    data = log(rows, ratings)
    assert [data.item_ids[i] for i in split.positives[0]] == a_positives
    # The last event of a (i9, positive) has the five earlier positives as its history, not itself.
    last = len(split.test) - 2
    assert split.test.n_before[last] == 5
    assert [data.item_ids[i] for i in split.history(split.test, last)] == a_positives[:5]
    assert split.train.n_before.tolist()[:3] == [0, 1, 1]


def test_ctr_split_needs_ratings() -> None:
    with pytest.raises(DataError, match="no rating column"):
        ctr_split(log([("a", "x", 1.0)]))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(1, 8), st.integers(0, 5), st.integers(1, 5)), min_size=1,
             max_size=80),
    st.sampled_from([3.0, 4.0]),
)  # fmt: skip
def test_ctr_histories_hold_only_earlier_positives(rows: list[tuple[int, int, int, int]], threshold: float) -> None:
    data = log([(str(u), str(i), float(t)) for u, i, t, _ in rows], [float(r) for *_, r in rows])
    split = ctr_split(data, threshold)
    assert len(split.train) + len(split.dev) + len(split.test) == len(data)
    labels = data.ratings >= threshold
    # Walk the log in its stable order and rebuild each event's history by hand.
    seen: dict[int, list[int]] = {}
    expected_before = []
    for user, item, positive in zip(data.users.tolist(), data.items.tolist(), labels.tolist(), strict=True):
        expected_before.append(len(seen.get(user, [])))
        if positive:
            seen.setdefault(user, []).append(item)
    for user in range(data.n_users):
        assert split.positives[user].tolist() == seen.get(user, [])
    parts = (split.train, split.dev, split.test)
    for user in range(data.n_users):
        counts = [int((events.users == user).sum()) for events in parts]
        total = sum(counts)
        assert counts[2] == max(1, round(0.2 * total))
        assert counts[1] == max(1 if total >= 3 else 0, round(0.1 * total))
        # Train, dev and test are consecutive runs of the user's stable order, so their n_before,
        # put back together, are the user's running count of earlier positives.
        n_before = np.concatenate([events.n_before[events.users == user] for events in parts])
        assert n_before.tolist() == [b for b, u in zip(expected_before, data.users.tolist(), strict=True) if u == user]


# --- ids and times as users write them ------------------------------------------------------------------


def test_ids_equal_as_numbers_sort_the_same_under_every_hash_seed(tmp_path: Path) -> None:
    """Before: "1", "01" and "001" tied on int() and kept the set's hash order, so two runs on one file
    numbered the items differently (other metrics, and --resume refused its own data)."""
    import os
    import subprocess
    import sys

    path = write_log(tmp_path / "log.csv", [("1", "1", "1"), ("01", "01", "2"), ("001", "001", "3"), ("1", "2", "4"),
                                            ("01", "02", "5")], header="user,item,timestamp")  # fmt: skip
    code = f"from attend.data.interactions import read_interactions as r; print(r({str(path)!r}).item_ids)"
    orders = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip()
              for seed in range(1, 7)}  # fmt: skip
    assert orders == {"['', '001', '01', '1', '02', '2']"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"user": NaN, "item": "y", "timestamp": 2}', r"line 2 has an empty 'user'"),
        ('{"user": "b", "item": NaN, "timestamp": 2}', r"line 2 has an empty 'item'"),
        ('{"user": true, "item": "y", "timestamp": 2}', r"line 2 has 'user' True, which is not an id"),
        ('{"user": "b", "item": [1, 2], "timestamp": 2}', r"line 2 has 'item' \[1, 2\], which is not an id"),
        ('{"user": "b", "item": "y"}', r"line 2 has no 'timestamp'"),
        ('{"item": "y", "timestamp": 2}', r"line 2 has no 'user'"),
    ],
)
def test_a_jsonl_id_that_is_missing_or_no_id_is_refused(tmp_path: Path, line: str, message: str) -> None:
    """Before: NaN became a user or item called "nan", true one called "True", and a missing time
    read as the value None."""
    path = tmp_path / "log.jsonl"
    path.write_text('{"user": "a", "item": "x", "timestamp": 1}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_interactions(path)


def test_spaces_around_ids_are_removed_and_counted(tmp_path: Path) -> None:
    path = write_log(tmp_path / "log.csv", [("a", "x ", "1"), ("a", " x", "2"), (" b", "x", "3")],
                     header="user,item,timestamp")  # fmt: skip
    data = read_interactions(path)
    assert data.user_ids == ["a", "b"] and data.item_ids == ["", "x"]
    assert any(note.startswith("3 id(s) had spaces around them, removed") for note in data.notes), data.notes


def test_a_line_of_spaces_is_a_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\na,x,1\n   \nb,y,2\n", encoding="utf-8")
    assert read_interactions(path).user_ids == ["a", "b"]


def test_epoch_seconds_and_iso_dates_mix_on_one_timeline(tmp_path: Path) -> None:
    rows = [("a", "x", "2024-01-02T00:00:00Z"), ("a", "y", "1704067200"), ("a", "z", "2024-01-01T12:00:00+00:00")]
    path = write_log(tmp_path / "log.csv", rows, header="user,item,timestamp")
    data = read_interactions(path)
    assert [data.item_ids[i] for i in data.items] == ["y", "z", "x"] and not data.notes


def test_a_number_column_of_yyyymmdd_dates_reads_as_dates(tmp_path: Path) -> None:
    """Before: 20240102 was 20,240,102 seconds (August 1970), so beside ISO dates it sorted first."""
    path = write_log(tmp_path / "log.csv", [("a", "x", "2024-01-05"), ("a", "y", "20240102"), ("a", "z", "20240103")],
                     header="user,item,timestamp")  # fmt: skip
    data = read_interactions(path)
    assert [data.item_ids[i] for i in data.items] == ["y", "z", "x"]
    assert data.times[0] == datetime(2024, 1, 2, tzinfo=UTC).timestamp()
    assert any("as YYYYMMDD dates" in note for note in data.notes), data.notes


@pytest.mark.parametrize(
    ("times", "message"),
    [
        (["2024-01-05", "1704412800000"], r"'timestamp' mixes what look like epoch milliseconds \(line 3: "
                                          r"'1704412800000'\) and dates \(line 2: '2024-01-05'\)"),
        (["1704412800", "1704412800000"], r"mixes what look like epoch milliseconds \(line 3.*and epoch seconds "
                                          r"\(line 2"),
        (["1704412800", "20240102"], r"mixes YYYYMMDD dates \(line 3: '20240102'\) and epoch seconds \(line 2"),
        (["20240102", "1704412800000"], r"mixes what look like epoch milliseconds \(line 3.*and dates \(line 2: "
                                        r"'20240102'\)"),
        # a spreadsheet's day number and a row counter among dates had sorted first in silence
        (["2021-01-01T00:00:00", "44198"], r"mixes dates \(line 2: '2021-01-01T00:00:00'\) and numbers that are no "
                                           r"time after 1973 \(line 3: '44198': a counter"),
        (["1704412800", "7"], r"mixes epoch seconds \(line 2: '1704412800'\) and numbers that are no time"),
    ],
)
def test_a_time_column_mixing_units_is_refused(tmp_path: Path, times: list[str], message: str) -> None:
    """Before: milliseconds read as seconds (the year 56000) and sorted after every other time, so they
    became every user's test item."""
    path = write_log(tmp_path / "log.csv", [("a", f"i{k}", t) for k, t in enumerate(times)],
                     header="user,item,timestamp")  # fmt: skip
    with pytest.raises(DataError, match=message):
        read_interactions(path)


def test_a_counter_that_reads_as_a_date_somewhere_is_a_counter(tmp_path: Path) -> None:
    """Small numbers alone, one of which happens to read as YYYYMMDD, are numbers, as they were."""
    path = write_log(tmp_path / "log.csv", [("a", "x", "1000"), ("a", "y", "5000"), ("a", "z", "20050315"),
                                            ("a", "w", "20100000")], header="user,item,timestamp")  # fmt: skip
    data = read_interactions(path)
    assert [data.item_ids[i] for i in data.items] == ["x", "y", "z", "w"]


def test_milliseconds_alone_keep_their_order(tmp_path: Path) -> None:
    path = write_log(tmp_path / "log.csv", [("a", "x", "1704412800500"), ("a", "y", "1704412800000")],
                     header="user,item,timestamp")  # fmt: skip
    data = read_interactions(path)
    assert [data.item_ids[i] for i in data.items] == ["y", "x"]


def test_a_column_of_number_lists_is_a_vector_of_numeric_columns(tmp_path: Path) -> None:
    """Before: each float of an image embedding became a category token."""
    path = tmp_path / "items.jsonl"
    rows = [{"item": "a", "img": [0.5, 1.0, 2.0], "price": "N/A"}, {"item": "b", "img": None, "price": "3"},
            {"item": "c", "img": [1, 2, 3], "price": "null"}]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    features = read_item_features(path, {"a": 1, "b": 2, "c": 3})
    assert sorted(features.numeric) == ["img[0]", "img[1]", "img[2]", "price"] and not features.categorical
    assert features.numeric["img[1]"][1] == 1.0 and np.isnan(features.numeric["img[1]"][2])
    assert features.numeric["img[2]"][3] == 3.0
    price = features.numeric["price"]  # N/A and null are missing, as pandas reads them: the column stays numeric
    assert np.isnan(price[[1, 3]]).all() and price[2] == 3.0
    assert any("img a vector of 3 numbers" in note and "price numeric" in note for note in features.notes)
    holey = tmp_path / "holey.jsonl"  # a null element is a missing one, not a reason to read categories
    holey.write_text('{"item": "a", "img": [1, null]}\n{"item": "b", "img": [2, 3]}\n', encoding="utf-8")
    read = read_item_features(holey, {"a": 1, "b": 2})
    assert np.isnan(read.numeric["img[1]"][1]) and read.numeric["img[1]"][2] == 3.0 and not read.categorical
    clash = tmp_path / "clash.jsonl"
    clash.write_text('{"item": "a", "img": [1, 2], "img[0]": 5}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"the vector column 'img' reads as columns img\[0\] ... img\[1\], but the "
                                        r"file has a column 'img\[0\]' too"):  # fmt: skip
        read_item_features(clash, {"a": 1})
    ragged = tmp_path / "ragged.jsonl"
    ragged.write_text('{"item": "a", "img": [1, 2]}\n{"item": "b", "img": [1]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"ragged\.jsonl: line 2 has 1 numbers in 'img' where other rows have 2"):
        read_item_features(ragged, {"a": 1, "b": 2})
    # One bad cell among the vectors is named; before, the whole column was read as ~1,500 categories
    # (a bad element, a cell that is no list), or an inf was kept until the loss became non-finite.
    items = {name: i + 1 for i, name in enumerate("abcd")}
    for bad, message in (('[1, "0.5x"]', r"line 3 has '0\.5x' as img\[1\], which is not a number"),
                         ("[1, 2, 3]", r"line 3 has 3 numbers in 'img' where other rows have 2"),  # named line 1
                         ("[[1, 2], [3, 4]]", r"line 3 has a list as img\[0\], where the other rows hold lists of 2 "
                                              r"numbers"),  # "has 2 numbers"
                         ('"not a list"', r"line 3 has 'img' 'not a list', where the other rows hold lists of 2 "
                                          r"numbers"),
                         ("[1, Infinity]", r"line 3 has inf as img\[1\], which is not a finite number")):  # fmt: skip
        one_bad = tmp_path / "one_bad.jsonl"
        one_bad.write_text("".join(f'{{"item": "{name}", "img": {bad if name == "c" else "[1, 2]"}}}\n'
                                   for name in "abcd"), encoding="utf-8")  # fmt: skip
        with pytest.raises(DataError, match=message):
            read_item_features(one_bad, items)
        with pytest.raises(DataError, match=message):  # forced numeric: the same line, not line 1
            read_item_features(one_bad, items, types={"img": "numeric"})
    nan = tmp_path / "nan.jsonl"  # NaN, however written, is a missing element
    nan.write_text('{"item": "a", "img": [1, NaN]}\n{"item": "b", "img": [2, "nan"]}\n', encoding="utf-8")
    read = read_item_features(nan, {"a": 1, "b": 2})
    assert np.isnan(read.numeric["img[1]"][1:]).all() and read.numeric["img[0]"][2] == 2.0


def test_the_features_file_names_its_item_column_as_the_log_does(tmp_path: Path) -> None:
    """Before: only a column named 'item' was read, and the error said to use --item-col, already given."""
    path = tmp_path / "items.csv"
    path.write_text("category,sku,price\nshoes,A1,3\nbags,B2,4\n", encoding="utf-8")
    features = read_item_features(path, {"A1": 1, "B2": 2}, item_col="sku")
    assert features.text["category"][1:] == ["shoes", "bags"] and features.numeric["price"][2] == 4.0
    with pytest.raises(DataError, match=r"no column 'code' \(columns: category, sku, price\); name its item column as "
                                        r"the log's \('code'\) or 'item'"):  # fmt: skip
        read_item_features(path, {"A1": 1}, item_col="code")
