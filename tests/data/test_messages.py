"""Message readers: rows and mail read into plain-text messages, and a clear error for each bad input."""

from __future__ import annotations

import base64
import io
import json
import mailbox
import sys
from email.message import EmailMessage
from email.message import Message as MimeMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from attend.data.messages import (
    MAX_MESSAGE_CHARS,
    Message,
    MessageError,
    detect_message_format,
    iter_messages,
    mail_to_message,
    message_id,
    read_messages,
    read_messages_report,
)
from attend.data.readers import DataError

ROWS = [
    {
        "id": "a1",
        "text": "Server down\r\nsince 9:00",
        "sender": "ops",
        "subject": "Alert",
        "time": "2024-05-01T09:30:00Z",
    },
    {"id": 7, "text": "Lunch?", "sender": "Ana", "channel": "chat", "extra": "ignored"},
    {"text": "no id here", "time": "2024-05-01"},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def _mbox(path: Path, *mails: MimeMessage | bytes) -> Path:
    box = mailbox.mbox(path)
    for mail in mails:
        box.add(mail)
    box.close()
    return path


def _mail(body: str = "Hello", *, subject: str = "Hi", msg_id: str | None = None, **headers: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = headers.pop("sender", "Ana Ruiz <ana@x.org>")
    if subject:
        mail["Subject"] = subject
    mail["Date"] = headers.pop("date", "Wed, 01 May 2024 09:30:00 +0200")
    if msg_id:
        mail["Message-ID"] = msg_id
    for name, value in headers.items():
        mail[name] = value
    if body:
        mail.set_content(body)
    return mail


# --- JSONL, CSV, TSV -------------------------------------------------------------------------------


def test_jsonl_reads_every_field_and_round_trips(tmp_path: Path) -> None:
    messages = read_messages(_jsonl(tmp_path / "in.jsonl", ROWS))
    first, second, third = messages
    assert first == Message(
        "a1", "Server down\nsince 9:00", "ops", "Alert", "2024-05-01T09:30:00Z", channel="", truncated=False
    )
    assert (second.id, second.text, second.sender, second.channel) == ("7", "Lunch?", "Ana", "chat")
    assert third.id == message_id("no id here", time="2024-05-01") and third.time == "2024-05-01"
    again = read_messages(_jsonl(tmp_path / "out.jsonl", [m.to_dict() for m in messages]))
    assert again == messages


@pytest.mark.parametrize("sep", [",", "\t"])
def test_csv_and_tsv_round_trip(tmp_path: Path, sep: str) -> None:
    path = tmp_path / ("in.csv" if sep == "," else "in.tsv")
    path.write_text(
        f"id{sep} text{sep}sender{sep}time{sep}other\n"
        f'x1{sep}"two\nlines"{sep}Ana{sep}2024-05-01T09:30:00+02:00{sep}z\n'
        f"{sep}42{sep}{sep}{sep}\n",
        encoding="utf-8",
    )
    first, second = read_messages(path)
    assert first == Message("x1", "two\nlines", "Ana", "", "2024-05-01T09:30:00+02:00")
    assert second == Message(message_id("42"), "42")
    assert detect_message_format(path) == ("csv" if sep == "," else "tsv")


def test_fields_a_message_does_not_have_are_reported_with_their_first_line(tmp_path: Path) -> None:
    """Read, not refused (an export's other columns), but said: a misspelt "chanel" had gone unseen."""
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "1", "text": "hi", "chanel": "sms"}\n{"id": "2", "text": "yo", "to": "me", "chanel": '
                    '"x"}\n', encoding="utf-8")  # fmt: skip
    messages, report = read_messages_report(path)
    assert [m.channel for m in messages] == ["", ""] and report["unread_fields"] == {"chanel": "line 1", "to": "line 2"}
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("id,text,channel,\n1,hi,sms,\n", encoding="utf-8")  # an unnamed column: nothing to name
    assert "unread_fields" not in read_messages_report(csv_path)[1]


def test_an_email_body_over_many_lines_with_commas_is_one_message(tmp_path: Path) -> None:
    path = tmp_path / "mail.csv"
    body = "Hi Ana,\nthe boiler, again\nis leaking, badly\nthanks, Bo"
    path.write_text(f'id,text\nm1,"{body}"\nm2,short\n', encoding="utf-8")
    assert [m.text for m in read_messages(path)] == [body, "short"]  # before: "a quote ... is never closed"


def test_a_row_of_subject_alone_is_read_from_its_subject_as_a_mail_is(tmp_path: Path) -> None:
    """An alert of subject alone in JSONL had stopped the whole batch as "an empty message"."""
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"id": "x1", "text": "", "subject": "Tax forms due today"}\n{"text": " ", "subject": " "}\n',
                    encoding="utf-8")  # fmt: skip
    with pytest.raises(MessageError, match=r"line 2 is an empty message: its 'text' is blank, and it has no subject"):
        read_messages(path)
    path.write_text('{"id": "x1", "text": "", "subject": "Tax forms due today"}\n', encoding="utf-8")
    (message,) = read_messages(path)
    assert (message.text, message.subject) == ("Tax forms due today", "Tax forms due today")


