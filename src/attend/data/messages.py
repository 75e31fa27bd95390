"""Read a person's incoming messages for the focus assistant: JSONL, CSV, TSV, mbox or Maildir.

Every message becomes a :class:`Message` whose ``text`` is plain text (what the models read),
never empty. A problem a person can fix is a :class:`MessageError` naming the file, the line (or
the mail) and the value, as :mod:`attend.data.readers` does for labelled data, so the CLI prints
one line instead of a traceback.

Real mail is messy, so the mail readers are tolerant where the readers of labelled data are
strict: a wrong or unknown charset, a non-UTF-8 byte, HTML-only bodies and attachments are read
as well as they can be rather than refused, because refusing one odd mail would stop the triage of
a whole inbox. Line numbers are those an editor shows (the header of a CSV is line 1); mails are
named by their position in an mbox ("message 3") or their Maildir key.
"""

from __future__ import annotations

import codecs
import csv
import email.message
import hashlib
import json
import mailbox
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any, ClassVar, NamedTuple

from attend.data.readers import (
    DataError,
    LineTape,
    allow_long_fields,
    csv_records,
    data_suffix,
    is_compressed,
    json_line,
    json_problem,
    open_data_bytes,
)
from attend.data.validation import is_empty, is_missing_number, text_problem

__all__ = [
    "MAX_MESSAGE_CHARS",
    "Message",
    "MessageError",
    "detect_message_format",
    "iter_messages",
    "mail_to_message",
    "message_id",
    "read_messages",
    "read_messages_report",
    "record_message",
]

#: Longest text kept of one message, in characters. A longer body is cut to this length and the
#: message flagged ``truncated``: a 10 MB message (a pasted log, a newsletter with inline data) is
#: still read, not refused, but its text is cut, since the models read only its first few hundred
#: tokens anyway and holding megabytes per message would cost memory and time for nothing.
MAX_MESSAGE_CHARS = 100_000

#: Longest id a message may be given (a file's, the service's and feedback's alike); a mail's
#: Message-ID over it is replaced by the id its content gives.
MAX_ID_CHARS = 300

