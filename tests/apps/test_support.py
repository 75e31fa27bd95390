"""`attend support`: FAQ parsing, index build, answers with hand-off, CLI, router and evaluation.

End to end on a 15-question sample of the real Debian FAQ (tests/apps/data/debian_faq_sample.csv,
licence beside it) with the pretrained MiniLM; one index is built per module (a few seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from attend.apps.support import SupportIndex, ask, build_index, read_faq, register_cli, support_router
from attend.apps.support.evaluation import (
    bm25_tokens,
    evaluate_handoff,
    evaluate_retrieval,
    ranks,
    reword_question,
)
from attend.apps.support.faq import parse_html, parse_markdown, parse_qa_text
from attend.apps.support.index import calibrate_threshold, drop_words, embed_entries
from attend.data.readers import DataError
from attend.io import ModelDirError

SAMPLE = Path(__file__).parent / "data" / "debian_faq_sample.csv"
DEBIAN_CHAPTER = Path("/usr/share/doc/debian/FAQ/pkgtools.en.html")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("support") / "index"
    build_index(SAMPLE, out, seed=0)
    return out


@pytest.fixture(scope="module")
def index(index_dir: Path) -> SupportIndex:
    return SupportIndex.load(index_dir)


# --- reading FAQs ----------------------------------------------------------------------------

DOCBOOK_PAGE = """<html><head><title>Chapter 8. Tools</title></head><body>
<div class="navheader"><table><tr><th>Chapter 8. Tools</th></tr>
<tr><td><a href="p.html">Prev</a></td></tr></table></div>
<div class="chapter"><h1 class="title">Chapter 8. The package management tools</h1>
<div class="toc"><p><b>Table of Contents</b></p><dl class="toc"><dt><a href="#a">8.1. What is dpkg?</a></dt>
<dt><a href="#b">8.2. How do I list files?</a></dt></dl></div>
<div class="section"><h2 class="title"><a id="a"></a>8.1. What is dpkg?</h2>
<p>dpkg is the <strong>main</strong> package management program.</p>
<dl><dt>dpkg -i</dt><dd>installs a package</dd></dl></div>
<div class="section"><h3 class="title">8.1.1. Can I undo &amp; retry?</h3><p>Yes, run it again.</p></div>
<div class="section"><h2 class="title">8.2. How do I list files?</h2><p>Use <code>dpkg -L foo</code>.</p>
<pre>dpkg -L foo
dpkg -S bar</pre></div></div>
<div class="footnotes"><p>[1] a footnote</p></div>
<div class="navfooter"><a href="n.html">Next</a> Chapter 9. Keeping up to date</div></body></html>"""


def test_html_headings_split_like_the_debian_faq() -> None:
    pairs = parse_html(DOCBOOK_PAGE)
    assert [q for q, _ in pairs] == ["What is dpkg?", "Can I undo & retry?", "How do I list files?"]
    dpkg, undo, files = (a for _, a in pairs)
    assert "main package management program" in dpkg and "dpkg -i" in dpkg and "installs a package" in dpkg
    assert undo == "Yes, run it again."
    assert "dpkg -L foo\ndpkg -S bar" in files  # <pre> keeps its lines
    everything = " ".join(a for _, a in pairs)
    for furniture in ("Prev", "Next", "Table of Contents", "footnote", "Chapter 9"):
        assert furniture not in everything


def test_html_definition_lists_details_and_markdown_and_text() -> None:
    page = ("<h1>Help centre</h1><dl><dt>How do I pay?</dt><dd>By card.</dd><dt>Can I get a refund?</dt>"
            "<dd><p>Yes, within 30 days.</p></dd></dl>")  # fmt: skip
    assert parse_html(page) == [("How do I pay?", "By card."), ("Can I get a refund?", "Yes, within 30 days.")]
    details = "<details><summary>Is it free?</summary><p>Yes.</p></details><details><summary>Where?</summary>Here"
    assert parse_html(details) == [("Is it free?", "Yes."), ("Where?", "Here")]
    markdown = "# FAQ\n\n## 1. How do I pay?\n\nBy **card** or [cash](x.html).\n\nSetext?\n-------\nAnswer two.\n"
    assert parse_markdown(markdown)[-2:] == [("How do I pay?", "By card or cash."), ("Setext?", "Answer two.")]
    text = "Q: How do I pay?\nA: By card.\n\nQ: Can I return it?\nA: Yes,\nwithin 30 days.\n"
    assert parse_qa_text(text) == [("How do I pay?", "By card."), ("Can I return it?", "Yes,\nwithin 30 days.")]
    bold = "**Q: How do I pay?**\nA: By card.\n\n**Q: Can I return it?**\nA: Yes.\n"  # no "A: " in the answers
    assert parse_markdown(bold) == [("How do I pay?", "By card."), ("Can I return it?", "Yes.")]
    # A title over the questions, with an introduction, is no entry (it answered "what does the FAQ say");
    # headings at the questions' level stay, questions or not.
    titled = ("# Bike shop FAQ\n\nWelcome to our FAQ. Read on.\n\n## Do you rent bikes?\n\nYes, by the day.\n\n"
              "## Opening hours\n\n9 to 6.\n")  # fmt: skip
    assert parse_markdown(titled) == [("Do you rent bikes?", "Yes, by the day."), ("Opening hours", "9 to 6.")]
    topics = ("# Help centre\n\nHi.\n\n## Shipping\n\nTwo days.\n\n## Returns\n\n30 days.\n\n"
              "### Can I return sale items?\n\nYes.\n\n## Payment\n\nBy card.\n")  # topics over a question stay
    assert [q for q, _ in parse_markdown(topics)] == ["Shipping", "Returns", "Can I return sale items?", "Payment"]
    # Sections over sub-headings keep their answers, however many sub-headings there are; an HTML
    # page's title is no entry, as a Markdown page's is not.
    sections = ("## Opening hours\n\nWe are open 9-5 on weekdays.\n\n### Holidays\n\nClosed.\n\n### Weekends\n\n"
                "10-2.\n\n## Delivery\n\nWithin 10 km.\n\n### Cost\n\nFree.\n")  # fmt: skip
    assert [q for q, _ in parse_markdown(sections)] == ["Opening hours", "Holidays", "Weekends", "Delivery", "Cost"]
    html = "<h1>FAQ</h1><p>Intro.</p><h2>How do I pay?</h2><p>By card.</p><h2>Refunds?</h2><p>Yes.</p>"
    assert [q for q, _ in parse_html(html)] == ["How do I pay?", "Refunds?"]
    # A definition list's question under a heading is an entry of its own (it had been printed inside
    # the answer above it); terms in a row share their <dd>; a glossary's terms stay in the answer.
    mixed = ("<h2>What are your hours?</h2><p>9 to 5.</p><dl><dt>Is there an app?</dt><dd>Yes, for iOS.</dd>"
             "<dt>Can I pay by phone?</dt><dt>Can I pay by card?</dt><dd>Both, yes.</dd></dl>"
             "<h2>What do the terms mean?</h2><dl><dt>SLA</dt><dd>Service level.</dd></dl>")  # fmt: skip
    assert parse_html(mixed) == [("What are your hours?", "9 to 5."), ("Is there an app?", "Yes, for iOS."),
                                 ("Can I pay by phone?", "Both, yes."), ("Can I pay by card?", "Both, yes."),
                                 ("What do the terms mean?", "SLA\n\nService level.")]  # fmt: skip
    assert ("Is there an app?", "") in parse_html(mixed.replace("Yes, for iOS.", ""))  # for read_faq to refuse
    # Where the list ends, the text is the heading's answer again, and the heading is no page title.
    after = "<h2>What are your hours?</h2><dl><dt>Open on weekends?</dt><dd>No.</dd></dl><p>Call us to book.</p>"
    assert parse_html(after) == [("What are your hours?", "Call us to book."), ("Open on weekends?", "No.")]
    glossary = "<h2>Payments</h2><p>By card.</p><dl><dt>Can I pay?</dt><dd>Yes.</dd><dt>Refund policy</dt>" \
               "<dd>30 days.</dd></dl>"  # fmt: skip
    assert parse_html(glossary) == [("Payments", "By card.\n\nRefund policy\n\n30 days."), ("Can I pay?", "Yes.")]
    # What a code span holds is kept as written, and a link keeps its web address.
    code = ("## Where do plugins go?\n\nIn `plugins/__init__.py`; set `MAX__SIZE=10`, type `**bold**`. See the "
            "[plugin guide](https://x.example/plugins), **now**, *please*, my_var_name.\n\n```\npip install x\n```\n")
    assert parse_markdown(code) == [("Where do plugins go?", "In plugins/__init__.py; set MAX__SIZE=10, type **bold**. "
                                     "See the plugin guide (https://x.example/plugins), now, please, my_var_name."
                                     "\n\npip install x")]  # a fence is no code span: no stray backtick
    # A heading is a question as asked: no link syntax, address or backticks; a fenced block is kept
    # as written (its __init__ had lost its underscores), and an autolink is its address.
    marked = ("## How do I use [the CLI](https://x.example/cli)?\n\nSee <https://x.example/a_b> or <help@x.example>."
              "\n\n```sh\nx hook add __init__ --path ./*.py\n```\n\n## How do I run `x sync`?\n\nRun **it**.\n")
    assert parse_markdown(marked) == [
        ("How do I use the CLI?", "See https://x.example/a_b or help@x.example.\n\nx hook add __init__ --path ./*.py"),
        ("How do I run x sync?", "Run it."),
    ]
    # So is a Q: line's question (it had kept the address: "the CLI (https://x.example) or pedal_cli?"),
    # in a section of Q:/A: lines too; its answer keeps the addresses.
    lines = ("Q: How do I pay?\nA: With a card.\n\nQ: How do I use [the CLI](https://x.example) or `pedal_cli`?\n"
             "A: Run [it](https://y.example).\n\nQ: Where?\nA: Here.\n")  # fmt: skip
    expected = [("How do I pay?", "With a card."), ("How do I use the CLI or pedal_cli?", "Run it (https://y.example)."),
                ("Where?", "Here.")]  # fmt: skip
    assert parse_markdown(lines) == expected
    assert parse_markdown(f"## Billing\n\n{lines}")[-3:] == expected
    # Numbered once, __ inside a word kept (as Markdown reads it), an image alone as written, a fence
    # closed by a longer one or by the end, and a line of inline code no fence.
    odd = ("## 1. 2 factor auth?\n\nYes.\n\n## Is my__var__name ok?\n\nPackages.\n\n## ![](logo.png)\n\nA logo."
           "\n\n## Where?\n\n```x``` is inline, __a_b__ too.\n\n## Code?\n\n```\nrun __main__\n````\n\n## Open?"
           "\n\n~~~\nx __y__\n")  # fmt: skip
    assert parse_markdown(odd) == [("2 factor auth?", "Yes."), ("Is my__var__name ok?", "Packages."),
                                   ("![](logo.png)", "A logo."), ("Where?", "x is inline, a_b too."),
                                   ("Code?", "run __main__"), ("Open?", "x __y__")]  # fmt: skip
    # A section of Q:/A: pairs is those questions (it had been one entry, "Billing", answering with them all).
    mixed = ("## How do I pay?\n\nBy card.\n\n## Billing\n\nMonthly.\n\nQ: Do you offer refunds?\nA: Yes.\n\n"
             "Q: An invoice?\nA: From your account.\n\n## Where are you?\n\nBerlin.\n")  # fmt: skip
    assert parse_markdown(mixed) == [("How do I pay?", "By card."), ("Billing", "Monthly."),
                                     ("Do you offer refunds?", "Yes."), ("An invoice?", "From your account."),
                                     ("Where are you?", "Berlin.")]  # fmt: skip
    # ... but not Q:/A: lines shown in a fenced block, nor a page title's welcome; a fence closes
    # only with its own character.
    assert parse_markdown("## Example transcript\n\n```\nQ: hi\nA: hello\n```\n") == [
        ("Example transcript", "Q: hi\nA: hello")]
    assert parse_markdown("# Shop FAQ\n\nWelcome.\n\nQ: Refunds?\nA: Yes.") == [("Refunds?", "Yes.")]
    assert parse_markdown("## One?\n\n```\n~~~\n```\n\n## Two?\n\nAnswer two.") == [("One?", "~~~"),
                                                                                    ("Two?", "Answer two.")]
    # HTML5 may leave </head> out; a footer is page furniture, not part of the last answer.
    page = ("<html><head><title>FAQ</title><body><h2>How do I pay?</h2><p>By card.</p>"
            "<h2>Can I return it?</h2><p>Yes.</p><footer>(c) us</footer></body></html>")  # fmt: skip
    assert parse_html(page) == [("How do I pay?", "By card."), ("Can I return it?", "Yes.")]
    # An HTML link keeps its web or mail address, as a Markdown one does; a relative one, or one its
    # text already shows, is its text.
    linked = ('<h2>Where is the guide?</h2><p>See the <a href="https://x.example/g">plugin guide</a>, mail '
              '<a href="mailto:help@x.example">us</a> or <a href="https://x.example">https://x.example</a>; '
              '<a href="/faq#pay">paying</a>.</p><h2>How?</h2><p>By card.</p>')  # fmt: skip
    assert parse_html(linked)[0] == ("Where is the guide?", "See the plugin guide (https://x.example/g), mail us "
                                     "(help@x.example) or https://x.example; paying.")
    # Raw HTML in Markdown is read as an HTML FAQ's is: tags go, their text stays, a script is no text
    # (it had been kept as markup, for a page that shows the answers to run); a placeholder that is
    # no HTML element, and HTML in a code span, stay. A link's address may hold parentheses.
    raw = ("## How do I copy?\n\nPress <kbd>Ctrl</kbd>+<kbd>C</kbd>.<br>Then paste.<!-- note -->\n\n"
           "## How <script>alert(1)</script> do I pay?\n\nUse <b onmouseover=x>pay</b>: `<div>` or attend train "
           "<DATA>.\n\n## Link?\n\nClick [here](javascript:alert(1)) or [bikes](https://w.example/Bike_(x)).\n")
    # A name a placeholder may have is a tag only with attributes or as a closing tag.
    assert parse_markdown('## When?\n\nOn <time datetime="2024-01-01">1 Jan</time>: run x <input>.') == [
        ("When?", "On 1 Jan: run x <input>.")]
    # An unclosed "<template>" or "<!--" inside a line is text, as CommonMark reads it: it had eaten every later
    # question.
    unclosed = "Q: How do I start?\nA: Run x <template> in a shell.\n\nQ: How do I stop?\nA: Write <!-- to.\n"
    assert parse_markdown(unclosed) == [("How do I start?", "Run x <template> in a shell."),
                                        ("How do I stop?", "Write <!-- to.")]  # fmt: skip
    assert parse_markdown(raw) == [("How do I copy?", "Press Ctrl+C.\nThen paste."),
                                   ("How do I pay?", "Use pay: <div> or attend train <DATA>."),
                                   ("Link?", "Click here or bikes (https://w.example/Bike_(x)).")]  # fmt: skip


def test_real_debian_faq_chapter() -> None:
    assert DEBIAN_CHAPTER.is_file(), "Debian package debian-faq is not installed (make install installs it)"
    entries = read_faq(DEBIAN_CHAPTER)
    questions = [e.question for e in entries]
    assert "How do I display the files of an installed package?" in questions
    assert "dpkg" in questions and len(entries) >= 10
    shown = next(e.answer for e in entries if e.question.startswith("How do I display the files"))
    assert "dpkg --listfiles" in shown and "Next" not in shown and "Chapter 9" not in shown


def test_a_compressed_faq_reads_as_the_file_inside(tmp_path: Path) -> None:
    import gzip

    table = tmp_path / "faq.csv.gz"
    table.write_bytes(gzip.compress(b"question,answer\nHow do I pay?,By card.\n"))
    assert [(e.question, e.answer) for e in read_faq(table)] == [("How do I pay?", "By card.")]
    document = tmp_path / "faq.md.gz"
    document.write_bytes(gzip.compress(b"# How do I pay?\n\nBy card.\n"))
    assert [(e.question, e.answer) for e in read_faq(document)] == [("How do I pay?", "By card.")]


def test_a_windows_faq_tables_answers_keep_no_carriage_return(tmp_path: Path) -> None:
    """A BOM and CRLF file's multi-line answer had kept its "\r\n" (a plain file's has "\n")."""
    windows = tmp_path / "faq.csv"
    windows.write_bytes("\ufeffquestion,answer\r\nWhen are you open?,\"9 to 5,\r\nMonday to Friday.\"\r\n".encode())
    assert [(e.question, e.answer) for e in read_faq(windows)] == [("When are you open?", "9 to 5,\nMonday to Friday.")]


def test_bad_faq_files_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_faq(empty)
    no_answer = tmp_path / "faq.csv"
    no_answer.write_text("question,reply\nHow?,Like this\n")
    with pytest.raises(DataError, match=r"faq.csv has no column 'answer' \(columns: question, reply\)"):
        read_faq(no_answer)
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"question": "How?", "answer": "So."}\n{"question": "Why?", "answer": "  "}\n')
    with pytest.raises(DataError, match=r"blank\.jsonl: line 2 has an empty answer"):
        read_faq(blank)
    # Invisible characters only: indexed before, and served a customer as a confident blank answer.
    blank.write_text('{"question": "How?", "answer": "So."}\n{"question": "Why?", "answer": " \\u200b"}\n')
    with pytest.raises(DataError, match=r"blank\.jsonl: line 2 has an empty answer"):
        read_faq(blank)
    blank.write_text('{"question": "How?", "answer": "So \\udcff."}\n')
    with pytest.raises(DataError, match=r"blank\.jsonl: line 1: the answer contains an unpaired surrogate"):
        read_faq(blank)
    headless = tmp_path / "faq.md"
    headless.write_text("Just some prose, no questions here.\n")
    with pytest.raises(DataError, match="no question/answer pairs"):
        read_faq(headless)
    # A question heading with nothing below it had been left out of the index without a word; a
    # heading over deeper question headings is a topic, not a question without an answer.
    headless.write_text("# FAQ\n\n## Is there a trial?\n\n## How do I pay?\n\nBy card.\n\n## Ship abroad?\n\nYes.\n")
    with pytest.raises(DataError, match=r"faq\.md: line 3: the question 'Is there a trial\?' has no answer: an empty "):
        read_faq(headless)
    # ... nor in the other shapes of a document, which had dropped it too: Q:/A: text (in Markdown or
    # not) and <dl>; and a blank Q: had dropped its answer.
    for name, text in [("e.txt", "Q: How do I get a refund?\nA:\nQ: What are your hours?\nA: Nine to five.\n"),
                       ("e.md", "# FAQ\n\nQ: How do I get a refund?\nA:\n\nQ: What are your hours?\nA: 9 to 5.\n"),
                       ("dl.html", "<dl><dt>How do I get a refund?</dt><dd></dd><dt>Hours?</dt><dd>Nine.</dd></dl>")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=r"the question 'How do I get a refund\?' has no answer"):
            read_faq(tmp_path / name)
    (tmp_path / "nameless.txt").write_text("Q:\nA: An answer.\nQ: Hours?\nA: Nine.\n")
    with pytest.raises(DataError, match=r"the answer of pair 1 has an empty question before it"):
        read_faq(tmp_path / "nameless.txt")
    # A web page's heading over a button or a picture alone is furniture, not a question left empty;
    # terms in a row share the <dd> after them, as HTML has it.
    (tmp_path / "page.html").write_text("<h1>FAQ</h1><h2>Billing</h2><h3>How do I pay?</h3><p>Card.</p><h3>Refund?"
                                        "</h3><p>Yes.</p><h2>Still have questions?</h2><button>Contact us</button>")
    assert [(e.question, e.answer) for e in read_faq(tmp_path / "page.html")] == [
        ("How do I pay?", "Card."), ("Refund?", "Yes.")]
    (tmp_path / "terms.html").write_text("<dl><dt>Cash?</dt><dt>Cheque?</dt><dd>Both fine.</dd><dt>Card?</dt><dd>Yes."
                                         "</dd></dl>")  # fmt: skip
    assert [(e.question, e.answer) for e in read_faq(tmp_path / "terms.html")] == [
        ("Cash?", "Both fine."), ("Cheque?", "Both fine."), ("Card?", "Yes.")]
    headless.write_text("# FAQ\n\n## Where is billing?\n\n### How do I pay?\n\nBy card.\n\n### Refunds?\n\nIn 14 "
                        "days.\n")  # fmt: skip
    assert [e.question for e in read_faq(headless)] == ["How do I pay?", "Refunds?"]
    with pytest.raises(DataError, match="no such FAQ file"):
        build_index(tmp_path / "missing.csv", tmp_path / "out")
    with pytest.raises(DataError, match="is a directory"):
        read_faq(tmp_path)
    docx = tmp_path / "faq.docx"
    docx.write_text("x")
    with pytest.raises(DataError, match=r"extension '\.docx'"):
        read_faq(docx)
    numbers = tmp_path / "numbers.jsonl"  # a number answers "how many?" (it was called an empty answer)
    numbers.write_text('{"question": "How many days to return?", "answer": 30}\n', encoding="utf-8")
    assert read_faq(numbers)[0].answer == "30"
    numbers.write_text('{"question": "Which days?", "answer": ["Mon"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1 has a list as its answer; expected text"):
        read_faq(numbers)
    numbers.write_text('{"question": "How many days?", "answer": NaN}\n', encoding="utf-8")  # pandas' missing cell
    with pytest.raises(DataError, match=r"line 1 has an empty answer \(answer=None\)"):  # not "a float"
        read_faq(numbers)
    numbers.write_text('{"question": "How?", "answer": "So.", "intent": true}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1 has intent=True; expected a label"):  # it had been the label 'True'
        read_faq(numbers)
    numbers.write_text('{"question": "How?", "answer": "So."}\n{"question": "Why?"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"numbers\.jsonl: line 2 has no 'answer'$"):  # it was "an empty answer"
        read_faq(numbers)


def test_a_bare_carriage_return_in_a_text_faq_is_refused_naming_its_line(tmp_path: Path) -> None:
    """Before: one old-Mac line end between a Q: and its A: glued them into one question, which took the
    next question's answer (exit 0); a file with a byte-order mark and Windows line ends besides was
    told its question "has no answer", naming no line. The CSV reader refuses such a file, naming the line."""
    glued = tmp_path / "cr.txt"
    glued.write_bytes("Q: 送料は？\nA: 550円です。\nQ: 返品できますか？\rA: できます。\nQ: 配送は？\nA: 3日\n".encode())
    with pytest.raises(DataError, match=r"cr\.txt: line 3 has a carriage return inside it: its lines end in a bare "
                       r"carriage return \(an old Mac format\); re-save it with \\n line endings"):  # fmt: skip
        read_faq(glued)
    glued.write_bytes("\ufeffQ: 送料は？\r\nA: 550円です。\r\nQ: 返品できますか？\rA: できます。\r\n".encode())
    with pytest.raises(DataError, match=r"cr\.txt: line 3 has a carriage return inside it"):
        read_faq(glued)
    windows = tmp_path / "windows.txt"  # Windows line ends are line ends
    windows.write_bytes("\ufeffQ: 送料は？\r\nA: 550円です。\r\nQ: 返品できますか？\r\nA: できます。\r\n".encode())
    assert [(e.question, e.answer) for e in read_faq(windows)] == [("送料は？", "550円です。"),
                                                                   ("返品できますか？", "できます。")]  # fmt: skip
    # Markdown ends a line at a bare carriage return, as CommonMark does (its Q:/A: lines had been glued too).
    mac = tmp_path / "mac.md"
    mac.write_bytes(b"Q: How do I pay?\rA: By card.\rQ: Refunds?\rA: Yes.\r")
    assert [(e.question, e.answer) for e in read_faq(mac)] == [("How do I pay?", "By card."), ("Refunds?", "Yes.")]


def test_full_width_q_and_a_marks_are_q_and_a_marks() -> None:
    """Japanese FAQs write "Ｑ：" and "Ａ：" (or "Q："): a .txt of them had found no pair at all."""
    expected = [("送料は？", "550円です。"), ("返品は？", "できます。")]
    assert parse_qa_text("Ｑ：送料は？\nＡ：550円です。\nQ：返品は？\nA：できます。\n") == expected
    assert parse_qa_text("ｑ：送料は？\nａ：550円です。\nＱ: 返品は？\nＡ: できます。") == expected
    assert parse_markdown("# FAQ\n\nＱ：送料は？\nＡ：550円です。\n\nＱ：返品は？\nＡ：できます。") == expected
    assert parse_markdown("## Ｑ：送料は？\n\nＡ：550円です。\n\n## Ｑ１：返品は？\n\nできます。") == expected
    assert parse_html("<p>Ｑ：送料は？<br>Ａ：550円です。</p><p>Ｑ：返品は？<br>Ａ：できます。</p>") == expected


def test_an_empty_answer_in_a_document_names_its_line(tmp_path: Path) -> None:
    """A table's empty answer names its line; a document's named only the question (which a long FAQ may
    ask twice, and which Markdown or HTML shows with its markup). Each shape names the question's line."""
    cases = {
        "q.txt": ("Q: How do I pay?\nA: By card.\n\nQ: Refunds?\nA:\nQ: Hours?\nA: Nine.\n", 4),
        "heading.md": ("# FAQ\n\nSetext?\n-------\n\nYes.\n\nRefunds?\n--------\n\n## Hours?\n\nNine.\n", 8),
        # a fence's lines are gone from the text the Q: lines are read in: the line is still the file's
        "qa.md": ("# FAQ\n\n## Billing\n\n```\ncode\n```\n\nQ: How do I pay?\nA: By card.\n\nQ: Refunds?\nA:\n", 12),
        "dl.html": ("<html>\n<body>\n<dl>\n<dt>How do I pay?</dt>\n<dd>By card.</dd>\n<dt>Refunds?</dt>\n<dd></dd>\n"
                    "</dl>\n</body></html>\n", 6),
        "details.html": ("<h1>FAQ</h1>\n<details>\n<summary>How?</summary>\nLike so.\n</details>\n<details>\n"
                         "<summary>Refunds?</summary>\n</details>\n", 7),
        "qa.html": ("<body>\n<p>Q: How do I pay?</p>\n<p>A: By card.</p>\n<p>Q: Refunds?</p>\n<p>A:</p>\n</body>\n", 4),
    }
    for name, (text, line) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(DataError, match=rf"{re.escape(name)}: line {line}: the question 'Refunds\?' has no answer"):
            read_faq(tmp_path / name)
    (tmp_path / "nameless.txt").write_text("Q: How?\nA: So.\nQ:\nA: An answer.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"nameless\.txt: line 3: the answer of pair 2 has an empty question before it"):
        read_faq(tmp_path / "nameless.txt")


def test_an_faq_read_from_a_named_pipe_is_not_called_empty(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "piped.csv"
    os.mkfifo(fifo)
    rows = "question,answer\nHow do I return a bike?,Bring it within 30 days.\n"
    threading.Thread(target=lambda: fifo.write_text(rows, encoding="utf-8"), daemon=True).start()
    assert [e.question for e in read_faq(fifo)] == ["How do I return a bike?"]  # before: "piped.csv is empty"


# --- build and ask ---------------------------------------------------------------------------


def test_index_is_safetensors_and_json_with_a_calibrated_threshold(index_dir: Path, index: SupportIndex) -> None:
    assert sorted(p.name for p in index_dir.iterdir()) == ["config.json", "embeddings.safetensors", "entries.json"]
    config = json.loads((index_dir / "config.json").read_text())
    handoff = config["handoff"]
    assert 0.0 < handoff["threshold"] < 1.0 and handoff["method"] == "max_f1"
    assert handoff["answerable_trials"] == handoff["unanswerable_trials"] == 15
    assert config["intents"]["labels"] == ["customizing", "pkg-basics", "pkgtools", "support", "uptodate"]
    assert len(index.entries) == 15 and index.threshold == handoff["threshold"]


def test_paraphrase_gets_the_right_answer_with_words_and_intent(index: SupportIndex) -> None:
    reply = index.ask("change the default paper size to A4", k=3)
    json.dumps(reply)  # JSON-ready
    best = reply["answers"][0]
    assert best["question"] == "How can I ensure that all programs use the same paper size?"
    assert "libpaper1" in best["answer"] and len(reply["answers"]) == 3
    assert [a["score"] for a in reply["answers"]] == sorted((a["score"] for a in reply["answers"]), reverse=True)
    assert reply["handoff"] is False and "at or above threshold" in reply["reason"]
    assert reply["intent"]["label"] == "customizing" and 0.0 < reply["intent"]["probability"] <= 1.0
    words = reply["words"]
    assert abs(sum(w["weight"] for w in words) - 1.0) < 1e-3
    assert {w["word"] for w in words[:3]} & {"paper", "size"}  # the words that carry the match lead
    for w in words:  # offsets point into the user's own text
        assert "change the default paper size to A4"[w["start"] : w["end"]] == w["word"]

    other = ask(index, "can updates be installed automatically every night?", k=1)
    assert other["answers"][0]["question"] == "Can I automatically update the system?"
    assert other["intent"]["label"] == "uptodate" and len(other["answers"]) == 1


def test_nonsense_hands_off(index: SupportIndex) -> None:
    reply = index.ask("purple elephants dancing on the moon")
    assert reply["handoff"] is True
    assert reply["reason"].startswith("best match score ") and "below threshold" in reply["reason"]
    assert reply["answers"]  # the closest entries are still shown to the person taking over


def test_ask_errors(index: SupportIndex, index_dir: Path, tmp_path: Path) -> None:
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="question is empty"):
            index.ask(bad)
    with pytest.raises(ValueError, match="k=0"):
        index.ask("hello", k=0)
    with pytest.raises(ModelDirError, match="no such support index"):
        ask(tmp_path / "nowhere", "hello")
    (tmp_path / "empty").mkdir()  # was "not a model directory: config.json is missing"
    with pytest.raises(ModelDirError, match=r"empty is not a support index \(no config\.json\)"):
        ask(tmp_path / "empty", "hello")
    (tmp_path / "faq.csv").write_text("question,answer\nq?,a\n")  # was "no such support index directory"
    with pytest.raises(ModelDirError, match=r"faq\.csv is a file; give the directory"):
        ask(tmp_path / "faq.csv", "hello")
    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    (copy / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelDirError, match=r"pickle-format file\(s\) \['evil.pkl'\]"):
        SupportIndex.load(copy)
    (copy / "evil.pkl").unlink()
    (copy / "entries.json").write_text("[]")
    with pytest.raises(ModelDirError, match=r"entries\.json does not match the hash"):
        SupportIndex.load(copy)
    (copy / "config.json").unlink()
    with pytest.raises(ModelDirError, match=r"is not a support index \(no config\.json\)"):
        SupportIndex.load(copy)


def test_build_option_errors(tmp_path: Path) -> None:
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds other files"):
        build_index(SAMPLE, crowded)
    # Found before the FAQ is embedded (it had been after the whole build).
    import attend.apps.support.index as index_module

    def no_encoder(model: str) -> None:
        raise AssertionError("the encoder was loaded before --out was checked")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_module, "load_encoder", no_encoder)
        said = rf"--out {re.escape(str(crowded))}/notes.txt/index: .*notes.txt is a file"
        with pytest.raises(ValueError, match=said):
            build_index(SAMPLE, crowded / "notes.txt" / "index")
    with pytest.raises(ModelDirError, match="no such model directory"):
        build_index(SAMPLE, tmp_path / "out", model=str(tmp_path / "no_model"))
    with pytest.raises(ValueError, match="question_weight"):
        build_index(SAMPLE, tmp_path / "out", question_weight=2.0)
    one_intent = tmp_path / "one.csv"
    one_intent.write_text("question,answer,intent\nHow?,So.,a\nWhy?,Because.,a\n")
    with pytest.raises(DataError, match="only one label 'a'"):
        build_index(one_intent, tmp_path / "out")