def test_derived_ids_are_stable_and_differ_with_the_text(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "hello"}, {"text": "hello", "sender": "Bo"}, {"text": "bye"}])
    first, second = read_messages(path), read_messages(path)
    assert [m.id for m in first] == [m.id for m in second]
    assert len({m.id for m in first}) == 3
    # Pinned: the same message must get the same id on every machine and version.
    assert first[0].id == message_id("hello") == "m-64c4370fe805bf2c"
    assert message_id("hello", "Ana <ana@x.org>", "Hi", "2024-05-01T09:30:00+00:00") == "m-b1fa39bda92fc1f7"


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("d.jsonl", '{"text": "ok"}\n{"body": "no text"}\n', r"d\.jsonl: line 2 has no field 'text' \(fields: body\)"),
        ("d.csv", "id,body\n1,hi\n", r"d\.csv: line 1: the header has no column 'text' \(columns: id, body\)"),
        # A headerless file's first message is not shown as its columns (text never goes to stderr).
        ("d.csv", "m1,Dr Lee,HIV test positive\n", r"d\.csv: line 1: the header has no column 'text' \(it does not "
         r"look like a header and is not shown: it may be a message\)"),
        ("d.csv", "ид,тело\n1,привет\n", r"the header has no column 'text' \(columns: ид, тело\)"),  # any letters
        ("d.jsonl", '{"text": "ok"}\n{"text": "  \\n "}\n', r"d\.jsonl: line 2 is an empty message"),
        ("d.csv", "id,text\n1,ok\n2,   \n", r"d\.csv: line 3 is an empty message"),
        ("d.jsonl", '{"text": "\\u200b"}\n', r"line 1 is an empty message: .* \(only invisible characters\)"),
        ("d.jsonl", '{"text": "ok"}\n\n{not json}\n', r"d\.jsonl: line 3 is not valid JSON"),
        ("d.jsonl", '["a list"]\n', r"line 1 is a JSON list, expected one object per line"),
        ("d.jsonl", '{"text": {"a": 1}}\n', r"line 1 has a dict in field 'text', expected text \(the value is not"),
        # The time is not shown: a CSV's unquoted comma shifts a piece of the message into it.
        ("d.jsonl", '{"text": "ok", "time": "yesterday"}\n', r"line 1 has a time that is not an ISO 8601 date and "
         r"time \(e\.g\. .*; the value is not shown"),
        ("d.jsonl", '{"id": true, "text": "ok"}\n', r"line 1 has a bool in field 'id', expected text"),
        ("d.jsonl", '{"text": "ok", "text": "x"}\n', r'line 1 is not valid JSON \(the key "text" is given twice'),
        ("d.jsonl", '{"text": 1e400}\n', r"line 1 has inf in field 'text', expected text"),
        ("d.csv", "text\nok,extra\n", r"line 2 has more fields than the header"),
        ("d.jsonl", "\n  \n", r"d\.jsonl is empty"),
        ("d.txt", "text\nhello\n", r"d\.txt: cannot tell the message format; give one of jsonl, csv, tsv, mbox"),
    ],
)
def test_bad_rows_get_errors_naming_file_line_and_value(tmp_path: Path, name: str, content: str, error: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MessageError, match=error):
        read_messages(path)


def test_message_error_is_a_data_error_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        read_messages(tmp_path / "nope.jsonl")
    with pytest.raises(MessageError, match=r"no such file"):
        read_messages(tmp_path / "nope.jsonl", fmt="jsonl")
    with pytest.raises(MessageError, match=r"unknown message format 'xml'"):
        read_messages(tmp_path / "nope.jsonl", fmt="xml")


def test_bytes_that_are_not_utf8_are_replaced_not_fatal(tmp_path: Path) -> None:
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"text": "caf\xe9 ok"}\n')  # a BOM, then a Latin-1 byte
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"text,sender\nna\xefve,B\xf6b\n")
    assert read_messages(jsonl)[0].text == "caf\ufffd ok"
    assert read_messages(csv_path)[0].text == "na\ufffdve"
    # ... and counted, for the CLI to say so (the replacement had been silent).
    assert read_messages_report(csv_path)[1]["not_utf8"] == 1
    csv_path.write_bytes(b"text,sender\nnaive,Bob\n")
    assert "not_utf8" not in read_messages_report(csv_path)[1]
    assert read_messages_report(io.BytesIO(b'{"text": "caf\xe9"}\n{"text": "ok"}\n'))[1]["not_utf8"] == 1
    # UTF-16 (Excel's "Unicode text") is refused as the labelled-data readers refuse it: it had been
    # "line 1 is not valid JSON", or a CSV header "with no column 'text'".
    for wide in (tmp_path / "u16.jsonl", tmp_path / "u16.csv"):
        wide.write_bytes(('{"text": "第三季度"}\n' if wide.suffix == ".jsonl" else "text\n第三季度\n").encode("utf-16"))
        with pytest.raises(MessageError, match=rf"{wide.name} is UTF-16 text .*; re-save it as UTF-8"):
            read_messages(wide)
    with pytest.raises(MessageError, match=r"<stream> is UTF-16 text"):
        read_messages(io.BytesIO('{"text": "x"}\n'.encode("utf-16")))


def test_duplicate_ids_are_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"id": "x", "text": "a"}, {"text": "b"}, {"id": "x", "text": "c"}])
    with pytest.raises(MessageError, match=r"d\.jsonl: line 3 repeats the id 'x' of line 1"):
        read_messages(path)
    same = _jsonl(tmp_path / "same.jsonl", [{"text": "twice"}, {"text": "other"}, {"text": "twice"}])
    with pytest.raises(MessageError, match=r"line 3 is the same message as line 1"):
        read_messages(same)
    assert len(list(iter_messages(same))) == 3  # streaming does not look back
    # An id too long for feedback to name (the service takes at most 300 characters) is refused here too.
    long_id = _jsonl(tmp_path / "long.jsonl", [{"id": "x" * 400, "text": "a"}])
    with pytest.raises(MessageError, match=r"line 1 has an id of 400 characters, over 300"):
        read_messages(long_id)
    mail = _mbox(tmp_path / "long.mbox", _mail("hello", msg_id=f"<{'y' * 400}@x>"))
    assert read_messages(mail)[0].id.startswith("m-")  # a Message-ID that long: the content's id


