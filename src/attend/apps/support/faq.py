"""Read an FAQ into question/answer pairs: CSV/TSV/JSONL/Parquet tables, Markdown, HTML or text.

Tables give the pairs directly (columns ``question``, ``answer`` and optionally ``intent``).
Documents have to be *split* into pairs, and FAQs are written in a few recurring shapes:

* headings that ask the question, the answer being the text up to the next heading
  (Markdown ``#`` or setext headings, HTML ``<h1>``..``<h6>``; the Debian FAQ's DocBook HTML is
  this shape, one ``<h2>``/``<h3>`` per question);
* definition lists ``<dt>`` question / ``<dd>`` answer, or ``<details><summary>``;
* ``Q:`` / ``A:`` prefixed paragraphs (also ``Question:`` / ``Answer:``, and full-width ``Ｑ：`` /
  ``Ａ：``), in any of the above.

Each document is parsed in every shape and the one that yields the most *question-like*
pairs (ending in ``?``) wins, so a page whose answers contain definition lists, or whose
headings are only section titles, is still split the way its author meant. Navigation,
tables of contents and footers are skipped: they are page furniture, not answers.

Nothing here imports torch, so the CLI can list and check FAQs quickly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from attend.data.readers import DataError, data_suffix, plain_line, read_data_bytes
from attend.data.validation import is_empty, is_missing_number, text_problem

__all__ = [
    "DOCUMENT_SUFFIXES",
    "FaqEntry",
    "answer_key",
    "clean_question",
    "parse_html",
    "parse_markdown",
    "parse_qa_text",
    "read_faq",
]

#: Extensions read as documents to split into pairs (everything else must be a table).
DOCUMENT_SUFFIXES = {".html": "html", ".htm": "html", ".xhtml": "html", ".md": "markdown", ".markdown": "markdown",
                     ".txt": "text"}  # fmt: skip
_TABLE_SUFFIXES = {".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"}
#: A question, its answer, and the file's line the question is on (None where it cannot be told).
_Pair = tuple[str, str, int | None]


@dataclass(frozen=True)
class FaqEntry:
    """One question with its answer.

    Attributes:
        question: The question as the FAQ asks it (section numbers removed).
        answer: The answer text; paragraphs separated by blank lines.
        intent: The intent label, when the FAQ gives one.
        source: Where it came from (``file:line`` for tables, ``file#n`` for documents), for messages.
    """

    question: str
    answer: str
    intent: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"question": self.question, "answer": self.answer}
        if self.intent is not None:
            data["intent"] = self.intent
        if self.source:
            data["source"] = self.source
        return data


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------

# "1.2. ", "3.1.10 ", "Q3: ", "Q: " (or full-width "Ｑ：") before a question: numbering, not content.
_NUMBERING = re.compile(r"^\s*(?:(?:\d+[.)])+\d*\s*|\d+\s+(?=\D)|(?:[QＱ](?:uestion)?\s*\d*\s*[:.)\-：])\s*)",
                        re.IGNORECASE)  # fmt: skip
_QUESTION_END = re.compile(r"[?？]\W*$")


def clean_question(text: str) -> str:
    """Collapse whitespace and drop leading section numbers or a ``Q:`` prefix."""
    text = re.sub(r"\s+", " ", text.replace(_CODE_OPEN, " ").replace(_CODE_CLOSE, " ")).strip()
    stripped = _NUMBERING.sub("", text, count=1).strip()
    return stripped or text


def _is_question(text: str) -> bool:
    return bool(_QUESTION_END.search(text.strip()))


# A code block (Markdown's fenced or indented one, HTML's <pre>) travels to _clean_answer between these
# two control characters, which no FAQ writes (read_faq removes them from a document as it reads it).
_CODE_OPEN, _CODE_CLOSE = "\x02", "\x03"
_CODE = re.compile(f"{_CODE_OPEN}(.*?){_CODE_CLOSE}", re.DOTALL)


def _unmarked(text: str) -> str:
    """A document without the characters that mark code blocks (no FAQ means them: they would be read as marks)."""
    return text.replace(_CODE_OPEN, "").replace(_CODE_CLOSE, "")


def _code(text: str) -> str:
    """``text`` marked as a code block, for :func:`_clean_answer` to keep as written."""
    return f"{_CODE_OPEN}{text}{_CODE_CLOSE}"


def _clean_answer(text: str) -> str:
    """Paragraphs with runs of spaces made one space, separated by one blank line; a code block kept
    as written, its own paragraph (its lines and indentation had been collapsed too: a YAML or Python
    answer changed its meaning, where the same answer from a CSV kept it)."""
    paragraphs: list[str] = []
    for n, piece in enumerate(_CODE.split(text)):
        if n % 2:  # a code block: without the blank lines around it
            code = re.sub(r"^(?:[ \t]*\n)+", "", piece.replace("\r\n", "\n")).rstrip()
            paragraphs += [code] if code else []
            continue
        piece = _unmarked(piece)  # a mark whose pair went elsewhere (a <pre> cut by a <dd>): no code, no mark
        prose = (re.sub(r"[ \t\r\f\v]+", " ", p).strip() for p in re.split(r"\n\s*\n", piece))
        paragraphs += [p for p in prose if p]
    return "\n\n".join(paragraphs)


# --------------------------------------------------------------------------------------------
# Q: / A: paragraphs (plain text, and inside Markdown or HTML text)
# --------------------------------------------------------------------------------------------

# Full-width "Ｑ："/"Ａ：" as Japanese FAQs write them too (they had found no pair at all).
_MARK = r"(?:[*_#>-]+\s*)*(Q|A|Question|Answer|Ｑ|Ａ)\s*[:：]\s*(?:[*_]+\s*)?"
_QA_MARK = re.compile(rf"^\s*{_MARK}", re.IGNORECASE | re.MULTILINE)
# The same marks where an HTML page writes them: at a line's start or after a tag ("<p>Q: ...").
_HTML_QA_MARK = re.compile(rf"(?:^|>)\s*{_MARK}", re.IGNORECASE | re.MULTILINE)


def _asks(mark: re.Match[str]) -> bool:
    """Whether a ``Q:``/``A:`` mark is a question's (``Q``, ``Question``, ``Ｑ``)."""
    return mark.group(1)[0] in "QqＱｑ"


def _question_lines(written: str, read: str, offsets: Sequence[int], *, html: bool = False) -> list[int | None]:
    """The line of ``written`` (the file's text) of each ``Q:`` mark at ``offsets`` in ``read`` (the text
    the marks were found in, as the FAQ reads: Markdown stripped, an HTML page's text): the n-th ``Q:``
    of one is the n-th of the other. None where they do not have as many (a ``Q:`` line inside an
    HTML comment, or after a ``<br>``): better no line than a wrong one."""
    marks = [m.start(1) for m in _QA_MARK.finditer(read) if _asks(m)]
    found = [m.start(1) for m in (_HTML_QA_MARK if html else _QA_MARK).finditer(written) if _asks(m)]
    if len(marks) != len(found):
        return [None] * len(offsets)
    lines, line, last = {}, 1, 0
    for mark, where in zip(marks, found, strict=True):
        line, last = line + written.count("\n", last, where), where
        lines[mark] = line
    return [lines.get(offset) for offset in offsets]


def _qa_body(text: str, marks: Sequence[re.Match[str]], i: int) -> tuple[str, str]:
    """The text of mark ``i`` (up to the next mark), and the spacing after it: a blank line or one break."""
    end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
    # (the next mark's match may begin with the blank line before it: its letter is where it begins)
    after = text[marks[i].end() : marks[i + 1].start(1) if i + 1 < len(marks) else len(text)]
    gap = "\n\n" if re.search(r"\n[ \t]*\n[\s*_#>-]*$", after) else "\n"
    return text[marks[i].end() : end].strip().strip("*_").strip(), gap


def parse_qa_text(text: str) -> list[tuple[str, str]]:
    """Pairs from lines starting ``Q:`` and ``A:`` (``Question:``/``Answer:``, full-width ``Ｑ：``/``Ａ：``,
    Markdown emphasis allowed).

    A question runs until its ``A:``; the answer until the next ``Q:``. ``Q:`` lines in a row are
    questions of the ``A:`` after them, as ``<dt>`` terms in a row share their ``<dd>``, and ``A:``
    lines in a row are one answer (before, each ``Q:`` but the last, and each ``A:`` but the first,
    had been dropped without a word). An ``A:`` without a ``Q:`` before it is left to the caller
    (:func:`read_faq` refuses it in a ``.txt``; in Markdown it is a heading's
    answer). A blank ``A:``, or ``Q:`` lines with no ``A:`` after them, give their questions an empty
    answer, and an answer under a blank ``Q:`` an empty question: the caller refuses them
    (:func:`read_faq` does), where they had been left out without a word.
    """
    return [(question, answer) for question, answer, _ in _qa_pairs(text)]


def _qa_pairs(text: str) -> list[tuple[str, str, int]]:
    """:func:`parse_qa_text`'s pairs, each with where its ``Q:`` mark is in ``text`` (for messages)."""
    pairs: list[tuple[str, str, int]] = []
    marks = list(_QA_MARK.finditer(text))
    asked: list[tuple[str, int]] = []  # the questions the next answer answers, with where each is
    parts: list[str] = []  # that answer's A: lines so far, each with the spacing after it
    runs_on = False  # the last Q:'s text ran on past its line
    for i, mark in enumerate(marks):
        body, gap = _qa_body(text, marks, i)
        if _asks(mark):
            if parts:  # a Q: after an answer starts the next pair
                pairs += [(question, _clean_answer("".join(parts)), at) for question, at in asked]
                asked, parts = [], []
            elif asked and runs_on:  # a Q: with lines under it and no A: is no question of the next A: (its
                # lines, an answer not marked A:, had been glued to it and the next answer given to it)
                pairs += [(question, "", at) for question, at in asked]  # refused by the caller: no answer
                asked = []
            asked.append((clean_question(body), mark.start(1)))
            runs_on = "\n" in body
        elif asked:
            parts.append(body + gap)
    pairs += [(question, _clean_answer("".join(parts)), at) for question, at in asked]
    return pairs


def _answers_something(text: str) -> bool:
    """Whether ``text`` has an ``A:`` line after a ``Q:`` line (Q:/A: structure, not a stray ``Q:``)."""
    asks = [_asks(mark) for mark in _QA_MARK.finditer(text)]
    return True in asks and False in asks[asks.index(True) :]


def _orphan_answer_line(text: str) -> int | None:
    """The line of an ``A:`` before any ``Q:`` in ``text`` (1-based), or None."""
    first = _QA_MARK.search(text)
    if first is None or _asks(first):
        return None
    return text.count("\n", 0, first.start(1)) + 1


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

_ATX = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_BOLD_LINE = re.compile(r"^\s*(\*\*|__)(.+?)\1\s*$")


def _markdown_sections(text: str) -> list[tuple[str, str, int, int, list[int]]]:
    """``(heading, body, level, line, body_lines)`` for every ATX/setext heading (``#`` is level 1, a
    setext ``===`` 1, ``---`` 2), and for whole-line bold questions (level 7, below any heading);
    headings as written; ``line`` is the heading's line in the file, ``body_lines`` each body line's."""
    lines = text.splitlines()
    numbers = [1]  # each one's line in the file, as messages count them: by \n (a form feed ends none)
    for chunk in text.splitlines(keepends=True)[:-1]:
        numbers.append(numbers[-1] + chunk.endswith("\n"))
    sections: list[tuple[str, list[str], int, int, list[int]]] = []
    in_code = False
    fence = ""  # the open fence: closed by one of its character, at least as long
    i = 0
    while i < len(lines):
        line, at = lines[i], numbers[i]
        mark = _FENCE_LINE.match(line)
        if mark and not fence:
            fence = mark.group(1)
        elif mark and mark.group(1)[0] == fence[0] and len(mark.group(1)) >= len(fence):
            fence = ""
        in_code = bool(fence) or bool(mark)
        heading, level = None, 7
        if not in_code:
            atx = _ATX.match(line)
            bold = _BOLD_LINE.match(line)
            if atx:
                heading, level = atx.group(2), len(atx.group(1))
            elif i + 1 < len(lines) and line.strip() and _SETEXT.match(lines[i + 1]) and not _SETEXT.match(line):
                heading, level = line, 1 if lines[i + 1].strip().startswith("=") else 2
                i += 1  # the underline
            elif bold and _is_question(bold.group(2)):
                heading = bold.group(2)
        if heading is not None:  # as written: parse_markdown strips and cleans it once
            sections.append((heading, [], level, at, []))
        elif sections:
            sections[-1][1].append(line)
            sections[-1][4].append(numbers[i])
        i += 1
    return [(q, "\n".join(body), level, at, body_lines) for q, body, level, at, body_lines in sections]


_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)([^`\n]+?)(?<!`)\1(?!`)")  # on one line: a fence is no span


def _with_address(text: str, address: str) -> str:
    """A link as its text, with its address where that is a web or mail address the text does not
    show (an answer's "see the [plugin guide](https://...)" had lost where the guide is)."""
    shown = re.match(r"(?:https?://|mailto:)\S+$", address) and address.removeprefix("mailto:") not in text
    return f"{text} ({address.removeprefix('mailto:')})" if shown else text


def _link(match: re.Match[str]) -> str:
    return _with_address(match.group(1), match.group(2))


def _titled(headings: Sequence[str], levels: Sequence[int]) -> bool:
    """Whether the page's first heading is its title ("# Bike shop FAQ" and its welcome): alone at
    the shallowest level, not a question, over deeper ones. Its text introduces the FAQ; it answers
    nothing. (A section's heading over questions may hold a real answer, "## Returns: 30 days.", as
    well as an introduction: it stays an entry.)"""
    return len(levels) > 1 and levels[0] < min(levels[1:]) and not _is_question(headings[0])


# A fence: ``` (no backtick after it on its line: ```x``` is inline code) or ~~~, closed by one at
# least as long, or by the end of the text.
_FENCE = re.compile(r"^[ \t]*(`{3,}(?=[^`\n]*$)|~{3,})[^\n]*\n(.*?)(?:^[ \t]*\1[`~]*[ \t]*$|\Z)",
                    re.MULTILINE | re.DOTALL)  # fmt: skip
_FENCE_LINE = re.compile(r"^[ \t]*(`{3,}(?!.*`)|~{3,})")
_AUTOLINK = re.compile(r"<((?:https?://|mailto:)[^\s<>]+|[^\s<>@]+@[^\s<>@]+\.[^\s<>@]+)>")


# A link's address, one level of parentheses in it ("javascript:alert(1)" had left its ")" in the text).
_ADDRESS = r"(?:[^()\s>]|\([^()\s]*\))*"
# Raw HTML in Markdown: an element whose content no reader sees, a comment, a line break, or the tag
# of another HTML element (its content stays). Only HTML's own element names, and not those a command's
# placeholder is spelt as: "attend train <DATA>" and "<input>" stay.
# Closed ones only: an unclosed "<template>" or "<!--" is kept as text (inside a line CommonMark reads it so;
# at a line's start it would hide the rest of the page, and here every later question with it).
_UNSEEN_HTML = re.compile(
    r"<(script|style|template|iframe|object|noscript)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL
)
_HTML_PRE = re.compile(r"<pre\b[^>]*>(.*?)</pre\s*>", re.IGNORECASE | re.DOTALL)
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_HTML_TAG = re.compile(
    r"</?(?:a|abbr|article|aside|audio|b|bdi|bdo|big|blink|blockquote|button|center|cite|code|dd|del|details|dfn|div"
    r"|dl|dt|em|embed|figcaption|figure|font|form|h[1-6]|hr|i|img|ins|kbd|li|link|mark|marquee|meta"
    r"|object|ol|p|picture|pre|q|s|samp|section|small|span|strike|strong|sub|summary|sup|svg|table"
    r"|tbody|td|textarea|tfoot|th|thead|tr|tt|u|ul|video|wbr)(?:\s[^<>]*)?/?>"
    # names a placeholder may have: a tag only with attributes (<time datetime=...>) or as a closing tag
    r"|</(?:input|label|select|source|time|var)\s*>|<(?:input|label|select|source|time|var)\s[^<>]*>",
    re.IGNORECASE,
)


def _inline_html(text: str) -> str:
    """Raw HTML of a Markdown FAQ as its text, as an HTML FAQ is read: the tags of inline elements
    go (their text stays), ``<br>`` is a line break, a script, style or comment is no text at all.
    Kept, it had been served as markup to whatever shows the answers."""
    text = _UNSEEN_HTML.sub("", text)
    return _HTML_TAG.sub("", _HTML_BREAK.sub("\n", text))


_INDENTED = re.compile(r"^(?: {4}|\t)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s|^ {2}")  # an item, or a line of one (indented by two)


def _indented_code(text: str, kept: Any) -> str:
    """Markdown's indented code blocks (lines indented by four spaces or a tab, after a blank line,
    not inside a list item) as code, less those four spaces: they had been read as prose, their
    indentation collapsed. ``kept`` stores a block and gives the placeholder that stands for it."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        before = next((line for line in reversed(out) if line.strip()), "")
        if (_INDENTED.match(lines[i]) and lines[i].strip() and (not out or not out[-1].strip())
                and not _LIST_ITEM.match(before)):  # fmt: skip
            end = i
            while end < len(lines) and (_INDENTED.match(lines[end]) or not lines[end].strip()):
                end += 1
            while not lines[end - 1].strip():  # the blank lines after the block are not in it
                end -= 1
            out.append(kept(_code("\n".join(_INDENTED.sub("", line) for line in lines[i:end]))))
            i = end
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def _strip_markdown(text: str, *, addresses: bool = True) -> str:
    """Markdown as plain text: emphasis marks, backticks, image and link syntax go; what a code span
    or a fenced block holds is kept as written (``plugins/__init__.py`` had become plugins/init.py,
    ``**bold**`` bold); an autolink ``<https://...>`` is its address. ``addresses``: a link keeps
    its web or mail address (an answer's; a question's is its text alone)."""
    spans: list[str] = []

    def kept(content: str) -> str:
        spans.append(content)
        return f"\x00{len(spans) - 1}\x00"

    text = _FENCE.sub(lambda match: kept(_code(match.group(2))), text)
    text = _indented_code(text, kept)
    text = _HTML_PRE.sub(lambda match: kept(_code(_HTML_TAG.sub("", match.group(1)))), text)  # raw HTML's own
    text = _CODE_SPAN.sub(lambda match: kept(match.group(2).strip()), text).replace("`", "")  # unpaired ones
    text = _AUTOLINK.sub(lambda match: kept(match.group(1).removeprefix("mailto:")), text)
    text = _inline_html(text)
    text = re.sub(rf"!\[([^\]]*)\]\({_ADDRESS}[^)]*\)", r"\1", text)  # images -> alt text
    text = re.sub(rf"\[([^\]]+)\]\(\s*<?({_ADDRESS})>?[^)]*\)", _link if addresses else r"\1", text)  # links -> text
    text = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"\1", text)  # strong emphasis, in pairs
    text = re.sub(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)", r"\1", text)  # not inside a word: __init__.py
    text = re.sub(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![\w*])", r"\1", text)  # *emphasis*
    text = re.sub(r"(?<![\w_])_(?=[^\s_])([^_\n]+?)(?<=[^\s_])_(?![\w_])", r"\1", text)  # _emphasis_
    return re.sub(r"\x00(\d+)\x00", lambda match: spans[int(match.group(1))], text)


_ANSWER_MARK = re.compile(r"^\s*(?:[*_]+\s*)?(?:A|Answer|Ａ)\s*[:：]\s*(?:[*_]+\s*)?", re.IGNORECASE)


def _markdown_qa(text: str) -> list[_Pair]:
    """The ``Q:``/``A:`` pairs of Markdown: each question's links as their text alone, as a question
    heading's are (they had kept their address: "the CLI (https://...)"), each answer's with theirs;
    each pair with its question's line in ``text`` (None where it cannot be told)."""
    read = _strip_markdown(text)
    pairs = _qa_pairs(read)
    lines = _question_lines(text, read, [at for _, _, at in pairs])
    asked = parse_qa_text(_strip_markdown(text, addresses=False))
    if len(asked) != len(pairs):  # an answer of a link alone, empty without its address: as they are
        return [(question, answer, line) for (question, answer, _), line in zip(pairs, lines, strict=True)]
    return [(question, answer, line)
            for (question, _), (_, answer, _), line in zip(asked, pairs, lines, strict=True)]  # fmt: skip


def parse_markdown(text: str) -> list[tuple[str, str]]:
    """Pairs from a Markdown FAQ: question headings with the text below, or ``Q:``/``A:`` lines (a
    question with nothing below it, that is no heading over deeper ones, with an empty answer)."""
    return [(question, answer) for question, answer, _ in _markdown_pairs(text)]


def _markdown_pairs(text: str) -> list[_Pair]:
    """:func:`parse_markdown`'s pairs, each with its question's line (None where it cannot be told)."""
    # A bare carriage return ends a line, as CommonMark has it: only headings had seen it so, and a Q:
    # line had taken the A: line after it into its question.
    text = re.sub(r"\r(?!\n)", "\n", _unmarked(text))
    # A heading as asked (a heading of an image alone, which strips to nothing, as written)
    sections = [(clean_question(_strip_markdown(q, addresses=False)) or clean_question(q), body, level, line, lines)
                for q, body, level, line, lines in _markdown_sections(text)]  # fmt: skip
    if _titled([section[0] for section in sections], [section[2] for section in sections]):
        sections = sections[1:]
    headed: list[_Pair] = []
    unanswered: list[tuple[str, int | None]] = []
    levels = [section[2] for section in sections]
    for n, (q, body, level, line, body_lines) in enumerate(sections):
        plain = _strip_markdown(body)
        # Q:/A: lines of the section's own text (not of a fenced block: a transcript shown as code)
        inner = _markdown_qa(body) if _answers_something(_strip_markdown(_FENCE.sub("", body))) else []
        inner = [(question, answer, None if at is None else body_lines[at - 1]) for question, answer, at in inner]
        if inner and not _is_question(q):
            # A topic's section of Q:/A: pairs ("## Billing" over them) is those questions, not one entry
            # answering "Billing" with them all; its text before the first Q: stays its own, unless the
            # heading is the page's title (its first, alone at the shallowest level: a welcome).
            lead = _clean_answer(plain[: _QA_MARK.search(plain).start()])  # type: ignore[union-attr]
            title = n == 0 and level == min(levels) and levels.count(level) == 1
            headed += [(q, lead, line)] if lead and not title else []
            headed += inner
            unanswered += [(question, at) for question, answer, at in inner if question and not answer]
        else:
            answer = _clean_answer(_ANSWER_MARK.sub("", plain.strip(), count=1))
            if not answer and _is_question(q) and (n + 1 == len(sections) or levels[n + 1] <= level):
                unanswered.append((q, line))  # a question with no answer, not a heading over deeper ones
            headed.append((q, answer, line))
    answered = [pair for pair in headed if pair[1]]
    chosen = _choose([answered, _markdown_qa(text)])
    # A question with no answer (not a heading over deeper ones) stays, for read_faq to refuse: it had
    # been left out of the index without a word.
    return [*chosen, *((q, "", line) for q, line in unanswered)] if chosen is answered else chosen


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "pre", "blockquote", "section", "article",
               "dl", "hr", "main", "body", "td", "th", "figure", "figcaption"}  # fmt: skip
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_SKIP_TAGS = {"script", "style", "head", "title", "nav", "noscript", "template", "svg", "button", "form", "footer"}
# Page furniture by class or id: navigation, tables of contents, footers, footnote blocks.
_SKIP_CLASS = re.compile(r"^(toc|table-of-contents|nav|navbar|navigation|nav(header|footer)|.*footer|footnotes?"
                         r"|breadcrumbs?|sidebar|menu|skip-link)$", re.IGNORECASE)  # fmt: skip
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "track", "wbr"}