def test_calibration_picks_the_best_f1_cut() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.3])
    correct = np.array([True, True, False, True, False, False])
    result = calibrate_threshold(scores, correct)
    assert result["threshold"] == pytest.approx(0.55) and result["recall"] == 1.0  # answer the top four
    assert result["precision"] == pytest.approx(0.75)
    strict = calibrate_threshold(scores, correct, target_precision=1.0)
    assert strict["threshold"] == pytest.approx(0.75) and strict["precision"] == 1.0
    assert calibrate_threshold(scores, np.zeros(6, dtype=bool))["threshold"] > 0.9  # nothing right: hand off all
    import random

    reworded = drop_words("how do I put a package on hold", random.Random(0))
    assert 1 <= len(reworded.split()) < 8 and set(reworded.split()) <= set("how do I put a package on hold".split())


# --- CLI and router --------------------------------------------------------------------------


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser(prog="attend")
    register_cli(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_cli_build_and_ask(index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["support", "ask", str(index_dir), "change the default paper size", "--json", "-k", "2"]
    reply = json.loads(_run_cli(argv, capsys))
    assert len(reply["answers"]) == 2 and isinstance(reply["handoff"], bool)
    assert set(reply["answers"][0]) >= {"question", "answer", "score"}
    human = _run_cli(["support", "ask", str(index_dir), "purple", "elephants", "dancing", "on", "the", "moon"], capsys)
    assert human.startswith("HAND-OFF to a person: best match score") and "words that drove the match" in human

    parser = argparse.ArgumentParser(prog="attend")
    register_cli(parser.add_subparsers(dest="verb"))
    missing = parser.parse_args(["support", "ask", str(tmp_path / "none"), "--json", "how", "do", "I", "pay"])
    assert missing.question == ["how", "do", "I", "pay"] and missing.json
    with pytest.raises(ModelDirError, match="no such support index"):  # attend's main prints it as `error: ...`
        missing.func(missing)

    out = tmp_path / "plain"
    parser = argparse.ArgumentParser(prog="attend")
    register_cli(parser.add_subparsers(dest="verb"))
    fused = parser.parse_args(["support", "build", str(SAMPLE), "--out", str(out), "--retrieval", "dense", "--fusion",
                               "rrf"])  # fmt: skip
    with pytest.raises(ValueError, match=r"--fusion rrf: fuses the encoder's and BM25's rankings, for --retrieval "
                                         r"hybrid; --retrieval dense ranks by one of them"):  # it changed nothing
        fused.func(fused)
    assert not out.exists()
    parser = argparse.ArgumentParser(prog="attend")
    register_cli(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["support", "build", str(SAMPLE), "--out", str(out), "--no-intents"])
    assert args.func(args) == 0
    built = capsys.readouterr()
    assert "indexed 15 FAQ entries" in built.out and "intents: none" in built.out
    # each stage after the embedding's bar said as it starts (two thirds of a run had been silent)
    assert "calibrating the hand-off: each of the 15 questions" in built.err and "intents" not in built.err
    assert ask(out, "change the default paper size")["intent"] is None


def test_router_answers_and_rejects_bad_bodies(index: SupportIndex) -> None:
    app = FastAPI()
    app.include_router(support_router(index))
    with TestClient(app, raise_server_exceptions=False) as client:
        ok = client.post("/v1/support/ask", json={"question": "change the default paper size to A4", "k": 2})
        assert ok.status_code == 200
        body = ok.json()
        assert len(body["answers"]) == 2 and body["handoff"] is False and body["intent"]["label"] == "customizing"
        bad_bodies = [
            {},
            {"question": ""},
            {"question": "   "},
            {"question": 5},
            {"question": "hi", "k": 0},
            {"question": "hi", "k": 10_000},
            {"question": "hi", "k": "3"},  # a string is not a count (it was read as 3)
            {"question": "hi", "k": True},
            {"question": "hi", "extra": 1},
            {"question": "x" * 5000},
        ]
        for bad in bad_bodies:
            response = client.post("/v1/support/ask", json=bad)
            assert response.status_code == 422, (bad, response.status_code)
        malformed = client.post("/v1/support/ask", content=b"{not json", headers={"content-type": "application/json"})
        assert 400 <= malformed.status_code < 500
    from attend.serve import ServeSettings, create_app

    with TestClient(create_app(None, ServeSettings(), routers=[support_router(index)])) as served:  # attend's 422s
        said = served.post("/v1/support/ask", json={"question": ""}).json()["error"]["message"]
        assert said == "question: String should have at least 1 character"  # had ", not a string" after it
        # A blank or invisible question: one field and the validator's own words (they had read "question: Value
        # error, question is blank" and, with no field, "question is empty")
        for blank, words in (("   ", "is an empty text"), ("\u200b", "is an empty text (only invisible characters)")):
            error = served.post("/v1/support/ask", json={"question": blank}).json()["error"]
            assert error["message"] == f"question: question {words}" and error["details"][0]["field"] == "question"
        # The same keys as `support ask --json` (the route had dropped retrieval.reranked and added nulls).
        question = "change the default paper size to A4"
        assert served.post("/v1/support/ask", json={"question": question, "k": 2}).json() == json.loads(
            json.dumps(index.ask(question, k=2)))
    with pytest.raises(ModelDirError):
        support_router("/nonexistent/index")


# --- evaluation ------------------------------------------------------------------------------


def test_rewording_bm25_tokens_and_ranks() -> None:
    assert reword_question("How do I install a source package?") == "I install a source package"
    assert reword_question("What is APT?") == "is APT"
    assert reword_question("dpkg") == "dpkg"
    assert reword_question("好的，我知道什么是 Debian 了？") == "我知道什么是 Debian 了"
    assert bm25_tokens("The Debian packages") == ["debian", "packages"]
    assert sorted(bm25_tokens("软件包")) == sorted(["软", "件", "包", "软件", "件包"])
    scores = np.array([[0.9, 0.5, 0.1], [0.0, 0.0, 0.0], [0.2, 0.7, 0.7]])
    assert ranks(scores, [0, 1, 2]).tolist() == [1, 3, 2]  # ties count against the query


def test_encoder_and_bm25_evaluation_on_the_sample(index: SupportIndex) -> None:
    entries = read_faq(SAMPLE)
    tensors = embed_entries(index.encoder, entries)
    results = evaluate_retrieval(entries, tensors, index.encoder)
    assert set(results) == {"bm25", "encoder", "encoder_lead", "encoder_passages", "hybrid", "hybrid_2fold", "rrf"}
    for forms in results.values():
        for form, metrics in forms.items():
            if form in ("original", "reworded"):
                assert metrics["n"] == 15 and 0.0 <= metrics["top1"] <= metrics["mrr"] <= 1.0
    assert results["encoder"]["original"]["mrr"] > 0.5  # 15 candidates: chance is about 0.2
    handoff = evaluate_handoff(entries, tensors, index.encoder, seed=0)
    assert handoff["answerable"]["original"]["n"] + handoff["unanswerable"]["n"] == 30
    assert 0.0 <= handoff["unanswerable"]["handoff_rate"] <= 1.0 and len(handoff["thresholds"]) == 2


# --- hybrid retrieval ------------------------------------------------------------------------


def test_bm25_scores_and_term_contributions_match_rank_bm25() -> None:
    from rank_bm25 import BM25Okapi

    from attend.apps.support.lexical import Lexical, terms

    docs = ["dpkg installs a package", "apt fetches packages from the network", "a package on hold stays put"]
    lexical = Lexical(docs)
    reference = BM25Okapi([terms(d) for d in docs])
    query = "How do I hold a package?"
    np.testing.assert_allclose(lexical.scores(query), reference.get_scores(terms(query)))
    contributions = lexical.contributions(query, 2)
    assert [(t.term, query[t.start : t.end]) for t, _ in contributions] == [("hold", "hold"), ("package", "package")]
    assert sum(v for _, v in contributions) == pytest.approx(lexical.scores(query)[2])
    assert not lexical.scores("the of and").any()  # stop words only: no term, no score
    # A repeated word counts once: repeating a question cannot push its score past the hand-off threshold.
    np.testing.assert_allclose(lexical.scores("hold package " * 50), lexical.scores("hold package"))
    # Full-width letters are the same term (a Chinese keyboard types them): "no word occurs" had been said.
    wide = "用ＰａｙＰａｌ付款"
    paid = Lexical(["PayPal付款多久到账", "付款失败怎么办"])
    np.testing.assert_allclose(paid.scores(wide), paid.scores("用PayPal付款"))
    first, _ = paid.contributions(wide, 0)[0]
    assert (first.term, wide[first.start : first.end]) == ("paypal", "ＰａｙＰａｌ")


def test_half_width_katakana_is_read_as_nfkc_reads_it() -> None:
    """Text is NFKC-normalised before its script is judged: half-width ``ﾊﾟｽﾜｰﾄﾞ`` had been one
    Latin-style word, matching none of the characters and pairs the FAQ's ``パスワード`` was indexed
    as (the question was handed off where its full-width form was answered)."""
    from attend.apps.support.fusion import reword_question
    from attend.apps.support.lexical import Lexical, term_spans, terms

    half, full = "ﾊﾟｽﾜｰﾄﾞがわからない", "パスワードがわからない"
    assert terms(half) == terms(full)
    lexical = Lexical(["パスワードを忘れました。", "送料はいくらですか？", "返品できますか？"])
    np.testing.assert_allclose(lexical.scores(half), lexical.scores(full))
    assert lexical.scores(half)[0] > 0 and lexical.matches("ﾊﾟｽﾜｰﾄﾞ")
    # each term spans the characters the user typed: "パ" is "ﾊﾟ", two of them
    assert [(t.term, half[t.start : t.end]) for t in term_spans(half)][:3] == [("パ", "ﾊﾟ"), ("パス", "ﾊﾟｽ"), ("ス", "ｽ")]
    # squared and enclosed forms are the characters NFKC makes of them; their brackets are none
    assert [t.term for t in term_spans("㌔㈱")] == ["キ", "ロ", "キロ", "株"]
    # the build's rewordings count a half-width character as a word, as a full-width one
    half, full = "ﾊﾟｽﾜｰﾄﾞを忘れました？", "パスワードを忘れました？"
    assert unicodedata.normalize("NFKC", reword_question(half)) == reword_question(full) == "ワードを忘れました"
    assert unicodedata.normalize("NFKC", drop_words(half, random.Random(0))) == drop_words(full, random.Random(0))


def test_fusion_rules_and_the_weight_search() -> None:
    from attend.apps.support.fusion import Retrieval, choose_alpha, fuse

    dense = np.array([[0.9, 0.8, 0.1], [0.2, 0.3, 0.9]])
    lexical = np.array([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    weighted = Retrieval(alpha=0.75)
    np.testing.assert_allclose(fuse(dense, lexical, weighted), 0.75 * dense + 0.25 * lexical)
    np.testing.assert_allclose(fuse(dense, lexical, weighted, np.array([True, False]))[1], lexical[1])  # BM25 alone
    # At alpha 1 an unreadable query's BM25 side had been dropped with the encoder's: every entry scored 0.
    np.testing.assert_allclose(fuse(dense, lexical, Retrieval(alpha=1.0), np.array([True, False])),
                               [dense[0], lexical[1]])  # fmt: skip
    rrf = fuse(dense, lexical, Retrieval(fusion="rrf"))
    assert rrf[0].argmax() == 1 and rrf[0, 1] == pytest.approx(1 / 62 + 1 / 61)  # 2nd by the encoder, 1st by BM25
    assert (fuse(dense, lexical, Retrieval(dense_readable=False)) == lexical).all()  # hybrid falls back to BM25
    alpha, table = choose_alpha([dense], [lexical], [[1, 2]])
    assert table[f"{alpha:g}"] == max(table.values()) == 1.0 and len(table) == 21
    with pytest.raises(ValueError, match="retrieval='sparse'"):
        Retrieval(mode="sparse")
    with pytest.raises(ValueError, match="fusion='max'"):
        Retrieval(fusion="max")
    with pytest.raises(ValueError, match="cannot read this FAQ"):
        Retrieval(mode="dense", dense_readable=False, unknown_share=0.6)


def test_the_index_fuses_encoder_and_bm25_and_explains_both_sides(index_dir: Path, index: SupportIndex) -> None:
    retrieval = json.loads((index_dir / "config.json").read_text())["retrieval"]
    assert retrieval["mode"] == "hybrid" and retrieval["dense_readable"] and 0.0 <= retrieval["alpha"] <= 1.0
    assert len(retrieval["search"]) == 21 and retrieval["answer_scale"] > 0
    reply = index.ask("how do I hold back a package with dpkg?")
    assert reply["answers"][0]["question"] == "How do I put a package on hold?" and not reply["handoff"]
    assert reply["retrieval"]["mode"] == "hybrid" and "encoder" in reply["retrieval"]["note"]
    answer = reply["answers"][0]["answer"]
    assert {w["word"].lower() for w in reply["answer_words"][:3]} & {"dpkg", "hold", "package"}
    for word in reply["answer_words"]:
        assert all(answer[a:b].lower() == word["word"].lower() for a, b in word["spans"])
    assert abs(sum(w["weight"] for w in reply["words"]) - 1.0) < 1e-3
    assert index.describe()["retrieval"] == "hybrid"


def test_lexical_only_indexes_and_a_faq_the_encoder_cannot_read(tmp_path: Path) -> None:
    lexical = build_index(SAMPLE, tmp_path / "bm25", retrieval="bm25", intents=False)
    assert lexical["retrieval"]["mode"] == "bm25" and lexical["retrieval"]["alpha"] == 0.0
    reply = SupportIndex.load(tmp_path / "bm25").ask("how do I put a package on hold?")
    assert reply["answers"][0]["question"] == "How do I put a package on hold?"
    assert reply["retrieval"]["mode"] == "bm25" and {w["word"] for w in reply["words"]} >= {"package", "hold"}
    before = (tmp_path / "bm25" / "config.json").read_bytes()
    with pytest.raises(ValueError, match="already holds an index; pass --overwrite"):  # nothing built is lost
        build_index(SAMPLE, tmp_path / "bm25", retrieval="dense", intents=False)
    assert (tmp_path / "bm25" / "config.json").read_bytes() == before
    replaced = build_index(SAMPLE, tmp_path / "bm25", retrieval="bm25", intents=False, question_weight=1.0,
                           overwrite=True)  # fmt: skip
    assert SupportIndex.load(tmp_path / "bm25").config["question_weight"] == replaced["question_weight"] == 1.0

    chinese = tmp_path / "zh.csv"  # all-MiniLM-L6-v2 reads almost none of this
    rows = ["如何安装软件包？,使用 apt 命令安装软件包。", "如何升级系统？,运行升级命令即可升级整个系统。",
            "光盘可以出售吗？,可以，只要遵守许可证。"]  # fmt: skip
    chinese.write_text("question,answer\n" + "\n".join(rows) + "\n", encoding="utf-8")
    built = build_index(chinese, tmp_path / "zh", intents=False)
    assert built["retrieval"]["dense_readable"] is False and built["retrieval"]["unknown_share"] > 0.25
    labelled = tmp_path / "zh_intents.csv"  # intents learnt from embeddings of what the encoder cannot read: said
    intents = ["setup", "setup", "legal"]
    lines = [f"{row},{intent}\n" for row, intent in zip(rows, intents, strict=True)]
    labelled.write_text("question,answer,intent\n" + "".join(lines), encoding="utf-8")
    noted = build_index(labelled, tmp_path / "zh_intents")
    assert "the encoder cannot read" in noted["intents"]["note"] and "--no-intents" in noted["intents"]["note"]
    assert SupportIndex.load(tmp_path / "zh_intents").ask("怎样升级系统")["answers"][0]["intent"] == "setup"
    # The report says what ranks, as ask does (it gave only the "hybrid" asked for).
    assert built["ranking"]["mode"] == "bm25" and "cannot read this FAQ" in built["ranking"]["note"]
    zh = SupportIndex.load(tmp_path / "zh")
    reply = zh.ask("怎样升级系统")
    assert reply["answers"][0]["question"] == "如何升级系统？"
    assert all("intent" in a and a["intent"] is None for a in reply["answers"])  # no intents: null, as over HTTP
    assert reply["retrieval"]["mode"] == "bm25" and "cannot read this FAQ" in reply["retrieval"]["note"]
    assert {w["word"] for w in reply["words"]} & {"升级", "系统"}
    with pytest.raises(ValueError, match="retrieval='dense': the encoder cannot read this FAQ"):
        build_index(chinese, tmp_path / "dense", retrieval="dense")


def test_a_script_the_encoder_spells_out_letter_by_letter_is_unreadable_to_it(index: SupportIndex,
                                                                              tmp_path: Path) -> None:  # fmt: skip
    """The English MiniLM spells Korean out one jamo a piece (and kana, Cyrillic, Arabic, Devanagari one
    letter a piece): few or none of those pieces are [UNK], so a Korean FAQ had passed as readable,
    `--retrieval dense` was accepted on it (calibration precision 0.06) and its questions were ranked
    by the encoder's noise. Those letters count as unreadable, as the focus app counts them."""
    from attend.apps.support.encoder import spells_a_letter

    assert [spells_a_letter(p) for p in ("ᄇ", "##ᅵ", "к", "##ا", "a", "##s", "[UNK]", "€", "1")] == [
        True, True, True, True, False, False, False, False, False]  # fmt: skip
    korean, english = "비밀번호를 잊어버렸어요", "How do I put a package on hold?"
    assert index.encoder.unknown_share([korean])[0] < 0.25  # what had been judged
    shares = index.encoder.unreadable_share([korean, "パスワードを忘れました", "Как сбросить пароль?", english])
    assert all(share > 0.25 for share in shares[:3]) and shares[3] == 0.0
    # Latin letters are of words it reads, and Greek ones mostly maths (ß had made German 10 % unreadable)
    assert not any(spells_a_letter(p) for p in ("##ß", "æ", "ø", "ł", "ı", "σ", "##μ"))
    assert index.encoder.unreadable_share(["Was heißt Maß?", "Hvordan får jeg ændret min kode?", "σ or σ²?"]) == [
        0.0, 0.0, 0.0]  # fmt: skip
    assert index.ranker.readable([korean, english]).tolist() == [False, True]  # answered by BM25 alone
    faq = tmp_path / "ko.csv"
    faq.write_text("question,answer\n비밀번호를 잊어버렸어요,비밀번호 찾기를 누르세요.\n배송비는 얼마인가요?,"
                   "3만원 이상 무료입니다.\n주문을 취소하고 싶어요,마이페이지에서 취소하세요.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"retrieval='dense': the encoder cannot read this FAQ \(\d+\.\d% of its word "
                       r"pieces are unknown to it, or letters of a script it has no words for\)"):  # fmt: skip
        build_index(faq, tmp_path / "dense", retrieval="dense", intents=False)
    built = build_index(faq, tmp_path / "hybrid", intents=False)
    assert built["retrieval"]["dense_readable"] is False and built["ranking"]["mode"] == "bm25"


def test_a_mostly_english_faq_answers_its_chinese_entry_on_bm25s_own_threshold(tmp_path: Path) -> None:
    rows = ["How do I reset my password?,Open Settings and choose Reset password; we email you a link.",
            "How do I change my email address?,Edit the email field under Settings and confirm the link we send.",
            "Can I get a refund?,Refunds are paid within 14 days of a return to the original card.",
            "Where is my parcel?,Track it from Orders; parcels usually arrive in three working days.",
            "How do I delete my account?,Write to support and we close it within a week.",
            "如何重置密码？,打开设置并选择重置密码，我们会发送链接。"]  # fmt: skip
    faq = tmp_path / "faq.csv"
    faq.write_text("question,answer\n" + "\n".join(rows) + "\n", encoding="utf-8")
    built = build_index(faq, tmp_path / "idx", intents=False, rerank=False)
    assert built["retrieval"]["mode"] == "hybrid" and "lexical_threshold" in built["handoff"]
    # The fused threshold is of the questions the encoder reads: the Chinese one, judged on BM25's own
    # threshold, had been among its trials with a score on BM25's scale.
    assert built["handoff"]["answerable_trials"] == built["handoff"]["unanswerable_trials"] == 5
    # --question-weight 1 leaves the answers, and so the re-ranker, no say: it had been fitted and reported used.
    assert build_index(faq, tmp_path / "w1", intents=False, question_weight=1.0)["rerank"] is None
    one = tmp_path / "one.csv"  # too small to split for the re-ranker's check: no figure, valid JSON (no NaN)
    one.write_text("question,answer\n" + rows[0] + "\n", encoding="utf-8")
    report = build_index(one, tmp_path / "one", intents=False)
    halves = report["rerank"]["halves"]
    assert json.dumps(halves, allow_nan=False) and all(h["reranked_mrr"] is None for h in halves)
    from attend.apps.support.cli import format_build

    # Before: "held-out MRR none (too few entries), none (too few entries): not kept (it did not win on both halves)".
    assert "re-ranker: not kept (too few entries to hold any out and judge it)" in format_build(report)
    index = SupportIndex.load(tmp_path / "idx")
    asked = index.ask("如何重置密码？")  # the encoder cannot read it: BM25 alone, on BM25's calibrated threshold
    assert asked["retrieval"]["mode"] == "bm25" and asked["answers"][0]["question"] == "如何重置密码？"
    assert asked["retrieval"]["note"] == ("lexical only (BM25) for this question: more than 25% of its pieces are "
                                          "unknown to the encoder, or letters of a script it has no words for")
    assert not asked["handoff"] and asked["threshold"] == pytest.approx(built["handoff"]["lexical_threshold"], abs=1e-4)
    assert index.ask("今天天气怎么样")["handoff"]  # nothing of it in the FAQ
    # At a dense weight of 1 (an FAQ whose paraphrases the encoder ranks best) BM25's side had been
    # dropped for such a question with the encoder's: every entry scored 0, in no order.
    index.ranker.retrieval = dataclasses.replace(index.ranker.retrieval, alpha=1.0)
    reworded = index.ask("重置密码")
    assert reworded["retrieval"]["mode"] == "bm25" and reworded["answers"][0]["question"] == "如何重置密码？"
    assert reworded["answers"][0]["score"] > 0 and "no word of the question" not in reworded["reason"]
    # One entry: BM25's scores are 0 or below (every word is in every entry), so its threshold is too,
    # and a question with no word of the FAQ, scoring 0, had been answered.
    alone = SupportIndex.load(tmp_path / "one")
    assert alone.config["handoff"]["lexical_threshold"] <= 0
    unmatched = alone.ask("今天天气怎么样")
    assert unmatched["handoff"] and unmatched["reason"].startswith("no word of the question occurs in the FAQ")
    alone.ranker.retrieval = dataclasses.replace(alone.ranker.retrieval, fusion="rrf")  # RRF's scores are never 0
    assert alone.ask("今天天气怎么样")["handoff"]
    # Two entries: a word in one of them weighs 0 in BM25 (half the entries), yet it is a word of the FAQ.
    two = tmp_path / "two.csv"
    two.write_text("question,answer\n" + "\n".join(rows[:2]) + "\n", encoding="utf-8")
    build_index(two, tmp_path / "two", intents=False, rerank=False, retrieval="bm25")
    matched = SupportIndex.load(tmp_path / "two").ask("password")
    assert not matched["reason"].startswith("no word") and "no word" not in matched["reason"]
    # At --question-weight 1 BM25 reads the stored questions alone: a word of the answer only is no match.
    build_index(one, tmp_path / "q1", intents=False, rerank=False, retrieval="bm25", question_weight=1.0)
    questions_only = SupportIndex.load(tmp_path / "q1")
    answer_words = questions_only.ask("email link")
    assert answer_words["handoff"] and answer_words["reason"].startswith("no word of the question occurs in the "
                                                                         "FAQ's questions")  # fmt: skip
    common = questions_only.ask("how do I")  # words BM25 does not count, though the FAQ has them
    assert common["handoff"] and common["reason"].startswith("the question has only words too common for BM25 to "
                                                             "count ('how', 'do', 'i')")  # fmt: skip
    # No word at all: it had been said to hold only common words "(such as 'how', 'do')"
    emoji = questions_only.ask("😀😀 ?!")
    assert emoji["handoff"] and emoji["reason"].startswith("the question has no word BM25 can count (only symbols")


def test_a_left_out_entry_scores_minus_infinity_at_every_fusion_weight(index: SupportIndex) -> None:
    """Calibration leaves each entry out of its own trial. At alpha 0 or 1 the weighted fusion made
    0 * -inf = NaN there, every trial's best score NaN, and the hand-off threshold NaN: nothing was
    ever handed off."""
    import dataclasses

    ranker, kept = index.ranker, index.ranker.retrieval
    questions = [entry["question"] for entry in index.entries[:4]]
    try:
        for alpha in (0.0, 0.5, 1.0):
            ranker.retrieval = dataclasses.replace(kept, alpha=alpha)
            fused = ranker.ranked(questions, exclude=[0, 1, 2, 3])[0]
            assert not np.isnan(fused).any() and (fused[np.arange(4), np.arange(4)] == -np.inf).all()
    finally:
        ranker.retrieval = kept  # the module's index, as the other tests expect it


def test_an_index_whose_threshold_is_nan_is_refused_with_the_fix(index_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(index_dir, tmp_path / "index"))
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    config["handoff"]["threshold"] = float("nan")  # as indexes built with a one-sided fusion weight hold it
    (copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelDirError, match=r"hand-off threshold is nan, not a number .* --overwrite"):
        SupportIndex.load(copy)


def test_a_question_the_encoder_cannot_read_is_answered_lexically(index: SupportIndex) -> None:
    reply = index.ask("dpkg 软件包 保持 hold")
    assert reply["retrieval"]["mode"] == "bm25" and "this question" in reply["retrieval"]["note"]
    assert reply["answers"][0]["question"] == "How do I put a package on hold?"
    # No intent from embeddings of unknown pieces (a Chinese question's had contradicted its answer).
    assert reply["intent"]["label"] is None and reply["intent"]["probability"] is None
    assert "cannot read" in reply["intent"]["note"] and index.ask("dpkg hold")["intent"]["label"] is not None


def test_faq_bad_input_duplicates_stop_words_and_long_questions(index: SupportIndex, tmp_path: Path) -> None:
    twice = tmp_path / "twice.csv"
    twice.write_text("question,answer\nHow?,Like so.\nWhy?,Because.\nhow?, like  so.\n")
    with pytest.raises(DataError, match=r"twice.csv:4: the entry 'how\?' repeats .*twice.csv:2 word for word"):
        read_faq(twice)
    twice.write_text("question,answer\naptitude,A package manager.\naptitude,Use it to upgrade.\n")
    assert len(read_faq(twice)) == 2  # a heading repeated with another answer is a different entry
    stop = index.ask("what is the?")  # no lexical term: the encoder alone decides, and it is unsure
    assert stop["answers"] and stop["handoff"]
    long = index.ask("how do I put a package on hold? " + "please " * 2000)  # 14,000 characters
    assert long["truncated"] and long["answers"][0]["question"] == "How do I put a package on hold?"


def test_an_index_built_before_hybrid_retrieval_still_ranks_with_the_encoder(index_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(index_dir, old)
    config = json.loads((old / "config.json").read_text())
    del config["retrieval"]
    config["format_version"] = 1
    (old / "config.json").write_text(json.dumps(config))
    reply = SupportIndex.load(old).ask("change the default paper size to A4", k=1)
    assert reply["retrieval"]["mode"] == "dense"
    assert reply["answers"][0]["question"] == "How can I ensure that all programs use the same paper size?"
    # A format_version this code did not write (a newer attend's, or not a number) is refused, not guessed at.
    for version in (4, "2", None, 2.0):
        (old / "config.json").write_text(json.dumps({**config, "format_version": version}))
        said = rf"index format_version {version!r} is not one this attend reads \(a whole number, 1 to 3\); build it"
        with pytest.raises(ModelDirError, match=said):
            SupportIndex.load(old)
    # A reciprocal-rank-fusion index of before: its threshold is on rank sums, which the answers no longer are.
    (old / "config.json").write_text(json.dumps({**config, "format_version": 2, "retrieval": {
        "mode": "hybrid", "fusion": "rrf"}}))  # fmt: skip
    with pytest.raises(ModelDirError, match="calibrated on reciprocal-rank scores, which say nothing of confidence"):
        SupportIndex.load(old)


def test_cross_attention_interaction_and_the_rule_that_keeps_the_reranker() -> None:
    import torch

    from attend.apps.support.rerank import fit_reranker, interaction

    # Seeded: for about 2 % of random questions a question token's cosine with -question[0] is
    # positive, and the sign check below failed depending on which tests ran before in the worker.
    torch.manual_seed(0)
    question = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    same = torch.stack([torch.cat([question, torch.zeros(2, 8)]), torch.zeros(5, 8)])  # (2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    same[1, 0] = -question[0]
    scores = interaction(question, same, mask, tau=0.01)
    assert scores[0] == pytest.approx(1.0, abs=1e-4) and scores[1] < 0  # each token finds itself; or its opposite
    # A first stage that is always right cannot be beaten: the re-ranker is not kept, and says why.
    def states(texts: list[str], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(len(texts), 4, 8), torch.ones(len(texts), 4, dtype=torch.bool)

    first = np.eye(12)[[i % 12 for i in range(24)]]
    stored, report = fit_reranker(states, [f"a{i}" for i in range(12)], [f"q{i}" for i in range(24)],
                                  [i % 12 for i in range(24)], first)  # fmt: skip
    assert stored is None and report["used"] is False
    assert [h["first_stage_mrr"] for h in report["halves"]] == [1.0, 1.0]


def test_the_reranker_is_kept_where_it_wins_and_reorders_the_top(index_dir: Path, index: SupportIndex) -> None:
    rerank = json.loads((index_dir / "config.json").read_text())["rerank"]
    assert len(rerank["halves"]) == 2 and rerank["tau"] > 0 and rerank["beta"] > 0
    assert rerank["used"] == all(h["reranked_mrr"] > h["first_stage_mrr"] for h in rerank["halves"])
    reply = index.ask("how do I hold back a package?")
    assert reply["retrieval"]["reranked"] is rerank["used"]
    assert ("rerank_states" in index.tensors) is rerank["used"]
    assert (index.describe()["reranker"] is not None) is rerank["used"]


def _judged(reply: dict) -> float:
    """The score a reply's hand-off reason judged ("best match score S ...")."""
    import re

    found = re.search(r"best match score (-?[\d.]+)", reply["reason"])
    assert found is not None, reply["reason"]
    return float(found.group(1))


def test_the_reranked_answer_keeps_the_stored_questions_evidence_and_is_the_one_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-ranker ordered the top answers by their answers-only score: a question asked word for
    word fell out of the answers behind an entry with a wordier answer, and the hand-off was still
    judged on the missing entry's score ("confident: best match score 0.74" beside a 0.59)."""
    import torch

    from attend.apps.support import index as index_module

    faq = tmp_path / "faq.csv"
    faq.write_text(
        "question,answer\n"
        'Does the app work offline?,"Everything you opened recently is cached on the device, and changes sync '
        'the next time a connection is available."\n'
        "Is the app available on iPhone?,Yes: the app works on iPhone and iPad; get it from the App Store.\n"
        "How do I reset my password?,Choose Forgot password on the sign-in screen and follow the e-mail.\n",
        encoding="utf-8",
    )  # fmt: skip
    build_index(faq, tmp_path / "idx", intents=False)
    index = SupportIndex.load(tmp_path / "idx")
    question = "Does the app work when offline?"  # not word for word: the ranking, not the exact match, decides
    answers_only = index.ranker.ranked([question], question_weight=0.0)[0]
    assert int(answers_only[0].argmax()) == 1  # by its answer alone, the iPhone entry matches best
    # A re-ranker that adds nothing (interaction 0 everywhere) must leave the first stage's order.
    tau, beta = 0.05, 1.0
    index.reranker = (tau, beta)
    size = len(index.entries)
    monkeypatch.setitem(index.tensors, "rerank_states", torch.zeros(size, 1, 4))
    monkeypatch.setitem(index.tensors, "rerank_mask", torch.ones(size, 1, dtype=torch.bool))
    monkeypatch.setattr(index_module, "interaction", lambda q, states, mask, t: torch.zeros(len(states)))
    reply = index.ask(question, k=3)
    assert reply["retrieval"]["reranked"] is True
    best = reply["answers"][0]
    assert best["question"] == "Does the app work offline?"  # first (it was missing from the answers)
    assert [a["rerank_score"] for a in reply["answers"]] == sorted((a["rerank_score"] for a in reply["answers"]),
                                                                   reverse=True)  # fmt: skip
    assert _judged(reply) == pytest.approx(best["score"], abs=6e-3)  # the answer given is the one judged
    # An interaction that favours another answer moves it up by (1 - w) * beta times what it adds; put
    # first, that answer is the one the hand-off judges, on its own first-stage score.
    monkeypatch.setattr(index_module, "interaction",
                        lambda q, states, mask, t: torch.tensor([0.0, 4.0, 0.0][: len(states)]))  # fmt: skip
    moved = index.ask(question, k=3)
    added = sorted(round(a["rerank_score"] - a["score"], 3) for a in moved["answers"])
    assert added == [0.0, 0.0, round((1 - index.ranker.question_weight) * beta * 4, 3)]
    given = moved["answers"][0]
    assert given["question"] != best["question"] and given["score"] < best["score"] - 0.02
    assert _judged(moved) == pytest.approx(given["score"], abs=6e-3)  # the first stage's best had been judged


def test_a_hand_off_reason_shows_the_decimals_that_tell_score_and_threshold_apart() -> None:
    from attend.apps.support.index import _against_threshold

    assert _against_threshold(0.5254, 0.5338) == "best match score 0.525 below threshold 0.534"  # was 0.53 and 0.53
    assert _against_threshold(0.9, 0.5) == "best match score 0.90 at or above threshold 0.50"
    assert _against_threshold(0.5, 0.5) == "best match score 0.500000 at or above threshold 0.500000"


def test_a_question_asked_as_the_faq_asks_it_gets_that_entry_first(tmp_path: Path) -> None:
    """Before: the near-duplicate, whose answer repeats the question's words, outscored the entry asked."""
    faq = tmp_path / "faq.csv"
    faq.write_text(
        "question,answer\nHow do I reset my password?,Click Forgot password on the sign-in page.\n"
        'How do I reset my password on the mobile app?,"In the app, open Settings, then Account, then Reset '
        'password; the app sends you an email to reset the password of your account."\n'
        "How do I change my email address?,Go to Settings > Profile and edit the email field.\n"
        "What are your opening hours?,We are open 9 to 5 on weekdays.\n"
        "How long does delivery take?,Two to four working days.\n",
        encoding="utf-8",
    )
    build_index(faq, tmp_path / "idx", intents=False)
    index = SupportIndex.load(tmp_path / "idx")
    for asked in ("How do I reset my password?", "how do i  reset my password", "ＨＯＷ do I reset my password?!"):
        reply = index.ask(asked, k=1)
        assert [a["question"] for a in reply["answers"]] == ["How do I reset my password?"], asked
        assert not reply["handoff"] and reply["reason"].startswith("the FAQ's own question"), asked
    fused = index.scores(["How do I reset my password?"])[0]
    assert fused[1] > fused[0]  # the scores alone rank the near-duplicate first: the rule is what decides
    other = index.ask("How do I reset my password on the mobile app?")
    assert other["answers"][0]["question"] == "How do I reset my password on the mobile app?"
    assert not index.ask("How can I reset my password?")["reason"].startswith("the FAQ's own")  # reworded: scores
    from attend.apps.support.index import _as_asked

    assert _as_asked("Is C++ supported?") != _as_asked("Is C# supported?")  # only the closing punctuation goes
    assert _as_asked("  Wie geht das？ ") == _as_asked("wie geht das")


def test_an_html_link_in_a_question_keeps_no_address() -> None:
    """The address went into the question ("How do I reset my password? (https://...)"), which no
    customer asks, and the exact-question match could not find it."""
    page = ('<h3><a href="https://shop.example/faq#reset">How do I reset my password?</a></h3><p>See the '
            '<a href="https://shop.example/reset">reset page</a>.</p><h3>Refunds?</h3><p>Yes.</p>')  # fmt: skip
    assert parse_html(page)[0] == ("How do I reset my password?", "See the reset page (https://shop.example/reset).")
    listed = ('<dl><dt><a href="https://x.example/r">Refunds?</a></dt><dd>Within <a href="https://x.example/d">30 '
              "days</a>.</dd><dt>Returns?</dt><dd>Yes.</dd></dl>")  # fmt: skip
    assert parse_html(listed)[0] == ("Refunds?", "Within 30 days (https://x.example/d).")


def test_a_word_in_half_the_answers_carries_no_weight_and_breaks_nothing(tmp_path: Path) -> None:
    """Before: BM25 gives such a word weight 0, and the answer's word shares divided by 0 (a 500)."""
    faq = tmp_path / "two.csv"
    faq.write_text("question,answer\nWhat is the return policy?,Our policy allows returns within 30 days.\n"
                   "Where are you located?,In Berlin.\n", encoding="utf-8")  # fmt: skip
    build_index(faq, tmp_path / "two", intents=False)
    reply = SupportIndex.load(tmp_path / "two").ask("policy")
    assert reply["answers"][0]["question"] == "What is the return policy?"
    assert reply["answer_words"] == []  # "policy" is in one answer of two: BM25 weight 0
    with faq.open("a", encoding="utf-8") as f:  # a third answer: a word in one of three has a weight
        f.write("How do I pay?,By card or by bank transfer.\n")
    build_index(faq, tmp_path / "three", intents=False)
    shared = SupportIndex.load(tmp_path / "three").ask("policy for returns within days")
    assert {w["word"] for w in shared["answer_words"]} == {"policy", "returns", "days"}
    assert sum(w["weight"] for w in shared["answer_words"]) == pytest.approx(1.0, abs=1e-3)


def test_q_and_a_lines_in_a_row_keep_every_question_and_every_answer_line(tmp_path: Path) -> None:
    """Before: of two Q: lines before one A: only the second was indexed, and of two A: lines only
    the first was kept; an A: with no Q: before it, and a last Q: with no A:, were dropped without a word."""
    text = ("Q: How do I cancel my subscription?\nQ: How can I stop my plan?\nA: Press Cancel plan.\nA: Or email us."
            "\n\nA: Refunds follow within 14 days.\n\nQ: Where is my invoice?\nA: Under Billing.\n")  # fmt: skip
    cancel = "Press Cancel plan.\nOr email us.\n\nRefunds follow within 14 days."  # a blank line: a paragraph
    expected = [("How do I cancel my subscription?", cancel), ("How can I stop my plan?", cancel),
                ("Where is my invoice?", "Under Billing.")]  # fmt: skip
    assert parse_qa_text(text) == expected
    assert parse_markdown(f"# Billing\n\n{text}") == expected  # a section of Q:/A: lines
    assert parse_markdown(text) == expected
    paragraphs = "".join(f"<p>{line}</p>" for line in text.splitlines() if line)
    assert [q for q, _ in parse_html(paragraphs)] == [q for q, _ in expected]
    assert parse_html(paragraphs)[0][1] == "Press Cancel plan.\n\nOr email us.\n\nRefunds follow within 14 days."
    faq = tmp_path / "faq.txt"
    faq.write_text(text, encoding="utf-8")
    assert [e.question for e in read_faq(faq)] == [q for q, _ in expected]
    faq.write_text("Q: How do I pay?\nA: By card.\nQ: Can I get a refund?\nQ: Ship abroad?\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"faq\.txt: line 3: the question 'Can I get a refund\?' \(and 1 more\) has "):
        read_faq(faq)
    # A Q: with an answer under it not marked A: had been glued to its text and given the next Q:'s answer.
    faq.write_text("Q: How do I reset my password?\nGo to Settings > Security.\n\nQ: Why is the app slow?\n"
                   "A: Our servers are busy.\n", encoding="utf-8")  # fmt: skip
    with pytest.raises(DataError, match=r"the question 'How do I reset my password\? Go to Settings > Security\.' "
                       r"has no answer"):  # fmt: skip
        read_faq(faq)
    faq.write_text("Intro.\nA: By card.\nQ: How do I pay?\nA: Cash.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"faq\.txt: line 2: the answer 'A: By card\.' has no Q: line before it"):
        read_faq(faq)
    # A heading's answer written after "A:" stays the heading's (no Q: line to answer).
    assert parse_markdown("## How do I pay?\n\nA: By card.\n\n## Refunds?\n\nA: Yes.\n") == [
        ("How do I pay?", "By card."), ("Refunds?", "Yes.")]


def test_code_blocks_keep_their_lines_and_indentation_in_every_format(tmp_path: Path) -> None:
    """Before: a Markdown fenced or indented block and an HTML <pre> had their indentation and line
    breaks collapsed ("server:\\n port: 8080"), which changes what a YAML or Python answer means; a
    CSV kept them. The rest of an answer's spacing is collapsed as before."""
    from attend.apps.support.cli import format_answer

    yaml = "server:\n  port: 8080\n  tls:\n    enabled: true"
    loop = "for i in range(3):\n    print(i)\n\n\nprint('done')"
    markdown = (f"## How do I configure it?\n\nPut   this in `config.yaml`:\n\n```yaml\n{yaml}\n```\n\nThen restart."
                "\n\n"
                "## How do I loop?\n\nUse:\n\n" + "\n".join(f"    {line}" if line else "" for line in loop.split("\n"))
                + "\n\n- a list item\n\n    its second paragraph,   not code\n\n<pre>x:\n  y: 1</pre>\n")  # fmt: skip
    assert parse_markdown(markdown) == [
        ("How do I configure it?", f"Put this in config.yaml:\n\n{yaml}\n\nThen restart."),
        ("How do I loop?", f"Use:\n\n{loop}\n\n- a list item\n\nits second paragraph, not code\n\nx:\n  y: 1"),
    ]
    html = (f"<h2>How do I configure it?</h2><p>Put   this in <code>config.yaml</code>:</p><pre>\n{yaml}</pre>"
            f"<p>Then restart.</p><dl><dt>How do I loop?</dt><dd><pre><code>{loop}</code></pre></dd></dl>")
    assert parse_html(html) == [("How do I configure it?", f"Put this in config.yaml:\n\n{yaml}\n\nThen restart."),
                                ("How do I loop?", loop)]  # fmt: skip
    faq = tmp_path / "faq.md"
    faq.write_text(markdown, encoding="utf-8")
    assert yaml in read_faq(faq)[0].answer
    # ... and `attend support ask` prints them line by line, as written (wrapped whole, they ran together).
    reply = {"handoff": False, "reason": "r", "answers": [{"question": "Q?", "answer": f"Put this:\n\n{yaml}",
                                                            "score": 0.9}]}  # fmt: skip
    assert "\n    server:\n      port: 8080\n      tls:\n        enabled: true\n" in format_answer(reply)
    tabbed = {**reply, "answers": [{**reply["answers"][0], "answer": "Run:\n\nall:\n\techo hi\n\t\ty"}]}
    assert "\n    all:\n    \techo hi\n    \t\ty" in format_answer(tabbed)  # tab-indented lines had lost them


def test_a_question_asked_twice_with_different_answers_is_noted_and_handed_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: accepted without a word, and asked as written answered by one of the two, as certain."""
    faq = tmp_path / "faq.csv"
    faq.write_text("question,answer\nHow do I pay?,By card.\nWhere are you?,In Berlin.\nhow do I pay,By cash.\n"
                   "When are you open?,From 9 to 5.\nWhen are you open,from 9 to  5.\n", encoding="utf-8")  # fmt: skip
    report = build_index(faq, tmp_path / "idx", intents=False, rerank=False)
    assert report["notes"] == [f"the question 'How do I pay?' is asked at {faq}:2 and {faq}:4 with different answers: "
                               "asked as written, it is handed off to a person (give it one answer, or word the "
                               "questions apart)"]  # the same answer twice (case, spacing aside) is no conflict
    from attend.apps.support.cli import format_build

    assert f"note: the question 'How do I pay?' is asked at {faq}:2 and {faq}:4" in format_build(report)
    index = SupportIndex.load(tmp_path / "idx")
    reply = index.ask("How do I pay?")
    assert reply["handoff"] and reply["reason"].startswith(
        f"the FAQ asks this question 2 times with different answers ({faq}:2, {faq}:4): a person should say")
    assert {a["answer"] for a in reply["answers"][:2]} == {"By card.", "By cash."}  # both, first
    opening = index.ask("When are you open?")
    assert not opening["handoff"] and opening["reason"].startswith("the FAQ's own question")


def test_calibration_counts_an_entry_with_the_same_answer_as_right() -> None:
    """An FAQ listing other wordings of a question as rows of their own: a left-out question that
    finds its twin (another row, the same answer) had been counted a wrong answer, so the reported
    precision fell and a --target-precision threshold rose until clear rewordings were handed off."""
    import torch

    from attend.apps.support.faq import FaqEntry
    from attend.apps.support.fusion import Retrieval
    from attend.apps.support.index import self_retrieval

    entries = [FaqEntry("How do I pay?", "By card or cash."),
               FaqEntry("What payment do you take?", "By card or  CASH."),  # the same answer, case and spacing aside
               FaqEntry("Where are you?", "In Berlin.")]  # fmt: skip
    found = np.array([[0.9, 0.8, 0.1], [0.7, 0.9, 0.2], [0.6, 0.1, 0.3]])  # entry 2's best is entry 0

    class Ranker:
        def __init__(self) -> None:
            self.retrieval = Retrieval(mode="bm25")
            self.tensors = {"questions": torch.zeros(3, 2)}

        def ranked(self, texts: list[str], *, vectors: object = None, exclude: object = None) -> tuple:
            scores = found.copy()
            if exclude is not None:
                scores[np.arange(3), list(exclude)] = -np.inf
            return scores, scores, np.ones(3, dtype=bool)

        def scores(self, texts: list[str], **options: object) -> tuple:
            fused, _, readable = self.ranked(texts, **options)  # type: ignore[arg-type]
            return fused, readable

    scores, correct, counts = self_retrieval(Ranker(), entries, seed=0)  # type: ignore[arg-type]
    assert scores.tolist() == [0.9, 0.9, 0.6, 0.8, 0.7, 0.6]
    # reworded: each finds itself; left out: the two wordings find each other (right), "Where?" finds "pay" (wrong)
    assert correct.tolist() == [True, True, False, True, True, False]
    assert counts["shared_answers"] == 2


def test_reciprocal_rank_fusion_hands_off_on_the_sides_scores_not_the_rank_sum(tmp_path: Path) -> None:
    """An RRF score is rank-based: about 2 / 61 for whatever both rankers put first, an off-topic
    question's as a clear one's, and the threshold calibrated on it could not tell them apart (8 of 12
    clear paraphrases handed off). The hand-off now judges the two sides' own scores of that entry."""
    from attend.apps.support.fusion import RRF_K

    faq = tmp_path / "faq.csv"
    faq.write_text(
        "question,answer\n"
        "How do I reset my password?,Choose Forgot password on the sign-in page and follow the e-mail.\n"
        "Which payment methods do you accept?,\"We accept Visa, Mastercard and PayPal.\"\n"
        "How long does delivery take?,Standard delivery takes 3 to 5 business days.\n"
        "Can I return an item?,Yes: returns are free within 30 days.\n"
        "How do I delete my account?,E-mail privacy@example.com from the address on file.\n"
        "What are your support hours?,\"Monday to Friday, 9:00 to 17:00.\"\n"
        "Can I change my username?,Usernames can be changed once every 30 days under Settings.\n"
        "How do I contact a human?,Use the chat bubble at the bottom right or call us.\n",
        encoding="utf-8",
    )  # fmt: skip
    build_index(faq, tmp_path / "idx", intents=False, fusion="rrf", rerank=False)
    index = SupportIndex.load(tmp_path / "idx")
    # (before, the first was handed off at 0.0323 below 0.0324, the second answered at 0.0325)
    clear = index.ask("How many days until my order arrives?", k=8)
    off_topic = index.ask("Who won the football world cup in 2014?", k=8)
    assert clear["answers"][0]["question"] == "How long does delivery take?" and not clear["handoff"]
    assert off_topic["handoff"]
    for reply in (clear, off_topic):
        rrf = [a["rrf_score"] for a in reply["answers"]]
        assert rrf == sorted(rrf, reverse=True) and rrf[0] <= 2 / (RRF_K + 1) + 1e-6  # the order, rank-based
        best = [e["question"] for e in index.entries].index(reply["answers"][0]["question"])
        dense = index.ranker.dense(index.encoder.embed([reply["question"]]))[0, best]
        lexical = index.ranker.lexical([reply["question"]])[0, best]
        assert reply["answers"][0]["score"] == pytest.approx(0.5 * dense + 0.5 * lexical, abs=1e-4)  # what is judged
    app = FastAPI()
    app.include_router(support_router(index))
    served = TestClient(app).post("/v1/support/ask", json={"question": clear["question"], "k": 8}).json()
    assert [a["rrf_score"] for a in served["answers"]] == [a["rrf_score"] for a in clear["answers"]]


def test_a_model_verb_given_an_index_says_what_runs_it(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It had been called an outside package's model, and `attend evaluate` then asked for a plugin."""
    from attend.apps.support.index import INDEX_FORMAT
    from attend.cli import main
    from attend.config import APP_DIRECTORIES
    from attend.io import ModelDirError
    from attend.runtime import load

    assert INDEX_FORMAT in APP_DIRECTORIES
    from attend.apps.support.index import PACKAGE_MODEL, _shown_encoder

    # GET /v1/model names a fine-tuned encoder by its folder's name, not the server's path to it
    assert _shown_encoder("/srv/private/encoders/faq-tuned") == "faq-tuned"
    assert _shown_encoder(PACKAGE_MODEL) == PACKAGE_MODEL
    advice = f"ask it with `attend support ask {index_dir} QUESTION`, or serve it with `attend serve --support-index"
    assert main(["predict", str(index_dir), "hello"]) == 2
    err = capsys.readouterr().err
    assert f"{index_dir} holds no text classifier: it is a support index: {advice}" in err, err
    with pytest.raises(ModelDirError, match=r"holds no model to load: it is a support index"):
        load(index_dir)