def test_streams_and_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [m.text for m in read_messages(io.StringIO('{"text": "one"}\n{"text": "two"}\n'))] == ["one", "two"]
    assert read_messages(io.BytesIO(b'{"text": "caf\xe9"}\n'))[0].text == "caf\ufffd"
    monkeypatch.setattr(sys, "stdin", io.StringIO("id,text\n1,from stdin\n"))
    assert read_messages("-", fmt="csv") == [Message("1", "from stdin")]
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"text": "ok"}\n{"text": ""}\n'))
    with pytest.raises(MessageError, match=r"standard input: line 2 is an empty message"):
        read_messages("-")
    with pytest.raises(MessageError, match=r"a stream can be read as jsonl, csv, tsv, not mbox"):
        read_messages(io.StringIO("From x\n"), fmt="mbox")


def test_a_ten_megabyte_message_is_read_quickly_and_cut(tmp_path: Path) -> None:
    body = "a line of a very long log\n" * 400_000  # 10.4 MB
    path = _jsonl(tmp_path / "big.jsonl", [{"text": body}, {"text": "short"}])
    messages, report = read_messages_report(path)
    assert len(messages[0].text) == MAX_MESSAGE_CHARS and messages[0].truncated
    assert messages[0].text == body[:MAX_MESSAGE_CHARS]
    assert not messages[1].truncated
    assert report == {"read": 2, "skipped_empty": 0, "truncated": 1, "duplicates": 0, "reused_ids": 0,
                      "headerless": 0, "too_deep": 0, "cut_off": 0, "first": {},
                      "where": ["line 1", "line 2"]}  # fmt: skip
    assert read_messages(path, max_chars=10)[0].text == "a line of "
    with pytest.raises(ValueError, match="max_chars must be a positive integer"):
        read_messages(path, max_chars=0)


def test_a_ten_megabyte_html_mail_is_read_quickly_and_cut(tmp_path: Path) -> None:
    html = "<html><body>" + "<p>a paragraph of a huge newsletter</p>\n" * 250_000 + "</body></html>"
    mail = _mail(subject="Digest")
    mail.set_content(html, subtype="html")
    path = _mbox(tmp_path / "big.mbox", mail)
    (message,) = read_messages(path)
    assert message.truncated and len(message.text) == MAX_MESSAGE_CHARS
    assert message.text.startswith("a paragraph of a huge newsletter\n\na paragraph")
    assert "<p>" not in message.text


# --- mbox and Maildir ------------------------------------------------------------------------------


def test_a_plain_mail(tmp_path: Path) -> None:
    path = _mbox(tmp_path / "in.mbox", _mail("Hello Bo,\r\n\r\nsee you at 3.\r\n", msg_id="<abc@x.org>"))
    (message,) = read_messages(path)
    assert message == Message(
        id="abc@x.org",
        text="Hello Bo,\n\nsee you at 3.",
        sender="Ana Ruiz <ana@x.org>",
        subject="Hi",
        time="2024-05-01T09:30:00+02:00",
        channel="email",
    )


def test_list_and_bulk_mail_comes_as_a_newsletter(tmp_path: Path) -> None:
    path = _mbox(tmp_path / "in.mbox",
                 _mail("This week in Rust", **{"List-Id": "Rust weekly <weekly.rust.example>"}),
                 _mail("40% off", **{"List-Unsubscribe": "<mailto:unsub@shop.example>"}),
                 _mail("Digest", **{"Precedence": "Bulk"}),
                 _mail("Are we still on for 3?", **{"Precedence": "first-class"}))  # fmt: skip
    assert [m.channel for m in read_messages(path)] == ["newsletter", "newsletter", "newsletter", "email"]


def test_multipart_alternative_prefers_plain_text(tmp_path: Path) -> None:
    mail = _mail("the plain version")
    mail.add_alternative("<p>the <b>HTML</b> version</p>", subtype="html")
    (message,) = read_messages(_mbox(tmp_path / "in.mbox", mail))
    assert message.text == "the plain version"


def test_html_only_mail_is_converted_to_text(tmp_path: Path) -> None:
    html = (
        "<html><head><style>p { color: red }</style><script>alert('x')</script></head><body>"
        "<p>Tom &amp; Jerry &lt;3 caf&eacute;</p><div>line one<br>line two</div>\n\n\n"
        "<ul><li>first</li><li>second</li></ul><p></p><p></p><p></p>"
        "<table><tr><td>cell</td><td>next</td></tr></table><!-- a comment --></body></html>"
    )
    mail = _mail()
    mail.set_content(html, subtype="html")
    (message,) = read_messages(_mbox(tmp_path / "in.mbox", mail))
    assert message.text == "Tom & Jerry <3 café\n\nline one\nline two\nfirst\nsecond\n\ncell next"
    assert "alert" not in message.text and "color" not in message.text and "comment" not in message.text


def test_attachments_are_skipped(tmp_path: Path) -> None:
    mail = _mail("see the attached report")
    mail.add_attachment(b"\x89PNG BINARY-SECRET", maintype="image", subtype="png", filename="chart.png")
    mail.add_attachment("ATTACHED-TEXT-SECRET", filename="notes.txt")
    mail.add_attachment("<p>ATTACHED-HTML-SECRET</p>", subtype="html", filename="page.html")
    forwarded = _mail("FORWARDED-SECRET", subject="fwd")
    mail.add_attachment(forwarded)  # message/rfc822, Content-Disposition: attachment
    mail.add_attachment("INLINE-FILE-SECRET", disposition="inline", filename="log.txt")  # as Apple Mail sends files
    (message,) = read_messages(_mbox(tmp_path / "in.mbox", mail))
    # A mail forwarded as an attachment is no file but the content: read, under its From, Date and Subject.
    assert message.text == ("see the attached report\n\nFrom: Ana Ruiz <ana@x.org>\nDate: Wed, 01 May 2024 09:30:00 "
                            "+0200\nSubject: fwd\n\nFORWARDED-SECRET")  # fmt: skip