class _FaqHTML(HTMLParser):
    """Flattens HTML into a list of blocks: ``("heading", level, text, line)``, ``("text", 0, text,
    line)``, ... with the line each starts on.

    ``("dt", ...)``/``("dd", ...)`` mark definition-list items and ``<details><summary>``
    (the summary is the question, the rest of the details the answer).
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, int, str, int]] = []  # (kind, level, text, line)
        self._line = 1  # where the text being gathered starts
        self._stack: list[tuple[str, bool]] = []  # (tag, skipped)
        self._skip_depth = 0
        self._buffer: list[str] = []
        self._kind: list[tuple[str, int]] = [("text", 0)]
        self._pre = 0
        self._anchors: list[tuple[str, int]] = []  # an open <a>: its address, where its text starts

    def _flush(self) -> None:
        text = "".join(self._buffer)
        self._buffer.clear()
        self._anchors = [(address, 0) for address, _ in self._anchors]
        line, self._line = self._line, self.getpos()[0]  # the next block starts at the tag that ends this one
        if not text.strip():
            return
        kind, level = self._kind[-1]
        self.events.append((kind, level, text, line))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag in ("br", "hr") and not self._skip_depth:
                self._buffer.append("\n")
            return
        if tag == "body" and any(open_tag == "head" for open_tag, _ in self._stack):
            self.handle_endtag("head")  # HTML5 may leave </head> out: <body> closes it
        classes = " ".join(value or "" for name, value in attrs if name in ("class", "id", "role")).split()
        skip = tag in _SKIP_TAGS or any(_SKIP_CLASS.match(c) for c in classes)
        self._stack.append((tag, skip))
        if skip:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag in _HEADINGS or tag in ("dt", "dd", "summary"):
            self._flush()
            if tag == "dd":  # where one starts, empty or not: terms before an empty <dd> share no later one
                self.events.append(("dd", 0, "", self._line))
            kind = "heading" if tag in _HEADINGS else tag
            self._kind.append((kind, int(tag[1]) if tag in _HEADINGS else 0))
        elif tag == "details":
            self._flush()
            self._kind.append(("dd", 0))  # the body of <details> after its <summary> is the answer
        elif tag in _BLOCK_TAGS:
            self._buffer.append("\n\n" if tag in ("p", "pre", "blockquote", "table", "ul", "ol", "dl") else "\n")
        if tag == "pre":
            self._pre += 1
            self._buffer.append(_CODE_OPEN if self._pre == 1 else "")  # kept as written, to the last space
        if tag == "a":
            self._anchors.append((dict(attrs).get("href") or "", len(self._buffer)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        # Close up to the matching tag; HTML in the wild leaves elements open.
        for depth in range(len(self._stack) - 1, -1, -1):
            if self._stack[depth][0] == tag:
                break
        else:
            return
        while len(self._stack) > depth:
            open_tag, skipped = self._stack.pop()
            if skipped:
                self._skip_depth -= 1
                continue
            if self._skip_depth:
                continue
            if open_tag == "pre":
                self._pre -= 1
                self._buffer.append(_CODE_CLOSE if not self._pre else "")
            if open_tag in _HEADINGS or open_tag in ("dt", "dd", "summary", "details"):
                self._flush()
                if len(self._kind) > 1:
                    self._kind.pop()
            elif open_tag == "dl":  # where a list's terms stop answering what follows
                self._flush()
                self.events.append(("dl_end", 0, "", self._line))
            elif open_tag in _BLOCK_TAGS:
                self._buffer.append("\n\n" if open_tag in ("p", "pre", "blockquote", "table") else "\n")
            if open_tag == "a" and self._anchors:
                address, start = self._anchors.pop()
                text = "".join(self._buffer[start:])
                # In an answer only: a question (a heading, <dt>, <summary>) is what a customer asks
                if self._kind[-1][0] in ("text", "dd") and text.strip() and _with_address(text, address) != text:
                    self._buffer.append(_with_address(text, address)[len(text):])  # " (address)", as in Markdown

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        self._buffer.append(data if self._pre else re.sub(r"\s+", " ", data))

    def close(self) -> None:
        super().close()
        self._flush()


def _html_blocks(text: str) -> list[tuple[str, int, str, int]]:
    parser = _FaqHTML()
    parser.feed(text)
    parser.close()
    return parser.events


def _heading_pairs(blocks: Iterable[tuple[str, int, str, int]]) -> list[_Pair]:
    """Every heading with the text up to the next heading (sub-headings end a section too); a heading
    that is the page's title (:func:`_titled`) is none, and so is one with no text under it: a web
    page's heading over a button, a form or a picture alone ("Still have questions?") is furniture."""
    pairs: list[tuple[str, list[str], int]] = []  # (question, its text, its line)
    levels: list[int] = []
    listed: set[int] = set()  # the questions of a definition list under a heading
    sharing: list[int] = []  # those the next <dd> answers: terms in a row share it, as HTML has it
    section = -1  # the heading whose answer the text outside such questions is
    for kind, level, text, line in blocks:
        if kind == "heading":
            pairs.append((clean_question(text), [], line))
            levels.append(level)
            section, sharing = len(pairs) - 1, []
        elif kind == "dt" and pairs and _is_question(text):
            # An entry of its own (a glossary's terms stay part of the answer): "Is there an app?" had
            # been printed inside the answer above it, to every customer who asked that question.
            if sharing and pairs[sharing[-1]][1]:  # its <dd> has begun: this term starts a new group
                sharing = []
            pairs.append((clean_question(text), [], line))
            listed.add(len(pairs) - 1)
            sharing.append(len(pairs) - 1)
        elif kind in ("dl_end", "dt"):  # the list ends, or a term that is no question: the heading's again
            sharing = []
            if kind == "dt" and pairs:
                pairs[section][1].append(text)
        elif pairs:
            for i in sharing or [section]:
                pairs[i][1].append(text)
    # A title is told among the headings alone: a list's questions below one are not deeper headings.
    first = 1 if _titled([q for i, (q, _, _) in enumerate(pairs) if i not in listed], levels) else 0
    found = [(i, q, _clean_answer("\n".join(body)), line) for i, (q, body, line) in enumerate(pairs)
             if i >= first and q]  # fmt: skip
    # An empty <dd> stays, for read_faq to refuse, as a definition list's does.
    return [(q, a, line) for i, q, a, line in found if a or i in listed]