_FORMATS = ("jsonl", "csv", "tsv", "mbox", "maildir")
_STREAM_FORMATS = ("jsonl", "csv", "tsv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
_EXTENSIONS |= {".mbox": "mbox", ".mbx": "mbox"}
_MAILDIR_FOLDERS = ("cur", "new", "tmp")
#: MIME nesting deeper than this is not read: no real mail nests so deep, and a crafted one must
#: not exhaust the stack.
_MAX_DEPTH = 30


class MessageError(DataError):
    """Unreadable messages; the message names the file, the line (or mail) and the value."""


@dataclass(frozen=True)
class Message:
    """One incoming message, as the triage models and the person see it.

    Attributes:
        id: Unique within its source: the given id, the mail's Message-ID, or :func:`message_id`.
        text: The body as plain text, what the models read; never empty after reading.
        sender: Who sent it; for mail the decoded From header, e.g. ``'Ana Ruiz <ana@x.org>'``.
        subject: The decoded subject, or "".
        time: When it was sent, as an ISO 8601 string, or None if unknown.
        channel: Where it came from: for mbox and Maildir ``'email'``, or ``'newsletter'`` for mail
            with a mailing-list or bulk header; the given column otherwise.
        truncated: The body was longer than the reader's ``max_chars`` and was cut.
    """

    id: str
    text: str
    sender: str = ""
    subject: str = ""
    time: str | None = None
    channel: str = ""
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict: one line of a JSONL file that reads back as this message."""
        return asdict(self)


def message_id(text: str, sender: str = "", subject: str = "", time: str | None = None) -> str:
    """Stable id for a message that has none: ``'m-'`` and 16 hex digits of a SHA-256 of its fields.

    The fields are joined by ``'\\x1f'`` (the unit separator, which text practically never holds) so that
    moving text from one field to the next changes the id. The same message gets the same id on
    every run and machine, so the assistant can tell a message it has already triaged from a new
    one. The readers derive it over the text as kept (after cutting), so for any message read
    without an id, ``message_id(m.text, m.sender, m.subject, m.time) == m.id``.
    """
    joined = "\x1f".join((text, sender, subject, time or ""))
    return "m-" + hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _is_maildir(path: Path) -> bool:
    return path.is_dir() and all((path / folder).is_dir() for folder in _MAILDIR_FOLDERS)


def detect_message_format(path: str | os.PathLike[str]) -> str:
    """The format of a message source: ``'jsonl'``, ``'csv'``, ``'tsv'``, ``'mbox'`` or ``'maildir'``.

    A directory with ``cur/``, ``new/`` and ``tmp/`` is a Maildir. A file is told by its extension
    (``.jsonl``/``.ndjson``/``.json``, ``.csv``, ``.tsv``, ``.mbox``/``.mbx``) or, failing that, is an
    mbox if its first line starts with ``'From '``: mail clients often save an mbox without an
    extension (Thunderbird's ``Inbox``).

    Raises:
        MessageError: the path does not exist, or its format cannot be told.
    """
    path = Path(path)
    if not path.exists():
        raise MessageError(f"{path}: no such file or directory")
    if path.is_dir():
        if _is_maildir(path):
            return "maildir"
        raise MessageError(f"{path} is a directory but not a Maildir (a Maildir holds cur/, new/ and tmp/ folders)")
    fmt = _EXTENSIONS.get(data_suffix(path))
    if fmt is not None:
        return _compressed_mbox_refused(path, fmt)
    if is_compressed(path):
        raise MessageError(f"{path}: cannot tell the message format of a compressed file from its name; name it "
                           f"{', '.join(sorted(e for e, f in _EXTENSIONS.items() if f != 'mbox'))} followed by "
                           f"{path.suffix} (an mbox: decompress it first)")  # fmt: skip
    try:
        with open(path, "rb") as handle:
            if handle.readline().startswith(b"From "):
                return "mbox"
    except OSError as exc:
        raise MessageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    raise MessageError(
        f"{path}: cannot tell the message format; give one of {', '.join(_FORMATS)} (name the file "
        f"{', '.join(sorted(_EXTENSIONS))}, or point to a Maildir folder)"
    )


def _compressed_mbox_refused(path: Path, fmt: str) -> str:
    """``fmt``, unless it is an mbox compressed (``mailbox`` reads an mbox only as it is on disk)."""
    if fmt == "mbox" and is_compressed(path):
        raise MessageError(f"{path}: a compressed mbox is not read as it is; decompress it first (a table of "
                           "messages may be compressed)")  # fmt: skip
    return fmt


def _check_format(fmt: str) -> str:
    fmt = fmt.lower()
    if fmt not in _FORMATS:
        raise MessageError(f"unknown message format {fmt!r}; choose {', '.join(_FORMATS)}")
    return fmt


# --- Text ------------------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    """One line ending (LF) and no surrounding whitespace; the lines inside are kept."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _is_blank(text: str) -> bool:
    """No visible character (empty, whitespace, or invisible characters such as a zero-width space)."""
    problem = text_problem(text)
    return is_empty(problem)


def _cut(text: str, max_chars: int) -> tuple[str, bool]:
    return (text[:max_chars], True) if len(text) > max_chars else (text, False)


#: East Asian charsets read by the superset mail clients decode them with (the WHATWG Encoding
#: Standard's decoders): mail labelled ``gb2312`` is GBK in practice, and Python's own GB2312 and GBK
#: codecs turned common characters outside them (镕) into U+FFFD.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "euc_kr": "cp949",
              "shift_jis": "cp932", "big5": "big5hkscs"}  # fmt: skip


def _text_codec(charset: str | None) -> str | None:
    """The Python codec of a declared charset (an East Asian one's superset, :data:`_SUPERSETS`), or
    None if it is absent, unknown or not a text encoding."""
    if not charset:
        return None
    if charset.strip().lower() in _SUPERSETS:  # a label Python does not know (x-gbk)
        return _SUPERSETS[charset.strip().lower()]
    try:
        b"x".decode(charset)  # LookupError for an unknown name or a bytes codec such as 'hex'
    except LookupError:
        return None
    except ValueError:
        pass  # a text codec that cannot decode b"x" alone (UTF-16): it is still a text codec
    try:
        name = codecs.lookup(charset).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None
    return _SUPERSETS.get(name, name)


#: Charsets that decode any bytes at all, so a wrong declaration of one never fails.
_ANY_BYTES_CODECS = frozenset({"latin-1", "iso8859-1", "iso8859-15", "cp1252"})


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode mail bytes, never failing: mail often declares a wrong or made-up charset.

    Tried in turn: the declared charset; UTF-8 (what most undeclared or mis-declared mail is); the
    declared charset again with bad bytes replaced (a mostly right mail keeps its characters); and
    last Windows-1252, which gives nearly every byte a character, so nothing is raised. A Latin-1
    label is read as Windows-1252, as mail clients read it: its bytes 0x80-0x9F (€, –, ’) had been
    C1 controls, which the text drops. A body
    declared Latin-1 or Windows-1252 that is valid UTF-8 (and not ASCII) is read as UTF-8: those
    charsets decode any bytes, so a client's wrong label would give ``cafÃ©``, while Latin-1 text
    is almost never valid UTF-8 by chance.
    """
    codec = _text_codec(charset)
    if codec == "iso8859-1":  # read as Windows-1252, as mail clients and browsers read the label (WHATWG)
        codec = "cp1252"
    if codec in _ANY_BYTES_CODECS and not data.isascii():
        try:
            return data.decode("utf-8")
        except ValueError:
            pass
    if codec is not None:
        try:
            return data.decode(codec)
        except ValueError:
            pass
    try:
        return data.decode("utf-8")
    except ValueError:
        pass
    if codec == "cp1252":  # its five unassigned bytes: C1 controls to WHATWG, which the text drops
        return data.decode(codec, errors="ignore")
    if codec is not None and codec != "ascii":
        return data.decode(codec, errors="replace")
    # Windows-1252, not Latin-1: 0x80-0x9F are its € – ’ “ ”, where Latin-1 reads C1 controls
    return data.decode("cp1252", errors="ignore")


#: What begins each line of an HTML mail's quote of earlier mail, for :func:`_own_text` (a private-use
#: character: no mail's own text, and gone from whatever text is kept).
QUOTE_MARK = "\ue000"


def _quotes_mail(attrs: list[tuple[str, str | None]]) -> bool:
    """Whether a ``<blockquote>`` is a reply's quote of earlier mail: ``type="cite"`` (Apple Mail,
    Thunderbird) or the ``gmail_quote`` class (Gmail); once inside one, every blockquote counts."""
    found = dict(attrs)
    return (found.get("type") or "").lower() == "cite" or "gmail_quote" in (found.get("class") or "").split()


class _HTMLText(HTMLParser):
    """The visible text of HTML: tags dropped, entities unescaped, blocks on lines of their own.

    A paragraph or heading stands apart with a blank line; a div, list item or table row starts a
    new line; ``<br>`` always breaks the line. Runs of such breaks do not add up, so the nested divs
    of a mail template do not leave a column of blank lines.
    """

    _SKIP = frozenset({"script", "style", "title", "template"})  # a template's content is never shown
    #: Elements that hold no text (no end tag): one hidden this way hides nothing after it.
    _VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})
    _PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr", "table"})
    _LINES = frozenset(
        {"div", "li", "ul", "ol", "dl", "dt", "dd", "tr", "section", "article", "header", "footer", "address"}
        | {"center", "form", "main", "nav", "aside", "figure", "figcaption"}
    )
    _CELLS = frozenset({"td", "th"})
    #: Elements whose end tag may be left out: the start tags that close one (HTML's own rules, in short).
    _CLOSED_BY: ClassVar[dict[str, tuple[str, ...]]] = {
        "p": ("p",), "li": ("li",), "dt": ("dt", "dd"), "dd": ("dt", "dd"), "td": ("td", "th"), "th": ("td", "th"),
        "tr": ("tr", "td", "th"), "option": ("option",)}  # fmt: skip

    def __init__(self, *, hide: bool = True) -> None:
        super().__init__(convert_charrefs=True)
        self.hide = hide  # False: elements styled display:none are read too
        self.pieces: list[str] = []
        self.size = 0  # characters in pieces
        self._newlines = 2  # line breaks ending the text so far (the start counts as a paragraph break)
        self._skip = 0  # inside <script> or <style>
        self._pre = 0  # inside <pre>: line breaks are kept (indentation is not)
        self._hidden: list[str] = []  # open elements styled display:none (a mail's preheader), innermost last
        self._quotes = 0  # inside a reply's quote of earlier mail (blockquote type=cite, Gmail's gmail_quote)
        self.quoted: list[bool] = []  # per piece, whether it is inside such a quote

    def _add(self, text: str) -> None:
        self.pieces.append(text)
        self.quoted.append(self._quotes > 0)
        self.size += len(text)
        visible = text.rstrip(" ")  # spaces at a line's end are stripped later: they break nothing
        if visible:
            breaks = len(visible) - len(visible.rstrip("\n"))
            self._newlines = self._newlines + breaks if breaks == len(visible) else breaks

    def _break(self, lines: int) -> None:
        if self._newlines < lines:
            self._add("\n" * (lines - self._newlines))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._hidden:  # a start tag that closes an open element (a <p> the next <p>, a <td> the next cell)
            self._close_hidden(self._CLOSED_BY.get(tag, ()) + (("p",) if tag in self._PARAGRAPHS | self._LINES else ()))
        if self._hidden or (self.hide and any(
                name == "style" and value and re.search(r"display\s*:\s*none", value, re.IGNORECASE)
                for name, value in attrs)):  # fmt: skip
            if tag not in self._VOID:  # inside a hidden element every element counts, to find its end
                self._hidden.append(tag)
            return  # nor does a hidden <br> break a line
        if tag == "blockquote" and (self._quotes or _quotes_mail(attrs)):
            self._break(2)
            self._quotes += 1
            return
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "br":
            self._add("\n")
        elif tag in self._PARAGRAPHS:
            self._break(2)
        elif tag in self._LINES:
            self._break(1)
        elif tag in self._CELLS:
            self._add(" ")  # adjacent cells must not run together
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if self._hidden:
            self._close_hidden((tag,))  # an unclosed element inside is closed with it, as browsers do
            return
        if tag == "blockquote" and self._quotes:  # (a quote's own nested blockquotes count too: see start)
            self._break(2)
            self._quotes -= 1
            return
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._PARAGRAPHS:
            self._break(2)
        elif tag in self._LINES:
            self._break(1)
        if tag == "pre":
            self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._skip or self._hidden:
            return
        # Outside <pre>, a run of whitespace (source line breaks included) shows as one space.
        self._add(data if self._pre else re.sub(r"\s+", " ", data))

    def _close_hidden(self, names: tuple[str, ...]) -> None:
        """Close the innermost open hidden element named in ``names``, and every element inside it."""
        found = [i for i, name in enumerate(self._hidden) if name in names]
        if found:
            del self._hidden[found[-1]:]

    @property
    def hid_the_rest(self) -> bool:
        """A hidden element was still open at the end: everything after its start was hidden."""
        return bool(self._hidden)

    def text(self) -> str:
        """The text, each line of a quote of earlier mail begun with :data:`QUOTE_MARK` (which
        :func:`_own_text` leaves out as it leaves out a plain-text reply's ``>`` lines)."""
        lines: list[str] = []
        current: list[str] = []
        marked = False
        for piece, quoted in zip(self.pieces, self.quoted, strict=True):
            for k, part in enumerate(piece.split("\n")):
                if k:
                    lines.append((QUOTE_MARK if marked else "") + "".join(current).strip())
                    current, marked = [], False
                current.append(part)
                marked = marked or (quoted and bool(part.strip()))
        lines.append((QUOTE_MARK if marked else "") + "".join(current).strip())
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _html_to_text(html: str, limit: int) -> str:
    """The text of an HTML body, parsed a megabyte at a time and stopped once ``limit`` is passed.

    Stopping early keeps a 10 MB HTML mail as quick to read as a short one: the text past
    ``limit`` would be cut anyway. The length is checked only when it has doubled since the last
    check, so a body whose text shrinks a lot (runs of blank lines) costs no quadratic time.
    """
    try:
        parser = _HTMLText()
        step = 1 << 20
        check_at = limit
        for start in range(0, len(html), step):
            parser.feed(html[start : start + step])
            if parser.size > check_at:
                if len(parser.text()) > limit:
                    break
                check_at = 2 * parser.size
        parser.close()
        text = parser.text()
        if parser.hid_the_rest and _is_blank(text):
            # An element hidden and never closed hid everything after it: read it all rather than nothing.
            parser = _HTMLText(hide=False)
            parser.feed(html)
            parser.close()
            text = parser.text()
    except (AssertionError, ValueError):  # Python's parser gives up on some markup (Outlook's "<![ if mso]>")
        return _tags_dropped(html[: 4 * limit + 4096])  # one such mail had stopped a whole triage, a traceback
    return text


def _tags_dropped(html: str) -> str:
    """The text of HTML the parser cannot read: scripts, styles and tags removed, entities unescaped."""
    # an unclosed one hides the rest, as in a browser: one match to the end (each <style> had scanned it: quadratic)
    text = re.sub(r"(?is)<(script|style)\b.*?(?:</\1\s*>|\Z)", " ", html)
    text = re.sub(r"(?i)<br\s*/?>|</(?:p|div|li|tr|h[1-6])\s*>", "\n", text)
    text = unescape(re.sub(r"<[^>]*>", " ", text))
    return "\n".join(" ".join(line.split()) for line in text.split("\n")).strip()


# --- Mail ------------------------------------------------------------------------------------------


def _declared_charset(msg: email.message.Message) -> str | None:
    """The first charset the mail declares for a part of its text, if any."""
    for part in msg.walk():
        charset = part.get_content_charset()
        if charset and _text_codec(charset) not in (None, "ascii"):
            return charset
    return None


def _raw_header_text(raw: bytes, declared: str | None) -> str:
    """Unencoded 8-bit header bytes: UTF-8 if they are, else the mail's declared text charset if they
    are that, else Windows-1252 (a Latin-1 subject in a mail declaring UTF-8 had come out as U+FFFD)."""
    for codec in ("utf-8", _text_codec(declared)):
        if codec is not None:
            try:
                return raw.decode(codec)
            except ValueError:
                pass
    return _decode_bytes(raw, None)


def _header(msg: email.message.Message, name: str) -> str:
    """A header decoded (RFC 2047 encoded words, any charset, bad ones included) on one line."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        chunks = decode_header(value)
    except (HeaderParseError, LookupError, ValueError):
        return " ".join(_CONTROL.sub("", str(value)).split())
    decoded: list[tuple[str, str | None]] = []
    for chunk, charset in chunks:
        raw = None  # the bytes of an unencoded 8-bit header, as the email package gives them either way
        if isinstance(chunk, str) and re.search("[\udc80-\udcff]", chunk):
            raw = chunk.encode("utf-8", "surrogateescape")
        elif isinstance(chunk, bytes) and charset == "unknown-8bit":
            raw = chunk
        if raw is not None:
            # Raw 8-bit bytes of an unencoded header: UTF-8 if they are, else the charset the mail
            # declares for its text (GBK mail often writes its subject so; it had been read as
            # Windows-1252, mojibake).
            chunk = _raw_header_text(raw, _declared_charset(msg))
        text = _decode_bytes(chunk, charset) if isinstance(chunk, bytes) else chunk
        # Already decoded: the charset now only tells make_header where encoded words were (for spacing).
        decoded.append((text, "utf-8" if charset else None))
    return " ".join(_CONTROL.sub("", str(make_header(decoded))).split())


def _mail_time(msg: email.message.Message) -> str | None:
    value = msg.get("Date")
    if value is None:
        return None
    try:
        return parsedate_to_datetime(str(value)).isoformat()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # an unparseable date is common in old or spam mail; the time is just unknown


def _is_attachment(part: email.message.Message, depth: int) -> bool:
    """A part sent as a file: marked ``attachment``, or given a file name (as Apple Mail marks inline files)."""
    return part.get_content_disposition() == "attachment" or (depth > 0 and part.get_filename() is not None)


def _part_text(part: email.message.Message, limit: int, depth: int = 0) -> tuple[str, bool]:
    """The readable text of a MIME part, and whether it holds text/plain.

    Parts of a multipart/alternative are the same content in several forms: the first that holds
    text/plain wins, else the first with any text (HTML converted). The parts of any other multipart
    (mixed, related) are all read, in order. A forwarded mail (``message/rfc822``), attached or not,
    is read under its From, Date and Subject; an invitation (``text/calendar``) as its summary,
    start, place and description. Other attachments, and parts of other types (images, PDFs), are
    not the body and are skipped.
    """
    if depth > _MAX_DEPTH:
        return "", False
    if part.get_content_type() == "message/rfc822":  # a forwarded mail, attached or not: its text is the content
        inner = next((child for child in part.get_payload() if isinstance(child, email.message.Message)), None)
        if inner is None:
            return "", False
        head = "\n".join(f"{name}: {value}" for name in ("From", "Date", "Subject") if (value := _header(inner, name)))
        text, plain = _part_text(inner, limit, depth + 1)
        return "\n\n".join(piece.strip() for piece in (head, text) if not _is_blank(piece)), plain
    if _is_attachment(part, depth):
        return "", False
    if part.is_multipart():
        children = [child for child in part.get_payload() if isinstance(child, email.message.Message)]
        if part.get_content_subtype() == "alternative":
            # text/plain first, so that the HTML of an ordinary mail is never parsed at all.
            children.sort(key=lambda child: child.get_content_type() != "text/plain")
            fallback = ""
            for child in children:
                text, plain = _part_text(child, limit, depth + 1)
                if plain and not _is_blank(text):
                    return text, True
                fallback = fallback or ("" if _is_blank(text) else text)
            return fallback, False
        texts = [_part_text(child, limit, depth + 1) for child in children]
        texts = [(text, plain) for text, plain in texts if not _is_blank(text)]
        return "\n\n".join(text.strip() for text, _ in texts), any(plain for _, plain in texts)
    content_type = part.get_content_type()
    if part.get_content_maintype() == "multipart":  # no boundary= to split it by: the parser kept its body whole
        content_type = "text/plain"
    if content_type not in ("text/plain", "text/html", "text/calendar"):
        return "", False
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return "", False
    charset = part.get_content_charset()
    if content_type == "text/html" and charset is None:  # said only in the page (a KOI8-R mail had been garbled)
        declared = _META_CHARSET.search(payload[:2048])
        charset = declared.group(1).decode("ascii").lower() if declared else None
    text = _decode_bytes(payload, charset)
    if content_type == "text/html":
        return _html_to_text(text, limit), False
    if content_type == "text/calendar":
        return _calendar_text(text), False
    if (part.get_param("format") or "").lower() == "flowed":
        text = _unflowed(text, delsp=(part.get_param("delsp") or "").lower() == "yes")
    return text, True


def _unflowed(text: str, *, delsp: bool) -> str:
    """A ``format=flowed`` body (RFC 3676) as its paragraphs: a line ending in a space runs on into the
    next (with ``delsp=yes`` that space is the wrapping's, and goes); quote depth and space-stuffing
    respected. Read line by line, its wrapped words had been split (``morn``/``ing``), and each
    wrapped line had been a sentence of the digest."""
    out: list[str] = []
    flowing: tuple[int, str] | None = None  # (quote depth, text so far) of a paragraph that runs on
    for raw in text.replace("\r\n", "\n").split("\n"):
        depth = len(raw) - len(raw.lstrip(">"))
        line = raw[depth:]
        line = line[1:] if line.startswith(" ") else line  # space-stuffing (or the space after the quote marks)
        soft = line.endswith(" ") and line != "-- "  # the signature separator is a hard break
        if soft and delsp:
            line = line[:-1]
        if flowing is not None and flowing[0] == depth:
            line = flowing[1] + line
        elif flowing is not None:  # a quote depth change ends the paragraph
            out.append(">" * flowing[0] + (" " if flowing[0] else "") + flowing[1])
        flowing = (depth, line) if soft else None
        if not soft:
            out.append(">" * depth + (" " if depth else "") + line)
    if flowing is not None:
        out.append(">" * flowing[0] + (" " if flowing[0] else "") + flowing[1])
    return "\n".join(out)


#: An HTML page's own charset: ``<meta charset="koi8-r">`` or ``<meta http-equiv=... content="...; charset=...">``.
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def _calendar_text(ics: str) -> str:
    """What an invitation says (iCalendar, RFC 5545): its first event's summary, start (with its time
    zone), place and description; the time-zone definitions and reminders around it are not the event."""
    fields: dict[str, str] = {}
    zone = ""
    cancelled = False  # METHOD:CANCEL, or the event's STATUS:CANCELLED (it had read as the invitation)
    blocks: list[str] = []  # the components the line is in, innermost last
    for line in re.sub(r"\r?\n[ \t]", "", ics).splitlines():  # folded lines unfolded first
        head, sep, value = line.partition(":")
        name, *params = (part.strip() for part in head.split(";"))
        name = name.upper()
        if (name, value.strip().upper()) in (("METHOD", "CANCEL"), ("STATUS", "CANCELLED")):
            cancelled = True
        if name == "BEGIN":
            blocks.append(value.strip().upper())
        elif name == "END":
            if blocks and blocks.pop() == "VEVENT":
                break  # the first event is read
        elif sep and blocks[-1:] == ["VEVENT"] and name in ("SUMMARY", "DTSTART", "LOCATION", "DESCRIPTION"):
            if name not in fields:
                fields[name] = re.sub(r"\\([,;\\])", r"\1", value.replace("\\n", "\n").replace("\\N", "\n")).strip()
                if name == "DTSTART":
                    zone = next((p.partition("=")[2].strip('"') for p in params if p.upper().startswith("TZID=")), "")
    start = fields.get("DTSTART", "")
    if match := re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})\d{2}(Z?))?", start):
        year, month, day, hour, minute, utc = match.groups()
        where = " UTC" if utc else f" {zone}" if zone else ""
        start = f"{year}-{month}-{day}" + (f" {hour}:{minute}{where}" if hour else "")
    summary = fields.get("SUMMARY", "")
    lines = [f"Cancelled: {summary}" if cancelled else summary, f"When: {start}" if start else "",
             f"Where: {fields['LOCATION']}" if fields.get("LOCATION") else "", fields.get("DESCRIPTION", "")]
    return "\n".join(line for line in lines if line)


def _mail_to_message(msg: email.message.Message, max_chars: int) -> tuple[Message, bool] | None:
    """The message of a mail and whether its id was derived; None for a mail with no body and no subject."""
    sender, subject, time = _header(msg, "From"), _header(msg, "Subject"), _mail_time(msg)
    forwarded = bool(_FORWARDED.match(subject or ""))
    text = _own_text(_CONTROL.sub("", _normalise(_part_text(msg, max_chars)[0])), forwarded=forwarded)
    if _is_blank(text):
        text = subject  # a mail that is all subject ("Call me", "Server down") still says something
    if _is_blank(text):
        return None
    text, truncated = _cut(text, max_chars)
    given = _header(msg, "Message-ID").strip("<> ")
    given = given if len(given) <= MAX_ID_CHARS else ""  # too long to answer feedback on: derived instead
    ident = given or message_id(text, sender, subject, time)
    message = Message(ident, text, sender, subject, time, channel=_mail_channel(msg), truncated=truncated)
    return message, not given


#: Control characters (not tab or line break; C1 too, as UTF-8 or a stray charset may spell them):
#: binary junk in a damaged mailbox or a terminal's escape sequence in a crafted one, never text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_QUOTED = re.compile(rf"[ \t]*[>{QUOTE_MARK}]")
_ATTRIBUTION = re.compile(r"[0-9@]")  # a date, a time or an address: what a mail client's attribution line holds
#: A forward's subject: "Fwd:", "FW:", and German, French, Spanish, Dutch and Nordic clients' prefixes.
_FORWARDED = re.compile(r"\s*(?:\[?(?:fwd?|wg|tr|rv|doorst|vs|vb)\]?)\s*:", re.IGNORECASE)
#: The line Outlook writes above the mail a reply quotes (its quote is not marked with ">").
_ORIGINAL_MESSAGE = re.compile(r"(?im)^[ \t]*-{2,}[ \t]*Original Message[ \t]*-{2,}[ \t]*$")


def _own_text(text: str, *, forwarded: bool = False) -> str:
    """A reply's own text: the blocks of lines quoting earlier mail (``>``, or an HTML quote's
    :data:`QUOTE_MARK`) left out, with the line that introduces one when it reads as an attribution
    (it ends with ``:`` and holds a date or an address, as "On 3 Mar 2025, Ann <ann@x.org> wrote:"
    does in any language, or a line of one or two words so ending, "wrote:", under such a line that
    ends in no sentence mark), and what follows Outlook's ``-----Original Message-----``. A block the
    sender introduces with words of their own ("the deploy fails with:") is what they cite, and kept.
    A mail that only quotes is kept whole, and so is a ``forwarded`` one (its subject says so: what
    it quotes is what it brings).

    Quoted history is what a reply repeats: read as the mail's text it decided the triage (a "thanks,
    no action needed" above a quoted emergency passed as urgent) and pushed the new words below a long
    quote past what the models read.
    """
    if forwarded:
        return text.replace(QUOTE_MARK, "")
    separator = _ORIGINAL_MESSAGE.search(text)
    if separator is not None and not _is_blank(text[: separator.start()]):  # Outlook's reply: its quote follows
        text = text[: separator.start()].rstrip()
    lines = text.split("\n")
    quoted = [bool(_QUOTED.match(line)) for line in lines]
    if not any(quoted):
        return text
    keep = [True] * len(lines)
    start = 0
    while start < len(lines):
        if not quoted[start]:
            start += 1
            continue
        end = start  # the block's last quoted line (blank lines between quoted ones belong to it)
        for j in range(start, len(lines)):
            if quoted[j]:
                end = j
            elif lines[j].strip():
                break
        lead = next((i for i in range(start - 1, -1, -1) if lines[i].strip()), -1)
        introduced = lead >= 0 and lines[lead].rstrip().endswith(":")
        # an attribution wrapped by the client: "On Mon, 3 Mar 2025 at 10:00, Ann <ann@x.org>" / "wrote:" (not
        # a sentence of the sender's own above a "Agenda:" of theirs: it ends in a sentence mark)
        wrapped = (lead > 0 and len(lines[lead].split()) <= 2 and not _ATTRIBUTION.search(lines[lead])
                   and lines[lead - 1].strip() and lines[lead - 1].rstrip()[-1] not in ".!?:;。！？")  # fmt: skip
        above = lead - 1 if wrapped else -1
        attribution = introduced and (_ATTRIBUTION.search(lines[lead]) or (above >= 0 and _ATTRIBUTION.search(
            lines[above])))  # fmt: skip
        if not introduced or attribution:
            keep[start : end + 1] = [False] * (end + 1 - start)
            if introduced:
                keep[lead] = False
                if not _ATTRIBUTION.search(lines[lead]) and above >= 0:
                    keep[above] = False
        start = end + 1
    kept = re.sub(r"\n{3,}", "\n\n", "\n".join(line for line, kept in zip(lines, keep, strict=True) if kept)).strip()
    return (text if _is_blank(kept) else kept).replace(QUOTE_MARK, "")


def _mail_channel(msg: email.message.Message) -> str:
    """``'newsletter'`` for mail sent to a list or in bulk, else ``'email'``.

    A mailing list marks its mail with ``List-Id`` (RFC 2919) or ``List-Unsubscribe`` (RFC 2369,
    which bulk senders must give under Gmail's and Yahoo's 2024 sender rules); other bulk mail says
    ``Precedence: bulk`` or ``list``.
    """
    if msg.get("List-Id") or msg.get("List-Unsubscribe"):
        return "newsletter"
    if str(msg.get("Precedence", "")).strip().lower() in ("bulk", "list"):
        return "newsletter"
    return "email"


def mail_to_message(
    msg: email.message.Message, *, key: str | None = None, max_chars: int = MAX_MESSAGE_CHARS
) -> Message:
    """Turn one parsed mail into a :class:`Message` (what the mbox and Maildir readers do for each mail).

    The body is the mail's text/plain, or its HTML converted to text when it has no text/plain;
    attachments are skipped. A mail with an empty body but a subject reads as its subject.

    Args:
        msg: The mail, e.g. from :func:`email.message_from_bytes` or a :mod:`mailbox`.
        key: Where the mail came from (its mailbox key or file), named in the error.
        max_chars: Longest text kept; a longer body is cut and the message flagged ``truncated``.

    Raises:
        MessageError: the mail has neither a body nor a subject (the readers skip and count those).
    """
    _check_max_chars(max_chars)
    result = _mail_to_message(msg, max_chars)
    if result is None:
        where = f"mail {key}" if key is not None else "the mail"
        raise MessageError(f"{where} is empty: it has neither a text body nor a subject")
    return result[0]


# --- Reading ---------------------------------------------------------------------------------------


class _Read(NamedTuple):
    """One message as read, with where it came from for the errors found later (duplicate ids)."""

    name: str  # the file or stream
    where: str  # "line 3", "message 2", "mail <key>"
    message: Message
    derived: bool  # the id was derived with message_id


def _count(stats: dict[str, Any], what: str, where: str) -> None:
    """Count one mail under ``what``, naming the first (``stats["first"][what]``) for the note."""
    stats[what] += 1
    stats["first"].setdefault(what, where)


def _new_stats() -> dict[str, Any]:
    return {"read": 0, "skipped_empty": 0, "truncated": 0, "duplicates": 0, "reused_ids": 0, "headerless": 0,
            "too_deep": 0, "cut_off": 0, "first": {}}  # fmt: skip


def _check_max_chars(max_chars: int) -> None:
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"max_chars must be a positive integer, not {max_chars!r}")


def _decoded(
    lines: Iterable[str | bytes], stats: dict[str, int] | None = None, name: str = "<stream>"
) -> Iterator[str]:
    """Lines as text, a leading byte-order mark dropped and bytes that are not UTF-8 replaced.

    A byte that is not UTF-8 becomes U+FFFD rather than an error (unlike the strict readers of
    labelled data): an export with one mis-encoded character should still be triaged, and the
    models read a replaced character fine. Lines so read are counted in ``stats["not_utf8"]``,
    for the caller to say so. A UTF-16 file (Excel's "Unicode text") is refused, as the readers of
    labelled data refuse it: every character of it would be read wrong, not one.
    """
    for number, line in enumerate(lines):
        if isinstance(line, bytes) and number == 0 and line.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise MessageError(f"{name} is UTF-16 text (it starts with a UTF-16 byte-order mark); re-save it as UTF-8")
        if isinstance(line, bytes):
            encoding = "utf-8-sig" if number == 0 else "utf-8"
            try:
                line = line.decode(encoding)
            except UnicodeDecodeError:
                line = line.decode(encoding, errors="replace")
                if stats is not None:
                    stats["not_utf8"] = stats.get("not_utf8", 0) + 1
        elif number == 0:
            line = line.removeprefix("\ufeff")
        yield line


def _file_lines(path: Path, stats: dict[str, int] | None = None) -> Iterator[str]:
    with open_data_bytes(path) as handle:  # a .jsonl.gz, .csv.bz2, ... decompressed as it is read
        yield from _decoded(handle, stats, str(path))


def _jsonl_records(name: str, lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    content = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        content = True
        try:
            record = json_line(line.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            raise MessageError(f"{name}: line {number} is not valid JSON ({json_problem(exc)})") from None
        if not isinstance(record, dict):
            raise MessageError(
                f"{name}: line {number} is a JSON {type(record).__name__}, expected one object per line "
                'such as {"text": "..."}'
            )
        yield number, record
    if not content:
        raise MessageError(f"{name} is empty")


def _csv_records(name: str, lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    allow_long_fields()
    tape = LineTape(lines)
    reader = csv.DictReader(tape, delimiter=delimiter)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise MessageError(f"{name}: line 1: {exc}") from None
    if fieldnames is None:
        raise MessageError(f"{name} is empty")
    reader.fieldnames = [field.strip() for field in fieldnames]  # "id, text" is a common header
    if "text" not in reader.fieldnames:
        # Column names are single short words; a first line that is not is not shown (message text
        # never goes to stderr: "m1,Dr Lee,HIV test positive" had been printed as its columns).
        looks_like_a_header = len(reader.fieldnames) <= 30 and all(
            re.fullmatch(r"[^\W\d][\w.-]{0,39}", field) for field in reader.fieldnames)  # fmt: skip
        columns = (f"columns: {', '.join(reader.fieldnames) or 'none'}" if looks_like_a_header
                   else "it does not look like a header and is not shown: it may be a message")  # fmt: skip
        is_json = bool(fieldnames) and fieldnames[0].lstrip().startswith("{")
        json_hint = "; a JSON Lines file needs --format jsonl" if is_json else ""
        raise MessageError(
            f"{name}: line 1: the header has no column 'text' ({columns}); every message needs its text in a "
            f"'text' column{json_hint}"
        )
    yield from csv_records(reader, tape, name, MessageError)


def _field(where: str, record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        raise MessageError(f"{where} has {value} in field {key!r}, expected text")  # JSON's 1e400 is inf
    if isinstance(value, str | int | float) and not isinstance(value, bool):  # a JSON id may be a number
        text = str(value).strip()
        problem = text_problem(text) if text else None
        if problem is not None and not is_empty(problem):  # bytes that were not UTF-8
            raise MessageError(f"{where}: field {key!r} {problem}")
        return text
    # The value is not shown: it may be a piece of someone's message, which never goes to stderr.
    raise MessageError(f"{where} has a {type(value).__name__} in field {key!r}, expected text")


def _row_time(where: str, record: dict[str, Any]) -> str | None:
    value = _field(where, record, "time")
    if not value:
        return None
    try:
        datetime.fromisoformat(value[:-1] + "+00:00" if value[-1] in "Zz" else value)
    except ValueError:
        # The value is not shown: a CSV row's unquoted comma shifts a piece of the message into it.
        raise MessageError(
            f"{where} has a time that is not an ISO 8601 date and time (e.g. 2024-05-01T09:30:00+02:00; the value "
            "is not shown, it may be a piece of a message)"
        ) from None
    return value


def _row_message(name: str, number: int, record: dict[str, Any], max_chars: int) -> tuple[Message, bool]:
    """The message of one JSONL/CSV/TSV row, and whether its id was derived."""
    return record_message(f"{name}: line {number}", record, max_chars)


def record_message(where: str, record: dict[str, Any], max_chars: int = MAX_MESSAGE_CHARS) -> tuple[Message, bool]:
    """The message of one record (a file's row, an HTTP body's item), read the one way every input is:
    text and fields stripped, line endings made LF, the time checked, the id derived from the cleaned
    fields when absent. Returns it and whether its id was derived; errors start with ``where``."""
    if "text" not in record:
        fields = ", ".join(map(str, record)) or "none"
        raise MessageError(f"{where} has no field 'text' (fields: {fields}); every message needs its text")
    text = record["text"]
    if is_missing_number(text):
        text = None  # a missing value, not the text "nan"
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = _field(where, record, "text")  # "42" is a message too; 1e400 (inf) is not
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise MessageError(
            f"{where} has a {type(text).__name__} in field 'text', expected text (the value is not shown)"
        )
    text = _normalise(text)
    problem = text_problem(text)
    if is_empty(problem) and not is_empty(text_problem(subject := _field(where, record, "subject"))):
        text, problem = subject, None  # all subject ("Tax forms due today"), as a mail with no body is read
    if is_empty(problem):
        invisible = " (only invisible characters)" if text else ""
        raise MessageError(f"{where} is an empty message: its 'text' is blank{invisible}, and it has no subject")
    if problem is not None:
        raise MessageError(f"{where}: the text {problem}")
    sender, subject, channel = (_field(where, record, key) for key in ("sender", "subject", "channel"))
    time = _row_time(where, record)
    text, truncated = _cut(text, max_chars)
    given = _field(where, record, "id")
    if len(given) > MAX_ID_CHARS:
        raise MessageError(f"{where} has an id of {len(given):,} characters, over {MAX_ID_CHARS}; give a shorter "
                           "one, or none (one is derived from the message)")  # fmt: skip
    ident = given or message_id(text, sender, subject, time)
    return Message(ident, text, sender, subject, time, channel, truncated), not given


#: The fields of a message in a JSONL/CSV/TSV row or an HTTP body; a row's others are not read.
MESSAGE_FIELDS = ("id", "text", "sender", "subject", "time", "channel")


def _read_rows(name: str, lines: Iterable[str], fmt: str, max_chars: int,
               stats: dict[str, Any] | None = None) -> Iterator[_Read]:  # fmt: skip
    records = (
        _jsonl_records(name, lines) if fmt == "jsonl" else _csv_records(name, lines, "\t" if fmt == "tsv" else ",")
    )
    unread: dict[str, str] = {}
    for number, record in records:
        # Said, not refused: an export's other columns; but "chanel" had gone unseen. An unnamed column
        # (a header's trailing comma) has no name to say.
        for key in record:
            if (key not in MESSAGE_FIELDS and key not in unread and len(unread) < 20 and stats is not None
                    and key is not None and str(key).strip()):  # fmt: skip
                unread[str(key)] = f"line {number}"
                stats["unread_fields"] = unread
        message, derived = _row_message(name, number, record, max_chars)
        yield _Read(name, f"line {number}", message, derived)


def _check_mbox(path: Path) -> None:
    """Refuse a file that is not an mbox: :class:`mailbox.mbox` reads any text as zero mails, silently."""
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            if line.startswith(b"From "):
                return
            raise MessageError(
                f"{path} is not an mbox file: its first line does not start with 'From ' "
                "(each mail of an mbox starts with a 'From ' line; the line is not shown, it may be a message)"
            )
    if path.stat().st_size:
        raise MessageError(f"{path} is not an mbox file: it holds only blank lines, no 'From ' line")


def _read_mail(
    name: str, where: str, raw: bytes, max_chars: int, stats: dict[str, Any]
) -> Iterator[_Read]:
    """The message of one mail's bytes; a mail nested too deep to parse is skipped and counted
    (``too_deep``): the standard library's parser recurses once per level, and a crafted 45 kB mail
    of a thousand had ended the whole mailbox's run with a RecursionError."""
    try:
        msg = email.message_from_bytes(raw)
    except RecursionError:
        _count(stats, "too_deep", where)
        return
    if not any(msg.get(header) for header in ("From", "Subject", "Date", "Message-ID")):
        _count(stats, "headerless", where)  # a cut mailbox, or a body line "From " split a mail in two
    elif any(isinstance(defect, _CUT_OFF) for part in msg.walk() for defect in part.defects):
        _count(stats, "cut_off", where)  # a multipart whose end never came: read as far as it goes, said
    result = _mail_to_message(msg, max_chars)
    if result is None:
        _count(stats, "skipped_empty", where)
        return
    yield _Read(name, where, result[0], result[1])


#: The parser's defects of a multipart mail cut off before its end (a mailbox copied while written).
_CUT_OFF = (email.errors.CloseBoundaryNotFoundDefect,)  # (a boundary that never starts is a mismatch, not a cut)
_FROM_ESCAPED = re.compile(rb"^>(>*From )", re.MULTILINE)


def _read_mbox(path: Path, max_chars: int, stats: dict[str, Any]) -> Iterator[_Read]:
    _check_mbox(path)
    box = mailbox.mbox(path, factory=None, create=False)
    try:
        for number, key in enumerate(box.iterkeys(), start=1):  # in file order
            # A body line starting "From " is written ">From " in an mbox (and ">From " as ">>From "):
            # unescaped, the mail reads as it was sent, and as the same mail does from a Maildir.
            raw = _FROM_ESCAPED.sub(rb"\1", box.get_bytes(key))
            yield from _read_mail(str(path), f"message {number}", raw, max_chars, stats)
    finally:
        box.close()


def _delivery_order(key: str) -> tuple[int, int, int, str]:
    """A Maildir key's place in delivery order (keys not starting with a time last, by name)."""
    match = re.match(r"(\d+)(?:\.M(\d+))?", key)
    return (0, int(match.group(1)), int(match.group(2) or 0), key) if match else (1, 0, 0, key)


def _read_maildir(path: Path, max_chars: int, stats: dict[str, Any]) -> Iterator[_Read]:
    if not path.exists():
        raise MessageError(f"{path}: no such directory")
    if not _is_maildir(path):
        raise MessageError(f"{path} is not a Maildir: a Maildir is a folder holding cur/, new/ and tmp/ folders")
    box = mailbox.Maildir(path, factory=None, create=False)
    # In delivery order: a key starts with the delivery time in seconds, then (".M123") microseconds
    # not padded with zeros, so keys sorted as strings put M500000 before M99999 of the same second.
    for key in sorted(box.keys(), key=_delivery_order):
        if key.startswith("."):  # a file manager's .DS_Store or a client's dotfile: not a mail
            continue
        try:
            raw = box.get_bytes(key)
        except (KeyError, FileNotFoundError):
            continue  # deleted by a mail client while we read: no longer there to triage
        yield from _read_mail(str(path), f"mail {key}", raw, max_chars, stats)


def _read(source: Any, fmt: str | None, max_chars: int, stats: dict[str, Any]) -> Iterator[_Read]:
    """Every message of ``source`` with where it came from; skipped and cut mails are counted in ``stats``."""
    _check_max_chars(max_chars)
    if isinstance(source, str | os.PathLike) and os.fspath(source) != "-":
        path, name = Path(source), str(source)
        fmt = detect_message_format(path) if fmt is None else _compressed_mbox_refused(path, _check_format(fmt))
        if fmt != "maildir" and not path.exists():
            raise MessageError(f"{path}: no such file")
        if fmt != "maildir" and path.is_dir():
            raise MessageError(f"{path} is a directory, expected a file ({fmt})")
        if fmt == "maildir":
            reads = _read_maildir(path, max_chars, stats)
        elif fmt == "mbox":
            reads = _read_mbox(path, max_chars, stats)
        else:
            reads = _read_rows(name, _file_lines(path, stats), fmt, max_chars, stats)
    else:
        if isinstance(source, str | os.PathLike):  # "-"
            # Its bytes, so that input that is not UTF-8 is replaced as in a file, not fatal.
            stream, name = getattr(sys.stdin, "buffer", sys.stdin), "standard input"
        else:
            stream, name = source, getattr(source, "name", None)
            name = name if isinstance(name, str) else "<stream>"
        fmt = "jsonl" if fmt is None else _check_format(fmt)
        if fmt not in _STREAM_FORMATS:
            raise MessageError(f"{name}: a stream can be read as {', '.join(_STREAM_FORMATS)}, not {fmt}")
        reads = _read_rows(name, _decoded(stream, stats, name), fmt, max_chars, stats)
    try:
        for read in reads:
            stats["truncated"] += read.message.truncated
            stats["read"] += 1
            yield read
    except OSError as exc:  # unreadable (permissions, a disk error): one line, not a traceback
        raise MessageError(f"{name}: cannot read it ({exc.strerror or exc})") from None


def iter_messages(
    source: str | os.PathLike[str] | IO[Any], *, fmt: str | None = None, max_chars: int = MAX_MESSAGE_CHARS
) -> Iterator[Message]:
    """The messages of a file, a Maildir or a stream, read one at a time as they are used.

    Mails with neither a body nor a subject are skipped (:func:`read_messages_report` counts them).
    Ids are not checked for duplicates here, since that needs every message first; use
    :func:`read_messages` for that.

    Args:
        source: A path (file or Maildir folder), ``'-'`` for standard input, or an open stream
            (text or bytes). Streams are read as JSONL unless ``fmt`` says csv or tsv.
        fmt: ``'jsonl'``, ``'csv'``, ``'tsv'``, ``'mbox'`` or ``'maildir'``; None to detect it
            (see :func:`detect_message_format`).
        max_chars: Longest text kept; a longer one is cut and the message flagged ``truncated``.

    Raises:
        MessageError: naming the file, line (or mail) and value of the first problem.
    """
    stats = _new_stats()
    for read in _read(source, fmt, max_chars, stats):
        yield read.message


def read_messages_report(
    source: str | os.PathLike[str] | IO[Any], *, fmt: str | None = None, max_chars: int = MAX_MESSAGE_CHARS
) -> tuple[list[Message], dict[str, Any]]:
    """Every message of ``source`` (as :func:`read_messages`) and what reading them did.

    Returns:
        The messages, and counts: ``read`` (messages returned), ``skipped_empty`` (mails with
        neither a body nor a subject, left out), ``truncated`` (messages cut to ``max_chars``) and
        ``duplicates`` (mails an earlier mail of the mailbox repeats, same Message-ID and content:
        left out) and ``reused_ids`` (mails with an earlier mail's Message-ID but other content:
        read under the id their content gives, :func:`message_id`); ``headerless`` (mails with no
        From, Subject, Date or Message-ID: a cut or damaged mailbox); ``too_deep`` (mails of parts
        nested too deep to parse, left out); ``not_utf8``, where a JSONL,
        CSV or TSV source had lines with bytes that are not UTF-8 (each such byte read as U+FFFD);
        and ``first``: for each count, where the first such mail is (``"message 3"``, with the
        Message-ID and the id given for a reused one); ``where``: where each message returned was
        read (``"line 4"``, ``"message 2"``), in order.

    Raises:
        MessageError: as :func:`iter_messages`, or for two rows (JSONL/CSV) with the same id.
    """
    stats = _new_stats()
    messages: list[Message] = []
    seen: dict[str, str] = {}
    contents: dict[str, tuple[str, str, str]] = {}  # a mailbox's Message-ID -> what that mail said
    for read in _read(source, fmt, max_chars, stats):
        ident = read.message.id
        if ident in seen and not read.where.startswith("line "):  # a mailbox, not a table
            content = (read.message.text, read.message.sender, read.message.subject)
            if contents.get(ident) == content or ident not in contents:
                # The same mail twice in a mailbox (sent to yourself, or via two lists) is common: one
                # copy is kept.
                _count(stats, "duplicates", f"{read.where}, a copy of {seen[ident]}")
                stats["read"] -= 1
                continue
            # Another mail under a Message-ID already read (a careless sender, or a forged one): it is
            # read under the id its content gives, never dropped as a copy (an emergency was).
            message = read.message
            ident = message_id(message.text, message.sender, message.subject, message.time)
            if ident in seen:
                _count(stats, "duplicates", f"{read.where}, a copy of {seen[ident]}")
                stats["read"] -= 1
                continue
            read = read._replace(message=replace(message, id=ident))
            _count(stats, "reused_ids", f"{read.where}, Message-ID {message.id!r:.80} of {seen[message.id]}, "
                                        f"read as {ident}")  # fmt: skip
        if not read.where.startswith("line "):
            contents[ident] = (read.message.text, read.message.sender, read.message.subject)
        if ident in seen:
            if read.derived:
                raise MessageError(
                    f"{read.name}: {read.where} is the same message as {seen[ident]} (same text, sender, subject "
                    f"and time, so the same derived id {ident!r}); remove one, or give each an id"
                )
            raise MessageError(
                f"{read.name}: {read.where} repeats the id {ident!r} of {seen[ident]}; ids must be unique"
            )
        seen[ident] = read.where
        messages.append(read.message)
        stats.setdefault("where", []).append(read.where)
    return messages, stats


def read_messages(
    source: str | os.PathLike[str] | IO[Any], *, fmt: str | None = None, max_chars: int = MAX_MESSAGE_CHARS
) -> list[Message]:
    """Every message of ``source``, all read before any is returned.

    Reading everything first means a bad line fails before a single message is triaged, rather
    than halfway through an inbox; and two messages with the same id are found (the assistant keys
    its decisions on ids).

    Args:
        source: As :func:`iter_messages`.
        fmt: As :func:`iter_messages`.
        max_chars: As :func:`iter_messages`.

    Raises:
        MessageError: naming the file, line (or mail) and value; for a repeated id, both lines.
    """
    return read_messages_report(source, fmt=fmt, max_chars=max_chars)[0]