def test_encoded_headers_are_decoded(tmp_path: Path) -> None:
    mail = _mail(subject="会議の件 — café", sender="José Pérez <jose@x.org>")  # encoded as RFC 2047 when written
    raw = MIMEText("body", "plain", "utf-8")
    raw["From"] = "=?iso-8859-1?q?Jos=E9?= <jose@x.org>"
    raw["Subject"] = "=?utf-8?b?5Lya6K2w?= =?utf-8?b?44Gu5Lu2?= today"
    path = _mbox(tmp_path / "in.mbox", mail, raw)
    assert b"=?utf-8?" in path.read_bytes()
    first, second = read_messages(path)
    assert (first.sender, first.subject) == ("José Pérez <jose@x.org>", "会議の件 — café")
    assert (second.sender, second.subject) == ("José <jose@x.org>", "会議の件 today")


def test_raw_8bit_headers_and_gb2312_are_read_as_mail_clients_read_them(tmp_path: Path) -> None:
    """An unencoded GBK subject had been read as Windows-1252 (``½ô¼±``), and ``gb2312``, which mail
    means as GBK, had turned 镕 (outside GB2312) into U+FFFD, in a subject and a body alike."""
    gbk_subject = ("Subject: 紧急：服务器宕机\nFrom: 运维 <ops@x.cn>\n".encode("gbk")
                   + b"Content-Type: text/plain; charset=gbk\nContent-Transfer-Encoding: 8bit\n\n"
                   + "请立即处理".encode("gbk") + b"\n")  # fmt: skip
    utf8_subject = ("Subject: Réunion – 会议\nFrom: a@x.org\n".encode()
                    + b"Content-Type: text/plain; charset=gbk\n\nok\n")  # UTF-8 is read first, whatever the body says
    gb2312 = (b"Subject: =?gb2312?B?" + base64.b64encode("朱镕基".encode("gbk"))
              + b"?=\nFrom: b@x.cn\nContent-Type: text/plain; charset=gb2312\n\n" + "朱镕基".encode("gbk") + b"\n")
    latin = ("Subject: café réunion\nFrom: c@x.org\n".encode("latin-1")
             + b"Content-Type: text/plain; charset=utf-8\n\nok\n")  # fmt: skip
    first, second, third, fourth = read_messages(_mbox(tmp_path / "in.mbox", gbk_subject, utf8_subject, gb2312, latin))
    assert (first.subject, first.sender, first.text) == ("紧急：服务器宕机", "运维 <ops@x.cn>", "请立即处理")
    assert second.subject == "Réunion – 会议"
    assert (third.subject, third.text) == ("朱镕基", "朱镕基")
    assert fourth.subject == "café réunion"  # not the declared UTF-8 with U+FFFD: Windows-1252, as before


def test_bad_charsets_and_headers_do_not_crash(tmp_path: Path) -> None:
    mails = [
        b"From: =?x-bogus?q?Bad?= <bad@x.org>\nSubject: caf\xc3\xa9 raw\nDate: not a date\n"
        b'Content-Type: text/plain; charset="x-no-such-charset"\n\ncaf\xe9 latin-1\n',
        b'From: a@x.org\nSubject: s\nContent-Type: text/plain; charset="utf-8"\n\nmostly ok \xff here\n',
        b'From: a@x.org\nSubject: s2\nContent-Type: text/plain; charset="hex"\n\nplain \xe9\n',
        b"From: a@x.org\nSubject: s3\n\nno charset, utf-8 bytes: \xe2\x9c\x93\n",
    ]
    bogus, mostly, codec, undeclared = read_messages(_mbox(tmp_path / "in.mbox", *mails))
    assert (bogus.text, bogus.sender, bogus.subject, bogus.time) == (
        "café latin-1",
        "Bad <bad@x.org>",
        "café raw",
        None,
    )
    assert mostly.text == "mostly ok \ufffd here"
    assert codec.text == "plain é"
    assert undeclared.text == "no charset, utf-8 bytes: ✓"