def _list_pairs(blocks: Iterable[tuple[str, int, str, int]]) -> list[_Pair]:
    """``<dt>``/``<summary>`` questions with the ``<dd>``/``<details>`` text that follows them."""
    pairs: list[tuple[str, list[str], int]] = []  # (question, its text, its line)
    asked: list[int] = []  # the questions the next <dd> answers: terms in a row share it, as HTML has it
    answered = False  # a <dd> came since the last question
    last = ""
    for kind, _, text, line in blocks:
        if kind in ("dt", "summary"):
            if answered or "summary" in (kind, last):  # a <details> is one question alone
                asked = []
            answered, last = False, kind
            pairs.append((clean_question(text), [], line))
            asked.append(len(pairs) - 1)
        elif kind == "dd" and asked:
            for i in asked:
                pairs[i][1].append(text)
            answered = True
        elif kind == "heading":
            asked, answered = [], False
    # an empty <dd> is an empty answer
    return [(q, _clean_answer("\n".join(body)), line) for q, body, line in pairs if q]


def parse_html(text: str) -> list[tuple[str, str]]:
    """Pairs from an HTML FAQ page: question headings, ``<dt>``/``<dd>``, ``<details>`` or ``Q:``/``A:``."""
    return [(question, answer) for question, answer, _ in _html_pairs(text)]