def test_hostile_mails_are_read_safely(tmp_path: Path) -> None:
    """A mail nested a thousand parts deep is skipped and counted (the parser's RecursionError had
    ended the mailbox's run); a terminal's escape sequences and C1 controls in headers and bodies are
    dropped; a multipart without a boundary is read as its text (it had been emptied); a <template>'s
    content, never shown, is not text."""
    deep = (b"From: a@b\nSubject: deep\n"
            + b"".join(b"Content-Type: multipart/mixed; boundary=B%d\n\n--B%d\n" % (i, i) for i in range(1000))
            + b"\nx\n")  # fmt: skip
    escapes = (b"From: =?utf-8?q?Bob_=1B]0;owned=07=1B[2J?= <b@x.org>\nSubject: =?utf-8?q?weekly_=1B[31mpromo?=\n"
               b"Content-Type: text/plain; charset=utf-8\n\nbody \x1b[2J with \xc2\x85 C1\n")  # fmt: skip
    no_boundary = b"From: c@x.org\nSubject: s\nContent-Type: multipart/mixed\n\nno boundary param body\n"
    template = (b"From: d@x.org\nSubject: t\nContent-Type: text/html\n\n"
                b"<p>Real text</p><template>SECRET TEMPLATE</template>\n")  # fmt: skip
    box = _mbox(tmp_path / "in.mbox", deep, escapes, no_boundary, template)
    messages, report = read_messages_report(box)
    assert report["too_deep"] == 1 and report["first"]["too_deep"] == "message 1"
    shown, plain, html = messages
    assert (shown.sender, shown.subject) == ("Bob ]0;owned[2J <b@x.org>", "weekly [31mpromo")
    assert shown.text == "body [2J with  C1" and "\x1b" not in shown.text
    # A Latin-1 label is read as Windows-1252, as mail clients read it: 0x80-0x9F are punctuation there,
    # which the control characters' removal had taken out ("It costs 50  dont wait").
    latin = (b"From: e@x.org\nSubject: p\nContent-Type: text/plain; charset=iso-8859-1\n\n"
             b"It costs \x8050 \x96 don\x92t\n")
    (priced,) = read_messages(_mbox(tmp_path / "latin.mbox", latin))
    assert priced.text == "It costs \u20ac50 \u2013 don\u2019t"
    assert plain.text == "no boundary param body"
    assert html.text == "Real text"
    maildir = mailbox.Maildir(tmp_path / "md")
    maildir.add(deep)
    maildir.add(_mail("still read"))
    messages, report = read_messages_report(tmp_path / "md")
    assert [m.text for m in messages] == ["still read"] and report["too_deep"] == 1


def test_empty_mails_are_skipped_and_counted_and_a_subject_stands_for_no_body(tmp_path: Path) -> None:
    empty = MimeMessage()
    empty["From"] = "a@x.org"
    just_subject = _mail("", subject="Call me")
    blank_html = _mail()
    blank_html.set_content("<p>&nbsp;</p><p>\u200b</p>", subtype="html")
    path = _mbox(tmp_path / "in.mbox", empty, _mail("kept"), just_subject, blank_html)
    messages, report = read_messages_report(path)
    assert [m.text for m in messages] == ["kept", "Call me", "Hi"]
    assert report == {"read": 3, "skipped_empty": 1, "truncated": 0, "duplicates": 0, "reused_ids": 0,
                      "headerless": 0, "too_deep": 0, "cut_off": 0, "first": {"skipped_empty": "message 1"},
                      "where": ["message 2", "message 3", "message 4"]}  # fmt: skip
    assert len(list(iter_messages(path))) == 3
    with pytest.raises(MessageError, match=r"mail 42 is empty: it has neither a text body nor a subject"):
        mail_to_message(empty, key="42")


def test_mails_without_message_id_get_derived_ids_and_repeated_ids_are_kept_once(tmp_path: Path) -> None:
    path = _mbox(tmp_path / "in.mbox", _mail("one"), _mail("two"))
    first, second = read_messages(path)
    assert first.id == message_id("one", first.sender, first.subject, first.time)
    assert first.id != second.id and [m.id for m in read_messages(path)] == [first.id, second.id]
    dup = _mbox(tmp_path / "dup.mbox", _mail("a", msg_id="<same@x>"), _mail("b"), _mail("a", msg_id="<same@x>"),
                _mail("Dad is in hospital, call me", msg_id="<same@x>"))  # fmt: skip
    messages, report = read_messages_report(dup)  # the same mail delivered twice: one copy kept, counted
    assert [m.text for m in messages] == ["a", "b", "Dad is in hospital, call me"]
    assert report["duplicates"] == 1 and report["read"] == 3 and report["reused_ids"] == 1
    # Which mails: the note names them (it gave counts alone, and the emergency's new id was untraceable).
    other_id = message_id("Dad is in hospital, call me", messages[2].sender, messages[2].subject, messages[2].time)
    assert report["first"] == {"duplicates": "message 3, a copy of message 1",
                               "reused_ids": f"message 4, Message-ID 'same@x' of message 1, read as {other_id}"}
    # Another mail under a Message-ID already read is no copy (it was dropped): it gets its content's id.
    other = messages[2]
    assert messages[0].id == "same@x" and other.id == message_id(other.text, other.sender, other.subject, other.time)