def _html_pairs(text: str) -> list[_Pair]:
    """:func:`parse_html`'s pairs, each with its question's line (None where it cannot be told)."""
    blocks = _html_blocks(_unmarked(text))
    plain = "\n".join(block[2] for block in blocks)
    marked = _qa_pairs(plain)
    lines = _question_lines(text, plain, [at for _, _, at in marked], html=True)
    qa = [(question, answer, line) for (question, answer, _), line in zip(marked, lines, strict=True)]
    return _choose([_heading_pairs(blocks), _list_pairs(blocks), qa])


def _choose(candidates: list[list[_Pair]]) -> list[_Pair]:
    """The candidate split with the most question-like answered pairs (then the most answered pairs;
    earlier wins ties). Its unanswered ones stay in it, for :func:`read_faq` to refuse."""

    def answered(pairs: list[_Pair]) -> tuple[int, int]:
        return sum(bool(a) and _is_question(q) for q, a, _ in pairs), sum(bool(a and q) for q, a, _ in pairs)

    return max(candidates, key=answered, default=[])


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _read_table(path: Path) -> list[FaqEntry]:
    # The readers' row iterator gives line numbers, UTF-8 checks and JSON errors for free.
    from attend.data.readers import detect_format, read_rows

    entries: list[FaqEntry] = []
    has_intent = False
    for line, record in read_rows(path, detect_format(path, None)):
        if not entries:
            missing = [c for c in ("question", "answer") if c not in record]
            if missing:
                raise DataError(
                    f"{path} has no column {missing[0]!r} (columns: {', '.join(map(str, record)) or 'none'}); "
                    "an FAQ table needs the columns 'question' and 'answer', and may have 'intent'"
                )
            has_intent = "intent" in record
        values = {}
        for column in ("question", "answer"):
            if column not in record:  # a JSONL line without the key (a table's rows all have it)
                raise DataError(f"{path}: line {line} has no {column!r}")
            value = record.get(column)
            if is_missing_number(value):
                value = None  # NaN is a missing cell
            elif isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)  # "42" answers "how many?"
            if value is not None and not isinstance(value, str):
                raise DataError(f"{path}: line {line} has a {type(value).__name__} as its {column}; expected text")
            problem = text_problem(value or "")  # a zero-width space or a BOM alone is as empty as "   "
            if is_empty(problem):
                raise DataError(f"{path}: line {line} has an empty {column} ({column}={value!r})")
            if problem is not None:
                raise DataError(f"{path}: line {line}: the {column} {problem}")
            values[column] = value.replace("\r\n", "\n").strip()  # a Windows file's answers as a Unix file's
        intent = None
        if has_intent:
            raw = record.get("intent")
            if raw is not None and (not isinstance(raw, str | int) or isinstance(raw, bool)):
                raise DataError(f"{path}: line {line} has intent={raw!r}; expected a label (text)")
            intent = str(raw).strip() if raw is not None and str(raw).strip() else None
        entries.append(FaqEntry(values["question"], values["answer"], intent, f"{path}:{line}"))
    return entries


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def read_faq(path: str | os.PathLike[str]) -> list[FaqEntry]:
    """Read an FAQ file into entries.

    Tables (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``) need ``question`` and ``answer``
    columns and may have ``intent`` (empty cells there mean "no intent" for that row).
    Documents (``.html``, ``.md``, ``.txt``) are split into pairs as the module docstring says.

    Raises:
        DataError: No such file, an empty file, a missing column, an empty question or answer
            (naming the line), text that is not UTF-8, or a document with no Q/A structure.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such FAQ file")
    if path.is_dir():
        raise DataError(f"{path} is a directory; give one FAQ file (CSV/TSV/JSONL/Parquet, Markdown or HTML)")
    if path.is_file() and path.stat().st_size == 0:  # a named pipe has no size, and may well have rows
        raise DataError(f"{path} is empty")
    suffix = data_suffix(path)
    if suffix in _TABLE_SUFFIXES:
        entries = _read_table(path)
    elif suffix in DOCUMENT_SUFFIXES:
        raw = read_data_bytes(path)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise DataError(f"{path}: line {line} is not valid UTF-8; re-save the file as UTF-8") from None
        kind = DOCUMENT_SUFFIXES[suffix]
        pairs: list[_Pair]
        if kind == "html":
            pairs = _html_pairs(text)
        elif kind == "markdown":
            pairs = _markdown_pairs(text)
        else:
            text = _unmarked(text)
            # A bare carriage return is refused, naming its line, as a CSV file's is: it had glued an A:
            # line to the Q: before it, and that question took the next one's answer without a word.
            for number, line in enumerate(text.split("\n"), 1):
                plain_line(line, path, number)
            orphan = _orphan_answer_line(text)
            if orphan is not None:  # it had been left out without a word
                said = text.split("\n")[orphan - 1].strip()
                raise DataError(f"{path}: line {orphan}: the answer {said!r} has no Q: line before it; write its "
                                "question above it, or remove it")  # fmt: skip
            marked = _qa_pairs(text)
            lines = _question_lines(text, text, [at for _, _, at in marked])
            pairs = [(question, answer, line) for (question, answer, _), line in zip(marked, lines, strict=True)]
        _refuse_unanswered(path, pairs)
        entries = [FaqEntry(q, a, None, f"{path}#{i + 1}") for i, (q, a, _) in enumerate(pairs)]
        if not entries:
            hint = {
                "html": "question headings, <dt>/<dd> pairs or Q:/A: paragraphs",
                "markdown": "# question headings or Q:/A: lines",
                "text": "lines starting Q: and A:",
            }[kind]
            raise DataError(f"{path}: found no question/answer pairs; an FAQ {kind} file needs {hint}")
    else:
        raise DataError(
            f"{path}: cannot tell the FAQ format from the extension {path.suffix!r}; use .csv, .tsv, .jsonl, "
            ".parquet, .md, .html or .txt (any of them but .parquet may be compressed: .gz, .bz2 or .xz)"
        )
    if not entries:
        raise DataError(f"{path} has a header but no rows")
    _refuse_duplicates(entries)
    return entries


def _refuse_unanswered(path: Path, pairs: list[_Pair]) -> None:
    """A document's question with an empty answer, or an answer under an empty question, is an error
    (as a table's empty cell is), naming the question's line as a table's error names the row's:
    left out, the question had gone missing from the index in silence."""
    empty = [(q, line) for q, a, line in pairs if q and not a]
    if empty:
        question, line = empty[0]
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(f"{path}: {_at(line)}the question {question!r}{more} has no answer: an empty answer is an "
                        "error; write its answer, or remove the question")  # fmt: skip
    nameless = next((i for i, (q, _, _) in enumerate(pairs) if not q), None)
    if nameless is not None:
        raise DataError(f"{path}: {_at(pairs[nameless][2])}the answer of pair {nameless + 1} has an empty question "
                        "before it (a blank Q:); write its question, or remove the answer")  # fmt: skip


def _at(line: int | None) -> str:
    """``"line N: "`` where the line is known, for a message that goes on after it."""
    return "" if line is None else f"line {line}: "


def answer_key(answer: str) -> str:
    """An answer as answers are compared (case and spacing aside): two entries with the same key give
    the same answer."""
    return " ".join(answer.lower().split())


def _refuse_duplicates(entries: list[FaqEntry]) -> None:
    """An entry repeated word for word (question and answer, case and spacing aside) is a mistake in
    the file: say where both copies are. A question asked twice with *different* answers stays (real
    FAQs repeat a heading such as "aptitude" in two chapters); the answers tell the entries apart."""
    seen: dict[tuple[str, str], FaqEntry] = {}
    for entry in entries:
        key = (" ".join(entry.question.lower().split()), answer_key(entry.answer))
        if key in seen:
            raise DataError(
                f"{entry.source}: the entry {entry.question!r} repeats {seen[key].source} word for word; "
                "delete one copy"
            )
        seen[key] = entry