def test_maildir(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Mail", create=True)
    box.add(_mail("first mail", msg_id="<1@x>"))
    multipart = MIMEMultipart("alternative")
    multipart["Subject"] = "second"
    multipart.attach(MIMEText("<p>html only</p>", "html"))
    box.add(multipart)
    assert detect_message_format(tmp_path / "Mail") == "maildir"
    messages = read_messages(tmp_path / "Mail")
    assert sorted(m.text for m in messages) == ["first mail", "html only"]
    assert {m.channel for m in messages} == {"email"}
    assert messages == read_messages(tmp_path / "Mail", fmt="maildir")  # same order every time
    (tmp_path / "Mail" / "cur" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # a file manager's, not a mail
    assert read_messages(tmp_path / "Mail") == messages
    (tmp_path / "plain").mkdir()
    with pytest.raises(MessageError, match=r"plain is a directory but not a Maildir"):
        read_messages(tmp_path / "plain")
    with pytest.raises(MessageError, match=r"plain is not a Maildir: .* cur/, new/ and tmp/"):
        read_messages(tmp_path / "plain", fmt="maildir")


def test_mbox_detection_and_files_that_are_not_mbox(tmp_path: Path) -> None:
    inbox = _mbox(tmp_path / "Inbox", _mail("hi"))  # no extension, as Thunderbird saves it
    assert detect_message_format(inbox) == "mbox"
    assert [m.text for m in read_messages(inbox)] == ["hi"]
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n", encoding="utf-8")
    with pytest.raises(MessageError, match=r"notes\.txt is not an mbox file: its first line does not start"):
        read_messages(text, fmt="mbox")
    fake = tmp_path / "fake.mbox"
    fake.write_text("\n\n   \n", encoding="utf-8")
    with pytest.raises(MessageError, match=r"fake\.mbox is not an mbox file: it holds only blank lines"):
        read_messages(fake)
    empty = tmp_path / "empty.mbox"
    empty.write_bytes(b"")
    assert read_messages(empty) == []  # an empty mailbox is a valid one
    with pytest.raises(MessageError, match=r"no such file or directory"):
        detect_message_format(tmp_path / "missing")
    with pytest.raises(MessageError, match=r"missing\.mbox: no such file"):
        read_messages(tmp_path / "missing.mbox", fmt="mbox")
    with pytest.raises(MessageError, match=r"missing: no such directory"):
        read_messages(tmp_path / "missing", fmt="maildir")
    with pytest.raises(MessageError, match=r"is a directory, expected a file \(mbox\)"):
        read_messages(tmp_path, fmt="mbox")


def test_a_compressed_table_of_messages_reads_as_the_file_inside(tmp_path: Path) -> None:
    import gzip
    import lzma

    rows = [{"id": "a", "text": "Call me now", "sender": "boss@example.com"}, {"id": "b", "text": "Lunch?"}]
    jsonl = tmp_path / "inbox.jsonl.gz"
    jsonl.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert [(m.id, m.text) for m in iter_messages(jsonl)] == [("a", "Call me now"), ("b", "Lunch?")]
    table = tmp_path / "inbox.csv.xz"
    table.write_bytes(lzma.compress(b"id,text\nc,The build is red\n"))
    assert [(m.id, m.text) for m in iter_messages(table)] == [("c", "The build is red")]
    box = tmp_path / "inbox.mbox.gz"
    box.write_bytes(gzip.compress(b"From a@b Sat Jan  1 00:00:00 2022\nSubject: x\n\nsecret body\n"))
    with pytest.raises(MessageError, match="a compressed mbox is not read as it is; decompress it first"):
        list(iter_messages(box))
    with pytest.raises(MessageError, match="a compressed mbox is not read as it is"):  # named so, as well
        list(iter_messages(box, fmt="mbox"))
    inbox = tmp_path / "Inbox.gz"  # no format in its name
    inbox.write_bytes(box.read_bytes())
    with pytest.raises(MessageError, match=r"cannot tell the message format of a compressed file from its name; "
                                           r"name it .*\.jsonl.* followed by \.gz \(an mbox: decompress it first\)"):
        list(iter_messages(inbox))
    plain = tmp_path / "named.jsonl.gz"  # not gzip: the error quotes none of the file (gzip's own quotes its start)
    plain.write_bytes(b'{"id": "s", "text": "secret"}\n')
    with pytest.raises(DataError, match=r"named\.jsonl\.gz: not readable as gzip-compressed data") as error:
        list(iter_messages(plain))
    assert "secret" not in str(error.value) and '{"' not in str(error.value)


def test_a_reply_is_read_without_the_mail_it_quotes(tmp_path: Path) -> None:
    """The quoted history decided the triage: "no action from me" above a quoted emergency read as urgent."""
    top = ("Thanks, got it, no action from me.\n\nOn Mon, 3 Mar 2025, Ana wrote:\n> URGENT: the deck is due in 1 "
           "hour\n> call me")  # fmt: skip
    bottom = "Le lundi 3 mars, Ana a écrit :\n> long quoted\n>> older\n\nThe database is down. Call me now."
    only = "> a quoted line\n> and another"
    cited = "Hi,\nthe deploy fails with:\n> ERROR disk full on db1\nPlease fix today."  # the sender's own citation
    inline = "> can you fix db1?\nYes, today.\n> and db2?\nTomorrow."
    path = _mbox(tmp_path / "in.mbox", _mail(top), _mail(bottom), _mail(only), _mail(cited), _mail(inline))
    assert [m.text for m in read_messages(path)] == ["Thanks, got it, no action from me.",
                                                     "The database is down. Call me now.", only, cited,
                                                     "Yes, today.\nTomorrow."]  # fmt: skip


def test_an_mbox_reads_a_from_line_in_a_body_as_a_maildir_does(tmp_path: Path) -> None:
    """mbox writes a body line "From ..." as ">From ...": the two copies of one mail differed, and a
    session refused the Maildir for holding "another text" under the same Message-ID."""
    mail = _mail("Here is the quote:\nFrom the desk of the CEO\nthanks", msg_id="<q@x>")
    inbox = _mbox(tmp_path / "in.mbox", mail)
    assert b"\n>From the desk" in inbox.read_bytes()
    box = mailbox.Maildir(tmp_path / "Mail", create=True)
    box.add(mail)
    assert read_messages(inbox) == read_messages(tmp_path / "Mail")
    assert read_messages(inbox)[0].text == "Here is the quote:\nFrom the desk of the CEO\nthanks"


def test_utf8_declared_latin1_forwarded_mail_html_preheader_and_invitations(tmp_path: Path) -> None:
    mislabelled = MIMEText("x", "plain", "iso-8859-1")
    mislabelled.set_payload("Réunion: le café coûte 3 €".encode())  # UTF-8 bytes under a Latin-1 label
    del mislabelled["Content-Transfer-Encoding"]
    mislabelled["Content-Transfer-Encoding"] = "8bit"
    latin = MIMEText("x", "plain", "iso-8859-1")
    latin.set_payload("café".encode("latin-1"))  # truly Latin-1: read as declared
    del latin["Content-Transfer-Encoding"]
    latin["Content-Transfer-Encoding"] = "8bit"
    forward = MIMEMultipart("mixed")
    forward["Subject"] = "Fwd: outage"
    forward.attach(MIMEText("see below", "plain"))
    inner = _mail("The cash slide must show runway", subject="Cash slide", sender="CEO <ceo@x.org>")
    attached = MimeMessage()
    attached["Content-Type"] = "message/rfc822"
    attached["Content-Disposition"] = "attachment"  # as "forward as attachment" sends it
    attached.set_payload([inner])
    forward.attach(attached)
    html = _mail()
    html.set_content("<html><head><title>PORTAL TEMPLATE v2</title></head><body><div style='display: none'>"
                     "Preheader: <b>50% off</b></div><p>Your password expires</p></body></html>", subtype="html")
    invite = _mail("")
    invite.set_content("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20250305T100000Z\r\n"
                       "SUMMARY:Board deck\r\n  review\r\nLOCATION:Room 4\\, floor 2\r\n"
                       "DESCRIPTION:Bring the cash slide\\nand FX\r\nEND:VEVENT\r\n"
                       "END:VCALENDAR\r\n", subtype="calendar")  # fmt: skip
    messages = read_messages(_mbox(tmp_path / "in.mbox", mislabelled, latin, forward, html, invite))
    texts = [m.text for m in messages]
    assert texts[0] == "Réunion: le café coûte 3 €" and texts[1] == "café"
    assert texts[2] == ("see below\n\nFrom: CEO <ceo@x.org>\nDate: Wed, 01 May 2024 09:30:00 +0200\nSubject: Cash slide"
                        "\n\nThe cash slide must show runway")  # it was "see below" alone
    assert texts[3] == "Your password expires"  # no <title>, no hidden preheader
    from attend.data.messages import _calendar_text, _html_to_text

    # A hidden element left open is closed as HTML closes it, or else not hidden (it hid the whole body).
    assert _html_to_text("<p style='display:none'>preheader<p>Server is down, call me now</p>", 1000) == (
        "Server is down, call me now")  # fmt: skip
    assert _html_to_text("<table><tr><td style='display:none'>x<td>Real body</table>", 1000) == "Real body"
    assert _html_to_text("<div style='display:none'>never <b>closed", 1000) == "never closed"
    # The event's own start, with its zone: not the time-zone block's, nor a reminder's description.
    zoned = ("BEGIN:VCALENDAR\r\nBEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:DAYLIGHT\r\nDTSTART:19700329T020000"
             "\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nDTSTART;TZID=Europe/Berlin:20241210T100000\r\n"
             "SUMMARY:Review\r\nBEGIN:VALARM\r\nDESCRIPTION:Reminder\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR")
    assert _calendar_text(zoned) == "Review\nWhen: 2024-12-10 10:00 Europe/Berlin"
    assert texts[4] == ("Board deck review\nWhen: 2025-03-05 10:00 UTC\nWhere: Room 4, floor 2\nBring the cash slide"
                        "\nand FX")  # fmt: skip


def test_maildir_reads_in_delivery_order_and_a_damaged_mbox_is_said(tmp_path: Path) -> None:
    mailbox.Maildir(tmp_path / "Mail", create=True)
    for key, text in (("1700000000.M500000P1Q2.host", "second"), ("1700000000.M99999P1Q1.host", "first"),
                      ("1700000001.M1P1Q3.host", "third")):  # fmt: skip
        (tmp_path / "Mail" / "new" / key).write_bytes(_mail(text).as_bytes())
    assert [m.text for m in read_messages(tmp_path / "Mail")] == ["first", "second", "third"]
    # A mail cut short in its headers, binary junk: counted and named; control bytes are no text.
    path = tmp_path / "cut.mbox"
    path.write_bytes(_mbox(tmp_path / "ok.mbox", _mail("whole")).read_bytes() + b"From x Mon Jan 1 00:00:00 2024\n"
                     b"\x00\x01junk \x7fafter\n")  # fmt: skip
    messages, report = read_messages_report(path)
    assert [m.text for m in messages] == ["whole", "junk after"]
    assert report["headerless"] == 1 and report["first"]["headerless"] == "message 2"


def test_outlook_and_html_replies_and_wrapped_attributions_are_read_without_their_quotes(tmp_path: Path) -> None:
    """Only ">" lines after a one-line attribution were left out: an Outlook reply, an HTML-only reply
    (Gmail's gmail_quote, Apple Mail's and Thunderbird's type=cite) and a wrapped "wrote:" kept the
    quoted emergency, which decided the triage."""
    own = "Thanks, nothing to do on our side."
    outlook = f"{own}\n\n-----Original Message-----\nFrom: Ops\nSent: Monday\nURGENT: production is down"
    wrapped = f"{own} Ann\n\nOn Mon, 3 Mar 2025 at 10:00, Ann Smith <ann@x.org>\nwrote:\n> URGENT: production is down"
    gmail = _mail(None)
    gmail.set_content(f'<div dir="ltr">{own} Bo</div><div class="gmail_quote"><div class="gmail_attr">On Mon, 3 Mar '
                      '2025 at 10:00, Ann &lt;ann@x.org&gt; wrote:<br></div><blockquote class="gmail_quote" '
                      'style="margin:0">URGENT: production is <b>down</b><blockquote>older</blockquote> still'
                      '</blockquote></div>', subtype="html")  # fmt: skip
    apple = _mail(None)
    apple.set_content(f"<p>{own} Cy</p><blockquote type=\"cite\"><p>URGENT: production is down</p></blockquote>",
                      subtype="html")  # fmt: skip
    forward = _mail(None)  # a quote alone is kept whole: a forward is not emptied
    forward.set_content('<blockquote type="cite">URGENT: production is down</blockquote>', subtype="html")
    path = _mbox(tmp_path / "r.mbox", _mail(outlook), _mail(wrapped), gmail, apple, forward)
    texts = [m.text for m in read_messages(path)]
    assert texts[:2] == [own, f"{own} Ann"]
    assert texts[2] == f"{own} Bo"  # the attribution and both levels of the quote left out
    assert texts[3] == f"{own} Cy"
    assert texts[4] == "URGENT: production is down"  # kept whole, without the marks of its quote
    # Kept: the sender's own sentence above a label of theirs, a forward's quote (its subject says so; the
    # Outlook line is above a forwarded mail too), and a quote kept whole reads as paragraphs, unmarked.
    agenda = "The outage moved to 3pm on Friday, all hands needed.\nAgenda:\n> item one\n> item two\n\nThanks"
    outlook_forward = _mail("Please handle this today.\n\n-----Original Message-----\nFrom: Ops\n\nThe database "
                            "is down.", subject="FW: db")  # fmt: skip
    apple_forward = _mail(None, subject="Fwd: outage")
    apple_forward.set_content('<p>Can you take this one?</p><blockquote type="cite">Begin forwarded message:<p>The '
                              "database is down.</p></blockquote>", subtype="html")  # fmt: skip
    paragraphs = _mail(None, subject="only")
    paragraphs.set_content('<blockquote type="cite"><p>para one</p><p>para two</p></blockquote>', subtype="html")
    path = _mbox(tmp_path / "k.mbox", _mail(agenda), outlook_forward, apple_forward, paragraphs)
    texts = [m.text for m in read_messages(path)]
    assert texts[0] == agenda
    assert texts[1].endswith("The database is down.") and texts[2].endswith("The database is down.")
    assert texts[3] == "para one\n\npara two"


def test_html_the_parser_gives_up_on_is_read_by_its_tags_and_a_cut_off_mail_is_said(tmp_path: Path) -> None:
    """Outlook's "<![ if mso]>" made Python's parser raise: one such mail had stopped a whole triage.
    A multipart whose end never came was read as far as it went without a word."""
    odd = _mail(None)
    odd.set_content("<html><![ if mso]><p>Hello <b>World</b> &amp; all</p><style>p{}</style></html>", subtype="html")
    whole = _mail("fine")
    cut = (b"From x Mon Jan 1 00:00:00 2024\nFrom: a@x.org\nSubject: cut\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/mixed; boundary="BB"\n\n--BB\nContent-Type: text/plain\n\nThe start of a mail '
           b"that\n")  # fmt: skip
    path = tmp_path / "m.mbox"
    path.write_bytes(_mbox(tmp_path / "ok.mbox", whole, odd).read_bytes() + cut)
    messages, report = read_messages_report(path)
    assert [m.text for m in messages][:2] == ["fine", "Hello World & all"]
    assert report["cut_off"] == 1 and report["first"]["cut_off"] == "message 3"


def test_a_format_flowed_mail_reads_as_its_paragraphs(tmp_path: Path) -> None:
    """Read line by line, a flowed mail's wrapped words had been split ("morn"/"ing") and its lines
    taken as sentences."""
    raw = (b"From: Ann <ann@x.org>\nSubject: rehearsal\nDate: Wed, 01 May 2024 09:30:00 +0200\nMIME-Version: 1.0\n"
           b"Content-Type: text/plain; charset=utf-8; format=flowed; delsp=yes\n\n"
           b"The choir meets on Saturday morn \r\ning in the hall.  \r\nBring the scores.\r\n"
           b"-- \r\nAnn\r\n")  # fmt: skip
    spaced = raw.replace(b"delsp=yes", b"delsp=no").replace(b"morn \r\ning", b"\r\nmorning")
    path = _mbox(tmp_path / "f.mbox", raw, spaced.replace(b"Subject: rehearsal", b"Subject: again"))
    texts = [m.text for m in read_messages(path)]
    said = "The choir meets on Saturday morning in the hall. Bring the scores."
    assert [" ".join(line.split()) for line in texts[0].splitlines()] == [said, "--", "Ann"]  # delsp: "morn"+"ing"
    assert " ".join(texts[1].splitlines()[0].split()) == said  # delsp=no: the space kept, between words


def test_an_html_charset_said_only_in_the_page_and_a_cancelled_invitation_are_read_as_meant(tmp_path: Path) -> None:
    """A KOI8-R page whose charset is in its <meta> alone had been garbled ("óÏ×ÅÝÁÎÉÅ"); a cancelled
    meeting had read as its invitation."""
    body = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=koi8-r"></head><body>'
    html = (body + "<p>Совещание перенесено на завтра.</p></body></html>").encode("koi8-r")
    page = (b"From: a@x.org\nSubject: meeting\nMIME-Version: 1.0\nContent-Type: text/html\n"
            b"Content-Transfer-Encoding: 8bit\n\n" + html)  # fmt: skip
    ics = ("BEGIN:VCALENDAR\r\nMETHOD:CANCEL\r\nBEGIN:VEVENT\r\nSUMMARY:Board prep\r\nDTSTART:20250303T100000Z\r\n"
           "END:VEVENT\r\nEND:VCALENDAR\r\n")  # fmt: skip
    cancel = (b"From: b@x.org\nSubject: cancelled\nMIME-Version: 1.0\nContent-Type: text/calendar; method=CANCEL\n\n"
              + ics.encode())  # fmt: skip
    texts = [m.text for m in read_messages(_mbox(tmp_path / "c.mbox", page, cancel))]
    assert texts[0] == "Совещание перенесено на завтра."
    assert texts[1].startswith("Cancelled: Board prep\nWhen: 2025-03-03 10:00 UTC")
