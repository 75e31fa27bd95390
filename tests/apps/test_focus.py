"""The focus assistant: components, the cost rule, feedback, the store, digest, CLI, HTTP, evaluation."""

from __future__ import annotations

import io
import json
import logging
import mailbox
import math
import re
import subprocess
import sys
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from attend.apps.focus.assistant import (
    CHANNELS,
    Costs,
    Decision,
    FeatureStats,
    FocusAssistant,
    Heads,
    Session,
    allow_match,
    channel_features,
    channel_name,
)
from attend.apps.focus.components import TextReader, cross_attention, merge_words
from attend.apps.focus.evaluation import evaluate_suite, load_suite, metrics
from attend.apps.focus.person import PersonModel, sender_key
from attend.apps.focus.router import focus_router
from attend.apps.focus.service import FocusService, triage
from attend.apps.focus.store import SessionError, open_focus_store
from attend.cli import main
from attend.data.messages import Message, read_messages
from attend.data.readers import DataError
from tests.conftest import shared_folder

TASK = "Grade the year 10 essays on Macbeth and enter the marks before Friday's moderation meeting"
RELEVANT = Message(id="r1", sender="Priya Shah <priya@school.org>", subject="10B marks",
                   text="Could you send me the marks for 10B's Macbeth essays? "
                   "The moderation sheet needs them.")  # fmt: skip
UNRELATED = Message(id="u1", sender="deliveries@parcel.example", subject="Delivered",
                    text="Your parcel has been delivered to the front door.")  # fmt: skip
EMERGENCY = Message(id="e1", sender="Dad", text="Mum fell in the garden and we're at A&E now, they think her hip is "
                    "broken. Can you come?")  # fmt: skip


@pytest.fixture(scope="module")
def assistant(tmp_path_factory: pytest.TempPathFactory) -> FocusAssistant:
    """The real assistant (package MiniLM, heads fitted from the bundled data into a cache of this
    run's, once for all its workers: the cache's lock holds the others until the first has saved them)."""
    return FocusAssistant(cache_dir=shared_folder(tmp_path_factory) / "focus-cache")


# --- components ------------------------------------------------------------------------------


def test_cross_attention_links_the_task_words_to_the_message(assistant: FocusAssistant) -> None:
    task, relevant, unrelated = assistant.reader.read([TASK, RELEVANT.text, UNRELATED.text])
    near, far = cross_attention(task, relevant), cross_attention(task, unrelated)
    assert near.sentence_similarity > far.sentence_similarity + 0.3
    assert near.attended_similarity > far.attended_similarity + 0.2
    assert torch.allclose(near.weights.sum(-1), torch.ones(near.weights.shape[0]))
    assert near.received.sum().item() == pytest.approx(1.0, abs=1e-5)
    words = [w.text for w in merge_words(relevant, near.received.tolist(), top=4)]
    assert {"Macbeth", "marks", "moderation"} & set(words)
    assert not {"the", "for", "you"} & {w.lower() for w in words}  # stop words are never keys


def test_merge_words_joins_pieces_and_renormalises() -> None:
    reader = TextReader()
    (reading,) = reader.read(["Unbelievably quick moderation"])
    weights = [1.0] * len(reading.pieces)
    merged = merge_words(reading, weights)
    assert sum(w.weight for w in merged) == pytest.approx(1.0)
    assert {w.text for w in merged} == {"Unbelievably", "quick", "moderation"}
    assert merged[0].text == "Unbelievably"  # several pieces: the most weight
    # A word said again is one highlight, its weights summed (a long mail had listed one word 7 times of 8)
    (reading,) = reader.read(["Reimbursement form: the reimbursement is late, reimbursement please"])
    merged = merge_words(reading, [1.0] * len(reading.pieces))
    texts = [w.text.casefold() for w in merged]
    assert len(texts) == len(set(texts)) and texts[0] == "reimbursement" and merged[0].text == "Reimbursement"
    assert sum(w.weight for w in merged) == pytest.approx(1.0)


def test_urgency_contributions_add_up_to_the_max_pooled_logit(assistant: FocusAssistant) -> None:
    (reading,) = assistant.reader.read([EMERGENCY.text])
    heads = assistant.heads
    dim = reading.states.shape[1]
    only_max = Heads(torch.cat([torch.zeros(dim), heads.urgency_weight[dim:]]), 0.0, heads.relevance_weight, 0.0,
                     heads.prior_mean, heads.prior_std)  # fmt: skip
    logit = math.log(only_max.urgency(reading) / (1 - only_max.urgency(reading)))
    assert only_max.urgency_contributions(reading).sum().item() == pytest.approx(logit, rel=1e-4, abs=1e-4)


def test_the_channel_is_read_against_the_average_message(assistant: FocusAssistant, tmp_path: Path) -> None:
    heads = assistant.heads
    assert channel_features(" Newsletters ").tolist() == [float(c == "newsletter") for c in CHANNELS]
    assert not channel_features("pager").any() and not channel_features("").any()
    assert channel_name(" Notifications") == "notification" and channel_name("pager") is None
    assert heads.channel_term("") == heads.channel_term("pager") == 0.0
    # The head reads the one-hot minus the channels' training shares, so the channels' terms, weighted
    # by those shares, average to nothing: no channel is read as the average channel.
    terms = torch.tensor([heads.channel_term(c) for c in CHANNELS])
    assert heads.channel_mean.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (heads.channel_mean * terms).sum().item() == pytest.approx(0.0, abs=1e-5)
    # The term is in the decision, and moves relevance only: the same words as a chat, a newsletter
    # and with no channel have the same urgency.
    text = "Could you send me the marks for 10B's Macbeth essays today?"
    chat, letter, plain = assistant.triage(Session(TASK), [Message(id="c", text=text, channel="chat"),
                                                           Message(id="n", text=text, channel="newsletter"),
                                                           Message(id="p", text=text)])  # fmt: skip
    assert chat.components["urgency"] == letter.components["urgency"] == plain.components["urgency"]
    for d, name in ((chat, "chat"), (letter, "newsletter"), (plain, "")):
        term = heads.channel_term(name)
        assert d.components["channel"] == round(term, 4)
        assert d.components["relevance_logit"] == pytest.approx(plain.components["relevance_logit"] + term, abs=1e-3)
        assert any("Coming as" in reason for reason in d.reasons) == (abs(term) >= 0.5)
    # (the learned weights: the project's data hold no newsletter that bears on the task)
    assert letter.components["relevance_to_task"] < plain.components["relevance_to_task"]
    # What the words alone give is the message's relevance with no channel (it had the channel in it,
    # so a pass the channel decided was credited to the words, and the note never appeared).
    words = f"{plain.components['relevance']:.2f}"
    assert abs(letter.components["relevance"] - plain.components["relevance"]) >= 0.01
    said = " ".join(letter.reasons)
    assert f"its words alone give {words}" in said or f"Its words alone bear on the task ({words})" in said, said
    # saved and loaded with the heads
    heads.save(tmp_path / "heads.safetensors")
    assert torch.equal(Heads.load(tmp_path / "heads.safetensors").channel_mean, heads.channel_mean)


def test_assistants_started_together_fit_the_heads_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The cache's lock: the second waits for the first's heads (each had read every example itself)."""
    import threading
    import time
    from types import SimpleNamespace

    fits: list[int] = []
    started = threading.Barrier(2)

    def fit(cls: type[Heads], reader: object) -> Heads:
        fits.append(1)
        time.sleep(0.5)  # long enough for the other to look for the cached heads meanwhile
        return Heads(torch.ones(4), 0.5, torch.ones(3), -0.5, torch.zeros(4), torch.ones(4))

    def start() -> Heads:
        started.wait()
        return FocusAssistant(reader, cache_dir=tmp_path).heads  # type: ignore[arg-type]

    monkeypatch.setattr(Heads, "fit", classmethod(fit))
    reader = SimpleNamespace(encoder=SimpleNamespace(weights_sha256="0" * 64))
    results: list[Heads] = []
    threads = [threading.Thread(target=lambda: results.append(start())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(fits) == 1 and len(results) == 2
    assert all(torch.equal(r.urgency_weight, torch.ones(4)) and r.relevance_bias == -0.5 for r in results)
    assert len(list((tmp_path / "focus").glob("heads-*.safetensors"))) == 1
    assert f"focus: another process is fitting the heads into {tmp_path / 'focus'}; waiting for it" in \
        capsys.readouterr().err  # said, rather than seem hung


def test_the_cost_flags_default_to_the_costs_defaults(capsys: pytest.CaptureFixture) -> None:
    from argparse import Namespace

    from attend.apps.focus.cli import _costs

    assert _costs(Namespace(urgent_cost=None, relevant_cost=None, interrupt_cost=None)) == Costs()
    assert _costs(Namespace(urgent_cost=None, relevant_cost=0.5, interrupt_cost=None)) == Costs(relevant=0.5)
    # and the help says what they are (the CLI writes them out: it does not import torch to read them)
    with pytest.raises(SystemExit):
        main(["focus", "triage", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    for flag, value in (("urgent", Costs().urgent), ("relevant", Costs().relevant), ("interrupt", Costs().interrupt)):
        assert re.search(rf"--{flag}-cost \S+ [^(]*\(default {value:g}\)", usage), flag


# --- the rule --------------------------------------------------------------------------------


def test_relevance_lifted_by_the_channel_alone_names_the_channel(assistant: FocusAssistant,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Stateless, nothing taught: the reason had said "by what you have taught the assistant"."""
    monkeypatch.setattr(assistant.heads, "channel_term", lambda channel: 6.0)
    (held_words,) = assistant.triage(Session(TASK), [replace(UNRELATED, channel="chat")])
    reason = next(r for r in held_words.reasons if r.startswith("Bears on the task"))
    assert re.fullmatch(r"Bears on the task \(0\.\d\d\) through its channel \('chat', log-odds \+6\.0\); its words "
                        r"alone give 0\.\d\d\.", reason), reason  # fmt: skip
    assert "taught" not in reason


def test_a_pass_on_its_words_says_what_its_channel_made_of_them(assistant: FocusAssistant,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Words and channel both passing it, the reason gave the relevance alone ("Bears on the task (0.79)"
    of words giving 0.91), where every other branch says what the words alone give."""
    monkeypatch.setattr(assistant.heads, "channel_term", lambda channel: -1.0)
    (passed,) = assistant.triage(Session(TASK), [replace(RELEVANT, channel="notification")])
    c = passed.components
    assert passed.decision == "pass" and c["relevance"] > 1 / 3, passed.reasons
    reason = next(r for r in passed.reasons if r.startswith("Bears on the task"))
    assert re.match(r"Bears on the task \(0\.\d\d; its words alone give 0\.\d\d\): ", reason), reason


def test_a_message_whose_words_bear_on_the_task_held_by_what_was_taught_says_so(
        assistant: FocusAssistant, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Held by feedback, its first reason said "Little bearing on the task on its own (0.27; its words
    alone give 0.70)": what decided was what the person taught."""
    monkeypatch.setattr(assistant.heads, "channel_term", lambda channel: -6.0)
    (held,) = assistant.triage(Session(TASK), [replace(RELEVANT, channel="newsletter")])
    assert held.decision == "hold" and held.components["urgency"] < 0.2
    assert re.fullmatch(r"Its words alone bear on the task \(0\.\d\d\), but its channel \('newsletter', log-odds "
                        r"-6\.0\) brings its relevance to 0\.\d\d, too little to interrupt you for; the words that "
                        r"linked it: '.+\.", held.reasons[0]), held.reasons  # fmt: skip


def test_a_pass_whose_relevance_was_taught_down_does_not_say_it_is_held(
        assistant: FocusAssistant, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Passed on urgency, its relevance reason ended "too little to interrupt you for"."""
    monkeypatch.setattr(assistant.heads, "channel_term", lambda channel: -6.0)
    monkeypatch.setattr(assistant.heads, "urgency", lambda reading: 0.6)
    (passed,) = assistant.triage(Session(TASK), [replace(RELEVANT, channel="newsletter")])
    assert passed.decision == "pass" and passed.reasons[0].startswith("Urgent: ")
    taught = next(r for r in passed.reasons if r.startswith("Its words alone bear on the task"))
    assert "too little on its own" in taught and "interrupt" not in taught, passed.reasons


def test_the_cost_rule_and_its_reasons(assistant: FocusAssistant) -> None:
    session = Session(TASK)
    relevant, unrelated, emergency = assistant.triage(session, [RELEVANT, UNRELATED, EMERGENCY])
    assert (relevant.decision, unrelated.decision, emergency.decision) == ("pass", "hold", "pass")
    for d in (relevant, unrelated, emergency):
        c = d.components
        u, r = c["urgency"], c["relevance"]
        costs = assistant.costs
        assert c["cost_of_holding"] == pytest.approx(u * costs.urgent + (1 - u) * r * costs.relevant, abs=1e-3)
        assert c["cost_of_interrupting"] == pytest.approx((1 - u) * (1 - r), abs=1e-3)
        assert (d.decision == "pass") == (c["cost_of_holding"] > c["cost_of_interrupting"])
        assert d.score == pytest.approx(1 - (1 - u) * (1 - r), abs=1e-3)
        assert d.reasons and d.highlights and sum(h.weight for h in d.highlights) <= 1.0 + 1e-6
    assert emergency.components["urgency"] > 0.5 and any("Urgent" in r for r in emergency.reasons)
    assert relevant.components["relevance"] > 0.5 and any("Bears on the task" in r for r in relevant.reasons)
    assert any(h.text in ("Macbeth", "marks", "moderation", "essays") for h in relevant.highlights[:3])
    # raising the cost of an interruption above the cost of holding holds what passed on relevance
    u, r = relevant.components["urgency"], relevant.components["relevance"]
    balance = relevant.components["cost_of_holding"] / ((1 - u) * (1 - r))  # the interrupt cost that ties
    strict = FocusAssistant(assistant.reader, assistant.heads, Costs(interrupt=2 * balance))
    assert strict.triage(session, [RELEVANT])[0].decision == "hold"
    lenient = FocusAssistant(assistant.reader, assistant.heads, Costs(interrupt=balance / 2))
    assert lenient.triage(session, [RELEVANT])[0].decision == "pass"
    with pytest.raises(ValueError, match="interrupt cost=0"):
        Costs(interrupt=0)
    # The reason counts interruptions at their own cost (it said 10 where holding costs 10 units of 2).
    dear = FocusAssistant(assistant.reader, assistant.heads, Costs(urgent=10, interrupt=2)).triage(session, [EMERGENCY])
    assert any("holding an urgent message costs 5 interruptions." in reason for reason in dear[0].reasons), dear


def test_an_urgent_message_leads_with_urgency_where_only_its_channel_made_it_relevant(
    assistant: FocusAssistant,
) -> None:
    """A duty call at urgency 0.91, sent as chat, had led with "Bears on the task through its channel
    ('chat', log-odds +1.9); its words alone give 0.25": the channel was credited with what urgency did."""
    task = ("Writing the Section 7 welfare report on the Hartley children (Jordan, 9, and Ellie, 6) for Friday's "
            "hearing at Leeds Family Court - finishing the analysis and recommendation, and getting the school's "
            "and school nurse's views in.")  # fmt: skip
    call = Message(id="d1", sender="Sam Okoro", channel="chat", text=(
        "Are you free? Duty call on the Wilson family: mum says there's no food in the house and the little ones "
        "haven't eaten since yesterday. I'm stuck in court all afternoon - can you do the visit?"))  # fmt: skip
    (decided,) = assistant.triage(Session(task), [call])
    c = decided.components
    costs = assistant.costs
    words = 1 / (1 + math.exp(c["channel"] - c["relevance_logit"]))  # its words alone: the channel taken off
    assert decided.decision == "pass" and c["urgency"] * costs.urgent > (1 - c["urgency"]) * costs.interrupt
    assert c["channel"] > 0 and words * costs.relevant <= (1 - words) * costs.interrupt  # the channel lifted it
    assert decided.reasons[0].startswith("Urgent: the urgency classifier gives"), decided.reasons
    assert decided.highlights and decided.highlights[0].text in decided.reasons[0]  # urgency's words first


def test_a_pass_that_neither_component_decides_alone_leads_with_what_did(assistant: FocusAssistant) -> None:
    """Its first reason read "Little bearing on the task on its own" above a PASS; and stop words, which
    weigh nothing, were named among "the closest words" and listed as highlights of weight 0."""
    session = Session(TASK)
    (held,) = assistant.triage(session, [UNRELATED])
    u, r = held.components["urgency"], held.components["relevance"]
    # Each cost just under where its component would pass the message alone: together they pass it.
    costs = Costs(urgent=0.9 * (1 - u) / u, relevant=0.9 * (1 - r) / r, interrupt=1.0)
    (passed,) = FocusAssistant(assistant.reader, assistant.heads, costs).triage(session, [UNRELATED])
    assert passed.decision == "pass"
    assert passed.reasons[0].startswith("Passes on urgency and relevance together: neither would pass it alone")
    assert not any(reason.startswith("Holding it would cost") for reason in passed.reasons)
    for decision in (held, passed):
        assert all(h.weight > 0 for h in decision.highlights)
        assert not any(f"'{stop}'" in reason for reason in decision.reasons for stop in ("the", "and", "is", "a"))


def test_a_message_the_encoder_cannot_read_passes_unjudged(assistant: FocusAssistant) -> None:
    chinese = Message(id="zh", text="请尽快回复：服务器宕机了，客户都登录不了！")
    emoji = Message(id="em", text="🎉🎉")
    unreadable, reaction = assistant.triage(Session(TASK), [chinese, emoji])
    assert unreadable.decision == "pass" and unreadable.reasons[0].startswith("Unreadable")
    assert unreadable.components["unknown_pieces"] >= 5 and unreadable.highlights == []
    assert reaction.decision == "hold"  # a short reaction is not "unreadable"
    # Scripts MiniLM spells out letter by letter (it knows their letters, no words) or reads as a
    # few [UNK] words (Thai has no spaces) are unreadable too; a name with one foreign letter is not.
    others = {"ar": "الخادم معطل، اتصل بي الآن من فضلك", "th": "เซิร์ฟเวอร์ล่ม กรุณาโทรหาฉันด่วน",
              "hi": "सर्वर बंद है, कृपया मुझे तुरंत कॉल करें", "ko": "서버가 다운되었습니다. 지금 바로 전화 주세요",
              "ru": "Сервер упал, позвони мне срочно"}  # fmt: skip
    decisions = assistant.triage(Session(TASK), [Message(id=k, text=v) for k, v in others.items()])
    assert all(d.reasons[0].startswith("Unreadable") and d.decision == "pass" for d in decisions), decisions
    name = assistant.triage(Session(TASK), [Message(id="n", text="Søren says the Århus venue is booked.")])[0]
    assert not name.reasons[0].startswith("Unreadable") and 0 < name.components["unreadable_letters"] <= 2
    # An over-long token ([UNK] to MiniLM) is no language: a newsletter's tracking link is not unreadable.
    link = Message(id="l", text=f"New issue out: https://news.example.com/{'q' * 300} - this week's essays.")
    assert assistant.triage(Session(TASK), [link])[0].components["unreadable_letters"] == 0


def test_allowlist_senders_and_keywords() -> None:
    boss = Message(id="b", sender="Ana Ruiz <ANA@corp.example>", text="lunch?")
    assert allow_match(("ana@corp.example",), boss) == "ana@corp.example"
    assert allow_match(("Ana Ruiz",), boss) == "Ana Ruiz"
    assert allow_match(("@corp.example",), boss) == "@corp.example"  # a whole domain
    banana = Message(id="x", sender="Banana <banana@corp.example>", text="hi")
    assert allow_match(("ana@corp.example",), banana) is None  # an address is matched whole
    assert allow_match(("ana@corp.example",), Message(id="y", sender="ana@corp.example.evil.com", text="hi")) is None
    assert allow_match(("Tom",), Message(id="t", sender="Tomasz Nowak", text="hi")) is None
    assert allow_match(("Tom",), Message(id="t", sender="Tom Reyes", text="hi")) == "Tom"
    assert allow_match(("boss",), Message(id="n", sender="noreply@bossard.com", text="hi")) is None
    assert allow_match(("school",), Message(id="s", text="The School office called")) == "school"
    assert allow_match(("school",), Message(id="s", text="preschooler toys")) is None  # whole words only
    assert allow_match(("bob@corp.example",), boss) is None
    # A bare domain is any address at it (it matched nothing: the address's '@' hid it).
    assert allow_match(("corp.example",), boss) == "corp.example"
    assert allow_match(("corp.example",), Message(id="m", sender="hr@mail.corp.example", text="hi")) == "corp.example"
    assert allow_match(("corp.example",), Message(id="e", sender="x@evilcorp.example", text="hi")) is None
    sub = Message(id="s", sender="tom@mail.corp.example", text="hi")  # the two spellings agree on subdomains
    assert allow_match(("@corp.example",), sub) == "@corp.example" and allow_match(("corp.example",), sub)
    assert allow_match(("@corp.example",), Message(id="e", sender="x@evilcorp.example", text="hi")) is None
    # The address mail goes to is the bracketed one: an allowlisted address worn as a display name passed.
    worn = Message(id="w", sender="boss@corp.example <evil@phish.example>", text="Wire the money today.")
    assert allow_match(("boss@corp.example", "@corp.example"), worn) is None
    # A bare domain is also a word, as every entry but an address is: '@' matches addresses only.
    mention = Message(id="t", sender="promo@spam.example", text="The node.js build on corp.example broke")
    assert allow_match(("@corp.example",), mention) is None and allow_match(("corp.example",), mention)
    assert allow_match(("node.js",), mention) == "node.js" and allow_match(("v2.0",), mention) is None
    local = Message(id="l", sender="X <corp.example.billing@phish.example>", text="pay")  # no word of it
    assert allow_match(("corp.example",), local) is None
    # A word of the address before its @, or all of it (an entry matched no part of an address: marta's own
    # mail was held while a display name "Marta" passed).
    for sender in ("marta@corp.example", "<marta.lopez@corp.example>", "Ops <ops-alerts@corp.example>"):
        assert allow_match(("Marta", "ops-alerts"), Message(id="m", sender=sender, text="hi")), sender
    assert allow_match(("marta",), Message(id="m", sender="x@marta.example", text="hi")) is None  # not the domain
    assert allow_match(("art",), Message(id="m", sender="marta@corp.example", text="hi")) is None  # whole words
    with pytest.raises(ValueError, match="task is empty"):
        Session("   ")
    for entry in ("@", "ana@", "a@b@c"):  # accepted before, and matched nothing
        with pytest.raises(ValueError, match=f"allow entry '{entry}' is no address"):
            Session("write", (entry,))
    # A contact as a mail client copies it is its address (taken whole, it had matched no one).
    contacts = Session("write", ("Mom <Mom@Family.example>", "<dad@family.example>", "Ana Ruiz", "a<b"))
    assert contacts.allow == ("mom@family.example", "dad@family.example", "Ana Ruiz", "a<b")
    assert allow_match(contacts.allow, Message(id="m", sender="mom@family.example", text="call me")) == \
        "mom@family.example"
    # --allow splits at commas outside double quotes: a copied contact "Last, First" <address> had been
    # two entries, "Ruiz and Ana" <ana@x.org>, neither of which matched Ana's mail.
    from attend.apps.focus.cli import _allow

    given = _allow('"Ruiz, Ana" <Ana@X.org>, Mom,"on call, now"')
    assert given == ['"Ruiz, Ana" <Ana@X.org>', "Mom", "on call, now"]
    assert Session("write", tuple(given)).allow == ("ana@x.org", "Mom", "on call, now")
    assert allow_match(Session("write", tuple(given)).allow, Message(id="m", sender="ana@x.org", text="hi"))
    assert _allow('alice, 12" pizza, bob') == ["alice", '12" pizza', "bob"]  # an unpaired quote: every comma


def test_an_allowlisted_sender_passes_whatever_the_components(assistant: FocusAssistant) -> None:
    decision = assistant.triage(Session(TASK, ("deliveries@parcel.example",)), [UNRELATED])[0]
    assert decision.decision == "pass" and decision.components["allowlist"] == "deliveries@parcel.example"
    assert "allowlist" in decision.reasons[0]


# --- the person -------------------------------------------------------------------------------


def test_person_model_sender_counts_and_online_preferences() -> None:
    person = PersonModel(dim=3)
    assert person.sender_shift("x@y.z") == (0.0, 0, 0)
    embedding = [1.0, 0.0, 0.0]
    before = person.preference_shift(embedding)
    person.update("Ana <ANA@x.org>", embedding, relevance_logit=-3.0, passed=True)
    assert person.preference_shift(embedding) > before + 1.0  # moved towards pass
    assert person.preference_shift([0.0, 1.0, 0.0]) < person.preference_shift(embedding)  # an unlike message less
    person.update("ana@x.org", embedding, relevance_logit=-3.0, passed=True)
    assert person.sender_shift("ana@x.org") == (pytest.approx(math.log(3)), 2, 0)
    assert sender_key("Ana <ANA@x.org>") == "ana@x.org"
    # Two people with one comment are two senders (the comment alone made them one).
    assert sender_key("Jess (coworker)") == "jess (coworker)" != sender_key("Tom (coworker)")
    assert sender_key("Mark  Lee") == "mark lee" and sender_key("ana@x.org (Ana)") == "ana@x.org"
    assert sender_key("boss@corp.example <Evil@Phish.example>") == "evil@phish.example"  # not the display name
    assert sender_key("boss@corp.example <evil@phish.example> (via list)") == "evil@phish.example"  # nor after it
    assert sender_key('"<boss@corp.example>" <evil@phish.example>') == "evil@phish.example"  # nor quoted in it
    assert sender_key("Evil <evil@phish.example> (note (nested) <boss@corp.example>)") == "evil@phish.example"
    again = PersonModel.from_dict(json.loads(json.dumps(person.to_dict())))
    assert again.sender_shift("ana@x.org") == person.sender_shift("ana@x.org")
    assert again.preference_shift(embedding) == pytest.approx(person.preference_shift(embedding), abs=1e-5)


def test_a_changed_answer_takes_back_what_the_earlier_one_taught() -> None:
    """Only the sender's count had been taken back: pass then hold taught pass (+1.9 log-odds to the next
    mail like it, against -0.01 for hold alone), and each change counted as one more update."""
    embedding = [0.6, 0.8, 0.0]
    held = PersonModel(dim=3)
    held.update("deals@shoes.example", embedding, relevance_logit=-2.0, passed=False, message_id="n1")
    changed = PersonModel(dim=3)
    for answer in (True, False, True, False):  # pass, hold, pass, hold: the last answer is hold
        if "n1" in changed.steps:
            changed.retract("n1", "deals@shoes.example", embedding, passed=not answer)
        changed.update("deals@shoes.example", embedding, relevance_logit=-2.0, passed=answer, message_id="n1")
    like = [0.5, 0.8, 0.33]
    assert changed.preference_shift(like) < 0.1
    # Exactly hold alone: the weight decay of each taken-back answer had stayed (a norm of 0.053 away,
    # more than the answer's own 0.032), and the bias step was taken as a tenth of the weight step.
    assert changed.weights == pytest.approx(held.weights, abs=1e-12) and changed.bias == pytest.approx(held.bias)
    assert changed.updates == held.updates == 1 and changed.senders == held.senders == {"deals@shoes.example": [0, 1]}
    # Flipping one answer back and forth wears down nothing else learnt (another sender's preference
    # had fallen from +5.2 to +3.3 log-odds after 20 flips).
    other = [0.0, 0.0, 1.0]
    person = PersonModel(dim=3)
    for k in range(3):
        person.update("ana@x.org", other, relevance_logit=-3.0, passed=True, message_id=f"a{k}")
    before = person.preference_shift(other)
    for answer in [True, False] * 10:
        if "n1" in person.steps:
            person.retract("n1", "deals@shoes.example", embedding, passed=not answer)
        person.update("deals@shoes.example", embedding, relevance_logit=-2.0, passed=answer, message_id="n1")
    person.retract("n1", "deals@shoes.example", embedding, passed=False)
    assert person.preference_shift(other) == pytest.approx(before, abs=1e-9)
    # An earlier answer changed after later ones: its step as they decayed it is taken back.
    person.retract("a0", "ana@x.org", other, passed=True)
    assert 0 < person.preference_shift(other) < before
    # Kept in the stored form; a person stored before steps were kept loads, and retracts the count alone.
    again = PersonModel.from_dict(json.loads(json.dumps(changed.to_dict())))
    assert again.steps == changed.steps and again.decayed == changed.decayed
    # A step stored as one number (before 2026-12-08) is taken back as it was then: weights and a tenth on the bias.
    legacy = {**held.to_dict(), "steps": {"n1": 0.5}}
    legacy.pop("decayed")
    oldest = PersonModel.from_dict(legacy)
    oldest.retract("n1", "deals@shoes.example", embedding, passed=False)
    assert oldest.bias == pytest.approx(held.bias - 0.05) and oldest.weights[0] == pytest.approx(held.weights[0] - 0.3)
    old = {k: v for k, v in held.to_dict().items() if k != "steps"}
    older = PersonModel.from_dict(old)
    older.retract("n1", "deals@shoes.example", embedding, passed=False)
    assert older.senders == {"deals@shoes.example": [0, 0]} and older.updates == 1


def test_feedback_learns_a_preference_but_never_holds_an_emergency(assistant: FocusAssistant) -> None:
    session = Session(TASK)
    club = [Message(id=f"c{i}", sender="coach@runningclub.example", subject="Club news",
                    text=f"Photos from Sunday's club {race} race are now up on the website.")
            for i, race in enumerate(("10k", "5k", "half marathon", "cross-country", "relay"))]  # fmt: skip
    person = PersonModel(dim=assistant.reader.dim)
    assert assistant.triage(session, club[:1], person=person)[0].decision == "hold"  # nothing to do with grading
    for message in club[:3]:  # the person says: the club's runs always get through
        d = assistant.triage(session, [message], person=person)[0]
        person.update(message.sender, d.embedding.tolist(), d.relevance_logit, passed=True)
    later = assistant.triage(session, club[3:], person=person)
    assert [d.decision for d in later] == ["pass", "pass"]
    assert all(d.components["preference"] > 0 and d.components["sender"] > 0 for d in later)
    assert any("You passed 3" in r for r in later[0].reasons)
    for _ in range(10):  # however often the person holds the sender's messages
        d = assistant.triage(session, [EMERGENCY], person=person)[0]
        person.update(EMERGENCY.sender, d.embedding.tolist(), d.relevance_logit, passed=False)
    assert assistant.triage(session, [EMERGENCY], person=person)[0].decision == "pass"


def test_a_message_passed_by_what_was_taught_says_so_first(assistant: FocusAssistant) -> None:
    """Where urgency and relevance passed a message together only because feedback raised its relevance
    (its words and urgency would hold it), the first reason had been "urgency and relevance together"."""
    session = Session(TASK)
    plain = assistant.triage(session, [UNRELATED])[0]
    u, c = plain.components["urgency"], assistant.costs
    # the relevance from which urgency and relevance together pass it, and 1/3, from which relevance alone does
    lowest = (c.interrupt * (1 - u) - c.urgent * u) / ((1 - u) * (c.relevant + c.interrupt))
    target = (lowest + c.interrupt / (c.relevant + c.interrupt)) / 2
    assert plain.decision == "hold" and 0 < lowest < target
    person = PersonModel(dim=assistant.reader.dim, updates=1)
    person.bias = math.log(target / (1 - target)) - plain.relevance_logit  # what feedback taught, in the bias
    taught = assistant.triage(session, [UNRELATED], person=person)[0]
    assert taught.decision == "pass" and taught.components["relevance"] == pytest.approx(target, abs=1e-3)
    assert taught.reasons[0].startswith("Passes on what was taught: its words and urgency alone would hold it "
                                        "(relevance "), taught.reasons  # fmt: skip
    assert "your feedback (what your answers taught, log-odds +" in taught.reasons[0]


def test_relevance_is_read_against_the_session_traffic(assistant: FocusAssistant) -> None:
    stats = FeatureStats()
    rows = torch.tensor([[0.1, 0.2, 0.3, 0.0], [0.3, 0.4, 0.5, 0.5], [0.2, 0.3, 0.1, 0.25]])
    stats.update(rows)
    assert stats.count == 3 and stats.mean == pytest.approx(rows.mean(0).tolist())
    assert torch.tensor(stats.m2) / 2 == pytest.approx(rows.var(0), abs=1e-6)  # Welford = the sample variance
    prior_mean, prior_std = torch.zeros(4), torch.ones(4)
    alone = FeatureStats().standardise(rows[0], prior_mean, prior_std)  # no traffic: the prior's z-score
    assert alone == pytest.approx(rows[0])
    again = FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again.standardise(rows[1], prior_mean, prior_std) == pytest.approx(stats.standardise(rows[1], prior_mean,
                                                                                                prior_std))  # fmt: skip
    # the same message stands out less in a session whose traffic is all about the task
    on_topic = [Message(id=f"o{i}", text=f"Macbeth essay marks for 10{c}: moderation notes attached.")
                for i, c in enumerate("ABCDEF")]  # fmt: skip
    busy = FeatureStats()
    assistant.triage(Session(TASK), on_topic, pool=busy)
    quiet = FeatureStats()
    assistant.triage(Session(TASK), [UNRELATED, EMERGENCY], pool=quiet)
    in_busy = assistant.triage(Session(TASK), [RELEVANT], pool=busy)[0].components["attended_similarity_z"]
    in_quiet = assistant.triage(Session(TASK), [RELEVANT], pool=quiet)[0].components["attended_similarity_z"]
    assert in_busy < in_quiet and busy.count == 7


# --- store, service, CLI, HTTP ----------------------------------------------------------------


def test_two_starts_at_once_leave_one_session_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two services on one database (two serve workers, or the CLI beside serve) starting together:
    the check that none is running and the insert are one step under the database's update lock."""
    import threading
    import time as clock

    services = [FocusService(tmp_path / "race.db"), FocusService(tmp_path / "race.db")]
    real = services[0].store.active_session.__func__

    def slow_check(self: Any, **kwargs: Any) -> Any:
        found = real(self, **kwargs)
        clock.sleep(0.3)  # widen the window between "none is running" and the insert
        return found

    monkeypatch.setattr(type(services[0].store), "active_session", slow_check)
    outcomes: list[str] = []

    def start(service: FocusService, task: str) -> None:
        try:
            service.start(task)
            outcomes.append("started")
        except SessionError:
            outcomes.append("refused")

    threads = [threading.Thread(target=start, args=(s, f"task {i}")) for i, s in enumerate(services)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "started"]
    running = [s for s in services[0].store.sessions() if s["stopped_at"] is None]
    assert len(running) == 1


def test_store_sessions_end_times_and_transactions(tmp_path: Path) -> None:
    store = open_focus_store(tmp_path / "f.db")
    session = store.start_session("write the report", ["boss@x"], "2026-01-01T10:30:00+00:00",
                                  at="2026-01-01T09:00:00+00:00")  # fmt: skip
    with pytest.raises(SessionError, match="still running"):
        store.start_session("another", at="2026-01-01T09:10:00+00:00")
    assert store.active_session(at="2026-01-01T10:00:00+00:00")["id"] == session["id"]
    assert store.active_session(at="2026-01-01T11:00:00+00:00") is None  # past its end: stopped at the end
    assert store.session(session["id"])["stopped_at"] == "2026-01-01T10:30:00+00:00"
    assert store.stats(session["id"])["minutes_in_focus"] == 90.0
    with pytest.raises(SessionError, match="no focus session is running"):
        store.stop_session()
    with pytest.raises(ValueError, match="not after the start"):
        store.start_session("x", ends_at="2026-01-01T08:00:00+00:00", at="2026-01-01T12:00:00+00:00")
    d = Decision(id="m1", decision="hold", score=0.1, components={"relevance_logit": -2.0}, reasons=["r"],
                 highlights=[], embedding=torch.zeros(3))  # fmt: skip
    s2 = store.start_session("y", at="2026-01-01T12:00:00+00:00")
    msg = Message(id="m1", text="t")
    assert store.add_decisions(s2["id"], [msg, msg], [d, d]) == 1
    assert store.add_decisions(s2["id"], [msg], [d]) == 0  # already stored: skipped
    # One message a few seconds in is no rate (it was "3600 held per focus hour"); 30 minutes are.
    assert store.stats(s2["id"], at="2026-01-01T12:00:01+00:00")["held_per_focus_hour"] is None
    assert store.stats(s2["id"], at="2026-01-01T12:30:00+00:00")["held_per_focus_hour"] == 2.0
    store.stop_session(at="2026-01-01T12:30:00+00:00")
    s3 = store.start_session("z", at="2026-01-01T13:00:00+00:00")
    assert store.add_decisions(s3["id"], [msg], [d]) == 1  # ids restart with each export: a new session keeps it
    assert store.message("m1")["session_id"] == s3["id"]  # feedback goes to the latest one
    # a session that ended at its end time can still be forgotten
    store.stop_session(at="2026-01-01T13:10:00+00:00")
    forgotten = store.stop_session(forget=True)
    assert forgotten["id"] == s3["id"] and store.message("m1")["text"] == ""
    with pytest.raises(SessionError, match="no message 'nope'"):
        store.record_feedback("nope", "pass", PersonModel(dim=3))
    assert store.person(3).updates == 0  # the failed feedback wrote nothing
    store.close()
    (tmp_path / "text.txt").write_text("not a database")
    with pytest.raises(ValueError, match="not a focus database"):
        open_focus_store(tmp_path / "text.txt")
    with pytest.raises(ValueError, match="no focus database there"):
        FocusService(tmp_path / "missing.db", create=False)
    # Another program's SQLite database is not written to; nor is one with a focus table of other columns.
    import sqlite3

    for name, table in (("other.db", "contacts(name)"), ("clash.db", "focus_sessions(x)")):
        with sqlite3.connect(tmp_path / name) as conn:
            conn.execute(f"create table {table}")
        with pytest.raises(ValueError, match=r"holds tables attend did not write|was not written by attend"):
            open_focus_store(tmp_path / name)
        with sqlite3.connect(tmp_path / name) as conn:
            assert len(conn.execute("select name from sqlite_master").fetchall()) == 1


def _correct_many(db: str, ids: list[str], start: Any) -> None:
    """In a child process: one correction per id, each through the service (its own engine)."""
    service = FocusService(db, create=False)
    start.wait()  # both processes correct at the same moment
    for message_id in ids:
        service.feedback(message_id, "pass")
    service.close()


def test_two_processes_correcting_at_once_lose_no_update(tmp_path: Path) -> None:
    import multiprocessing

    db = str(tmp_path / "c.db")
    store = open_focus_store(db)
    session = store.start_session("write the report")
    ids = [f"m{i}" for i in range(80)]
    decisions = [Decision(id=i, decision="hold", score=0.1, components={"relevance_logit": -2.0}, reasons=[],
                          highlights=[], embedding=torch.full((8,), 0.3)) for i in ids]  # fmt: skip
    store.add_decisions(session["id"], [Message(id=i, text="t", sender=f"s{i}@x.org") for i in ids], decisions)
    store.close()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2, timeout=240)  # a spawned process imports torch again: slow on a loaded machine
    workers = [context.Process(target=_correct_many, args=(db, ids[k::2], start)) for k in (0, 1)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
        assert [worker.exitcode for worker in workers] == [0, 0]
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    person = open_focus_store(db).person(8)
    assert person.updates == 80 and len(person.senders) == 80  # every correction of both processes kept


def _write_jsonl(path: Path, messages: list[Message]) -> Path:
    path.write_text("".join(json.dumps({"id": m.id, "text": m.text, "sender": m.sender, "subject": m.subject}) + "\n"
                            for m in messages))  # fmt: skip
    return path


def test_cli_triage_json_in_input_order(assistant: FocusAssistant, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr("attend.apps.focus.assistant.FocusAssistant._cached_heads", lambda self, _: assistant.heads)
    data = _write_jsonl(tmp_path / "m.jsonl", [UNRELATED, RELEVANT, EMERGENCY])
    assert main(["focus", "triage", "--task", TASK, "--messages", str(data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["id"] for o in out] == ["u1", "r1", "e1"]
    assert [o["decision"] for o in out] == ["hold", "pass", "pass"]
    assert set(out[0]) == {"id", "decision", "score", "components", "reasons", "highlights", "truncated"}
    assert out[0]["truncated"] is False  # always there (it appeared only when true)
    assert all({"text", "weight"} <= set(h) for o in out for h in o["highlights"])
    # A task typed in bytes that are not UTF-8 (a traceback from the tokenizer, exit 1).
    assert main(["focus", "triage", "--task", "Plan \udcff offsite", "--messages", str(data)]) == 2
    assert "task contains an unpaired surrogate" in capsys.readouterr().err
    # An --allow of no entry is said (it had been an empty allowlist, without a word).
    for empty in (",", " ", ", ,"):
        assert main(["focus", "triage", "--task", TASK, "--messages", str(data), "--allow", empty]) == 2
        assert capsys.readouterr().err == f"error: --allow {empty!r}: no entry in it; give people or keywords " \
                                          "separated by commas, or leave --allow out\n"
    # A file that is not all UTF-8 is triaged, and the replaced bytes are said (they were silent).
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"id,text\n1,Br\xfccke Umsatz\n")
    assert main(["focus", "triage", "--task", TASK, "--messages", str(latin)]) == 0
    assert f"1 line(s) of {latin} held bytes that are not UTF-8" in capsys.readouterr().err
    misspelt = tmp_path / "misspelt.jsonl"
    misspelt.write_text('{"id": "x1", "text": "hello", "chanel": "sms"}\n', encoding="utf-8")
    assert main(["focus", "triage", "--task", TASK, "--messages", str(misspelt)]) == 0
    assert "note: field(s) not read: 'chanel' (first: line 1); a message's fields are id, text, sender, subject, " \
        "time, channel" in capsys.readouterr().err  # fmt: skip
    # an mbox, with a message that has no id (derived, stable) and an HTML body
    box = mailbox.mbox(tmp_path / "in.mbox")
    mail = EmailMessage()
    mail["From"], mail["Subject"] = "Priya Shah <priya@school.org>", "10B marks"
    mail.set_content("<p>Could you send me the <b>marks</b> for 10B's Macbeth essays?</p>", subtype="html")
    box.add(mail)
    box.flush()
    assert main(["focus", "triage", "--task", TASK, "--messages", str(tmp_path / "in.mbox"), "--json"]) == 0
    (mailed,) = json.loads(capsys.readouterr().out)
    assert mailed["id"].startswith("m-") and mailed["decision"] == "pass"
    # A mailbox of attachments only says what it skipped before it says there is nothing to triage.
    box = mailbox.mbox(tmp_path / "files.mbox")
    box.add(b"From: a@x.org\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=a.pdf\n\nJVBE\n")
    box.flush()
    assert main(["focus", "triage", "--task", TASK, "--messages", str(tmp_path / "files.mbox")]) == 2
    err = capsys.readouterr().err
    assert "note: 1 empty mail(s) skipped (first: message 1)" in err and "no messages in it" in err
    assert main(["focus", "triage", "--task", " ", "--messages", str(data)]) == 2
    assert "task is empty" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n')
    assert main(["focus", "triage", "--task", TASK, "--messages", str(tmp_path / "bad.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "text" in err and "Traceback" not in err
    # A JSONL file read as CSV: its first line (a message) is not repeated in the error.
    assert main(["focus", "triage", "--task", TASK, "--messages", str(data), "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert "--format jsonl" in err and UNRELATED.text[:20] not in err
    # A task with no words to read is said to be one; an id with a tab or line break stays on its line;
    # a 300-letter "word" is shown cut.
    odd = _write_jsonl(tmp_path / "odd.jsonl", [Message(id="a\tb\nc", text=f"see {'x' * 300} about the marks")])
    assert main(["focus", "triage", "--task", "📊", "--messages", str(odd)]) == 0
    captured = capsys.readouterr()
    assert "the task has no words to read" in captured.err and len(captured.out.splitlines()) == 1
    assert captured.out.split()[2] == "a\\tb\\nc"
    assert main(["focus", "triage", "--task", TASK, "--messages", str(odd), "--json"]) == 0
    (decision,) = json.loads(capsys.readouterr().out)
    assert decision["id"] == "a\tb\nc" and all(len(h["text"]) <= 60 for h in decision["highlights"])
    assert any(h["text"].endswith("…") for h in decision["highlights"]), decision["highlights"]


def test_stored_values_reach_the_terminal_without_escape_sequences(
    assistant: FocusAssistant, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start, status and digest print a task, an id, a sender and a subject as triage prints its lines:
    a message's escape sequence (a window title, a cleared screen) is shown, never run; an id of two
    lines is escaped onto one."""
    monkeypatch.setattr("attend.apps.focus.assistant.FocusAssistant._cached_heads", lambda self, _: assistant.heads)
    db = str(tmp_path / "focus.db")
    escape = "\x1b]0;owned\x07\x1b[2J\u202e"
    held = replace(UNRELATED, id="u\n1", sender=f"Bob{escape}", subject=f"Delivered{escape}")
    data = _write_jsonl(tmp_path / "m.jsonl", [held, EMERGENCY])
    assert main(["focus", "start", "--db", db, "--task", f"{TASK}\x1b[5m"]) == 0
    assert main(["focus", "ingest", "--db", db, "--messages", str(data)]) == 0
    assert main(["focus", "status", "--db", db]) == 0
    assert main(["focus", "digest", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "Bob" in out and "u\\n1" in out and "Delivered" in out  # the held message is in the digest
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert main(["focus", "status", "--db", db, "--json"]) == 0  # JSON keeps the values as stored
    assert json.loads(capsys.readouterr().out)["session"]["task"] == f"{TASK}\x1b[5m"


def test_triage_and_ingest_draw_a_bar_over_the_messages_read(
    assistant: FocusAssistant, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 messages had been minutes with nothing on stderr. The bar counts every message once: a
    message stored in the session before is done without reading it again."""
    monkeypatch.setattr("attend.apps.focus.assistant.FocusAssistant._cached_heads", lambda self, _: assistant.heads)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    monkeypatch.setenv("TQDM_DELAY", "0")
    messages = [replace(UNRELATED, id=f"u{i}", text=f"{UNRELATED.text} ({i})") for i in range(40)]
    data = _write_jsonl(tmp_path / "m.jsonl", [*messages, RELEVANT, EMERGENCY])
    counted: list[int] = []
    assert len(triage(TASK, messages, assistant=assistant, progress=counted.append)) == 40
    assert sum(counted) == 40 and len(counted) >= 2  # a call per batch of 32
    assert main(["focus", "triage", "--task", TASK, "--messages", str(data)]) == 0
    err = capsys.readouterr().err
    assert "triage: 100%" in err and "42/42" in err
    assert main(["focus", "triage", "--task", TASK, "--messages", str(data), "--no-progress"]) == 0
    assert "triage:" not in capsys.readouterr().err
    db = str(tmp_path / "focus.db")
    assert main(["focus", "start", "--db", db, "--task", TASK]) == 0
    assert main(["focus", "ingest", "--db", db, "--messages", str(_write_jsonl(tmp_path / "a.jsonl", messages))]) == 0
    capsys.readouterr()
    service = FocusService(db, assistant=assistant)
    counted.clear()
    service.ingest([*messages, RELEVANT], progress=counted.append)  # 40 stored before, 1 read
    service.close()
    assert counted == [40, 1]
    assert main(["focus", "ingest", "--db", db, "--messages", str(data)]) == 0
    err = capsys.readouterr().err
    assert "triage: 100%" in err and "42/42" in err


def test_a_mail_reusing_a_stored_mails_message_id_is_read_under_its_contents_id(
    assistant: FocusAssistant, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mail cannot be given its own id: one reusing a stored mail's Message-ID (a list's footer added)
    is read under its content's id, and the rest of the mailbox is triaged (every later ingest had failed)."""
    monkeypatch.setattr("attend.apps.focus.assistant.FocusAssistant._cached_heads", lambda self, _: assistant.heads)
    db = str(tmp_path / "focus.db")
    assert main(["focus", "start", "--db", db, "--task", TASK]) == 0
    capsys.readouterr()
    first, later = mailbox.mbox(tmp_path / "first.mbox"), mailbox.mbox(tmp_path / "later.mbox")
    for box, bodies in ((first, ["Tonight we mark the 10B Macbeth essays."]),
                        (later, ["A new note.", "Tonight we mark the 10B Macbeth essays.\n--\nYou are subscribed."])):
        for body in bodies:
            mail = EmailMessage()
            mail["From"], mail["Message-ID"] = "head@school.org", "<new@x>" if body == "A new note." else "<rel@x>"
            mail.set_content(body)
            box.add(mail)
        box.flush()
    assert main(["focus", "ingest", "--db", db, "--messages", str(tmp_path / "first.mbox"), "--json"]) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == ["rel@x"]
    for _ in range(2):  # the same on a second reading: the mail is the one stored under its content's id
        assert main(["focus", "ingest", "--db", db, "--messages", str(tmp_path / "later.mbox"), "--json"]) == 0
        captured = capsys.readouterr()
        ids = [d["id"] for d in json.loads(captured.out)]
        assert ids[0] == "new@x" and ids[1].startswith("m-"), ids
        assert f"note: 1 mail(s) of {tmp_path / 'later.mbox'} reuse the Message-ID of a stored mail" in captured.err
        assert f"(first: message 2, Message-ID 'rel@x' read as {ids[1]})" in captured.err
    # The stored mail second in a mailbox whose first mail holds its Message-ID (its reader gave it its
    # content's id): it is the stored one, not triaged again (a third row had been stored for two mails).
    swapped = mailbox.mbox(tmp_path / "swapped.mbox")
    for body in ("Another text under the same id.", "Tonight we mark the 10B Macbeth essays."):
        mail = EmailMessage()
        mail["From"], mail["Message-ID"] = "head@school.org", "<rel@x>"
        mail.set_content(body)
        swapped.add(mail)
    swapped.flush()
    assert main(["focus", "ingest", "--db", db, "--messages", str(tmp_path / "swapped.mbox"), "--json"]) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)][1] == "rel@x"
    assert main(["focus", "status", "--db", db, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["stats"]
    assert stats["passed"] + stats["held"] == 4  # rel@x, new@x, the footer's copy, and the other text


def test_session_verbs_end_to_end(assistant: FocusAssistant, tmp_path: Path, capsys: pytest.CaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr("attend.apps.focus.assistant.FocusAssistant._cached_heads", lambda self, _: assistant.heads)
    db = str(tmp_path / "focus.db")
    data = _write_jsonl(tmp_path / "m.jsonl", [UNRELATED, RELEVANT, EMERGENCY])
    assert main(["focus", "ingest", "--db", db, "--messages", str(data)]) == 2  # no database yet
    assert "no focus database" in capsys.readouterr().err
    assert main(["focus", "start", "--db", db, "--task", TASK, "--minutes", "60"]) == 0
    assert "started" in capsys.readouterr().out
    assert main(["focus", "start", "--db", db, "--task", TASK]) == 2
    assert "still running" in capsys.readouterr().err
    assert main(["focus", "ingest", "--db", db, "--messages", str(data), "--json"]) == 0
    assert [d["decision"] for d in json.loads(capsys.readouterr().out)] == ["hold", "pass", "pass"]
    assert main(["focus", "feedback", "--db", db, "u1", "pass", "--json"]) == 0
    fb = json.loads(capsys.readouterr().out)
    assert fb == {"id": "u1", "decision": "hold", "feedback": "pass", "agreed": False, "updates": 1}
    assert main(["focus", "feedback", "--db", db, "u1", "pass", "--json"]) == 0  # said again: nothing new
    again = json.loads(capsys.readouterr().out)
    assert again["repeated"] and again["updates"] == 1
    assert main(["focus", "feedback", "--db", db, "zzz", "pass"]) == 2
    assert "no message 'zzz'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:  # argparse's: it had named the value "argument label"
        main(["focus", "feedback", "--db", db, "u1", "maybe"])
    assert stopped.value.code == 2 and "argument decision: invalid choice: 'maybe'" in capsys.readouterr().err
    # A stored id with another text is named by file and line (it had named neither), nothing stored.
    other = _write_jsonl(tmp_path / "other.jsonl", [UNRELATED, replace(RELEVANT, text="Another text.")])
    assert main(["focus", "ingest", "--db", db, "--messages", str(other)]) == 2
    assert f"error: {other}: line 2: message id {RELEVANT.id!r} is stored in this session already" \
        in capsys.readouterr().err
    for bad in (["--minutes", "inf"], ["--minutes", "0"], ["--until", "tomorrow"], ["--minutes", "1e-9"],
                ["--until", "1999-01-01T00:00"]):  # fmt: skip
        assert main(["focus", "start", "--db", str(tmp_path / "other.db"), "--task", TASK, *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad[0]}"), err  # 1e-9 minutes blamed an --until never given
        assert not list(tmp_path.glob("other.db*"))  # a refused start made an empty database ("no session yet")
    with pytest.raises(SystemExit) as refused:  # the parser's (a thread count, 0 to 1024)
        main(["focus", "triage", "--task", TASK, "--messages", str(data), "--threads", "-1"])
    assert refused.value.code == 2 and "argument --threads: -1 is not a thread count" in capsys.readouterr().err
    assert main(["focus", "status", "--db", db, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] and status["stats"]["passed"] == 2 and status["stats"]["held"] == 1
    assert status["stats"]["feedback_corrected"] == 1
    assert main(["focus", "digest", "--db", db, "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)
    assert digest["held"] == 0  # the only held message was corrected to pass
    assert digest["passed_by_feedback"] == 1 and digest["held_by_feedback"] == 0  # why it differs from status
    assert main(["focus", "digest", "--db", db]) == 0
    assert "0 held message(s) (your answers win: 1 you passed that it held)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # an OverflowError traceback from SQLite before
        main(["focus", "digest", "--db", db, "--session", "99999999999999999999"])
    assert "argument --session: 99999999999999999999 is not an id" in capsys.readouterr().err
    assert main(["focus", "stop", "--db", db]) == 0
    assert "stopped" in capsys.readouterr().out
    assert main(["focus", "status", "--db", db]) == 0
    assert "stopped at" in capsys.readouterr().out
    store = open_focus_store(db)
    assert store.person(assistant.reader.dim).updates == 1  # the correction was persisted
    assert store.traffic(store.last_session()["id"])["count"] == 3  # the session's traffic, for relevance
    store.close()
    # Said in words: "you corrected the decision (hold)" had read as corrected to hold.
    assert main(["focus", "feedback", "--db", db, "u1", "hold"]) == 0
    assert "u1: you changed your answer from pass to hold (the assistant had held it); learnt" in \
        capsys.readouterr().out
    assert main(["focus", "feedback", "--db", db, RELEVANT.id, "hold"]) == 0
    assert f"{RELEVANT.id}: you corrected it to hold: the assistant had passed it; learnt" in capsys.readouterr().out
    assert main(["focus", "feedback", "--db", db, RELEVANT.id, "pass", "--json"]) == 0
    changed = json.loads(capsys.readouterr().out)
    # A changed answer replaces the earlier one's learning: the count stays at the messages answered.
    assert changed["changed_from"] == "hold" and changed["updates"] == 2


def test_a_hold_that_cannot_hold_messages_like_it_says_why(assistant: FocusAssistant, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """Answering hold to a message passed on the allowlist or as unreadable said "learnt", and the
    sender's next such message passed as before."""
    service = FocusService(tmp_path / "n.db", assistant=assistant)
    service.start(TASK, allow=["deliveries@parcel.example"])
    unreadable = Message(id="z1", sender="wang@x.example", text="请把第三季度的报告发给我，谢谢。")
    decisions = service.ingest([UNRELATED, unreadable, RELEVANT])
    assert [d.decision for d in decisions] == ["pass", "pass", "pass"]
    assert decisions[1].reasons[0].startswith("Unreadable:")
    allowed = service.feedback(UNRELATED.id, "hold")
    assert allowed["note"].startswith("it passed on the allowlist ('deliveries@parcel.example'), which always gets")
    assert service.feedback("z1", "hold")["note"].startswith("it passed as unreadable")
    assert "note" not in service.feedback(RELEVANT.id, "hold")  # what was learnt can hold one like it
    assert "note" not in service.feedback("z1", "pass")  # an answer that agrees needs none
    service.close()
    assert main(["focus", "feedback", "--db", str(tmp_path / "n.db"), "z1", "hold"]) == 0
    assert "learnt (3 answer(s) learnt so far)\nnote: it passed as unreadable" in capsys.readouterr().out


def test_digest_groups_held_messages_with_key_sentences(assistant: FocusAssistant, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    service = FocusService(tmp_path / "d.db", assistant=assistant)
    service.start("Write the chapter on river ecology for my thesis")
    held = [
        Message(id="g1", sender="gym@club.example", subject="Class timetable",
                text="Hello gym members. The spin class moves to studio 2 from next month. Yoga stays on Sundays."),
        Message(id="g2", sender="gym@club.example", subject="Timetable change",
                text="Gym members: the Tuesday spin class moves to 6pm. Pilates stays on Thursday evenings."),
        Message(id="b1", sender="bank@bank.example", subject="Your statement",
                text="Your monthly bank statement is ready to view. Log in to online banking to see it."),
    ]  # fmt: skip
    # (no clock time: routine notices with one can pass on urgency, the head reads no clock; README
    # "Focus assistant", what limits it)
    decisions = service.ingest(held)
    assert [d.decision for d in decisions] == ["hold", "hold", "hold"]
    digest = service.digest()
    assert digest["held"] == 3
    groups = {tuple(sorted(m["id"] for m in g["messages"])) for g in digest["groups"]}
    assert ("g1", "g2") in groups and ("b1",) in groups
    # What a limit leaves out is said (the header had still counted every held message, in silence)
    assert digest["group_count"] == len(digest["groups"]) == 2
    assert [len(service.digest(limit=1)["groups"]), service.digest(limit=1)["group_count"]] == [1, 2]
    monkeypatch.setattr("attend.apps.focus.assistant.FocusAssistant._cached_heads", lambda self, _: assistant.heads)
    assert main(["focus", "digest", "--db", str(tmp_path / "d.db"), "--limit", "1"]) == 0
    assert "3 held message(s); the first 1 of 2 groups (--limit)" in capsys.readouterr().out.splitlines()[0]
    for group in digest["groups"]:
        scores = [m["score"] for m in group["messages"]]
        assert scores == sorted(scores, reverse=True)
        for m in group["messages"]:
            text = next(h.text for h in held if h.id == m["id"])
            assert m["key_sentence"] and m["key_sentence"] in text
    # A later session holding the same ids, then forgotten, leaves this session's digest as it was
    # (the embeddings were looked up by id in the newest session: "expected sequence of length 384").
    first = digest["session"]["id"]
    service.stop()
    service.start("Write the chapter on river ecology for my thesis")
    service.ingest([Message(id=m.id, sender=m.sender, subject="Other", text=f"Another mail {i}.")
                    for i, m in enumerate(held)])  # fmt: skip
    service.store.stop_session(forget=True)
    again = service.digest(session_id=first)
    assert {tuple(sorted(m["id"] for m in g["messages"])) for g in again["groups"]} == groups
    service.close()


def test_a_stored_id_arriving_with_another_message_is_refused(assistant: FocusAssistant, tmp_path: Path) -> None:
    """A numbering per export repeats ids: before, the second message was decided, printed and then
    dropped unseen ("stored once"), and feedback on the id taught the first one."""
    service = FocusService(tmp_path / "ids.db", assistant=assistant)
    service.start("File my quarterly tax return")
    service.ingest([Message(id="1", sender="gym@club.example", text="Yoga class moved to Sunday.")])
    service.ingest([Message(id="1", sender="gym@club.example", text="Yoga class moved to Sunday.")])  # a replay
    with pytest.raises(ValueError, match="message id '1' is stored in this session already, for a message with "
                                         "another text"):  # fmt: skip
        service.ingest([Message(id="1", sender="acct@firm.example", text="Sign the 1099 forms before 4pm today."),
                        Message(id="2", text="New playlist for you.")])  # fmt: skip
    assert [m["id"] for m in service.store.messages()] == ["1"]  # nothing of the refused batch stored
    service.close()


def test_a_message_sent_again_gets_the_decision_it_was_given(assistant: FocusAssistant, tmp_path: Path) -> None:
    """Sent again after feedback taught otherwise, it was decided again (PASS printed) while the
    database, the statistics and later feedback kept the stored HOLD."""
    service = FocusService(tmp_path / "again.db", assistant=assistant)
    service.start("File my quarterly tax return")
    message = Message(id="n1", sender="news@shop.example", text="Our spring sale starts Monday: 20% off shoes.")
    (first,) = service.ingest([message])
    taught = "pass" if first.decision == "hold" else "hold"
    for _ in range(3):  # the person teaches the other answer, and the sender with it
        service.feedback("n1", taught)
        service.feedback("n1", first.decision)
        service.feedback("n1", taught)
    (again,) = service.ingest([message])
    stored = service.store.message("n1")
    assert again.to_dict() | {"highlights": stored["highlights"]} == {
        "id": "n1", "decision": stored["decision"], "score": round(stored["score"], 4),
        "components": stored["components"], "reasons": stored["reasons"], "highlights": stored["highlights"],
        "truncated": stored["truncated"]}  # fmt: skip
    assert again.decision == first.decision and again.reasons == first.reasons
    assert [h.to_dict() for h in again.highlights] == [h.to_dict() for h in first.highlights]
    service.close()


def test_http_routes(assistant: FocusAssistant, tmp_path: Path) -> None:
    service = FocusService(tmp_path / "h.db", assistant=assistant)
    app = FastAPI()
    app.include_router(focus_router(service))
    with TestClient(app, raise_server_exceptions=False) as client:
        body = {"messages": [{"id": "r1", "text": RELEVANT.text, "subject": RELEVANT.subject}]}
        early = client.post("/v1/focus/messages", json=body)  # no session yet
        # The routes' errors name routes and fields, not the CLI's verbs and flags.
        assert early.status_code == 409 and "POST /v1/focus/sessions" in early.text and "attend focus" not in early.text
        late_end = client.post("/v1/focus/sessions", json={"task": TASK, "until": "tomorrow"})
        assert late_end.status_code == 422 and "until 'tomorrow' is not an ISO time" in late_end.text
        assert "--until" not in late_end.text
        quoted = client.post("/v1/focus/sessions", json={"task": TASK, "until": "--until 5pm"})  # the user's words
        assert "until '--until 5pm' is not an ISO time" in quoted.json()["detail"]  # kept as sent
        started = client.post("/v1/focus/sessions", json={"task": TASK, "minutes": 30})
        assert started.status_code == 200 and started.json()["task"] == TASK
        again = client.post("/v1/focus/sessions", json={"task": TASK})
        assert again.status_code == 409 and "stop it first with POST /v1/focus/stop" in again.text
        got = client.post("/v1/focus/messages", json=body)
        assert got.status_code == 200 and got.json()["decisions"][0]["decision"] == "pass"
        no_id = client.post("/v1/focus/messages", json={"messages": [{"text": UNRELATED.text}]}).json()
        assert no_id["decisions"][0]["id"].startswith("m-")
        # A number as the id, as a file's row may give it (it was a 422 here only); true is no id.
        numbered = client.post("/v1/focus/messages", json={"messages": [{"id": 5, "text": "Ticket five."}]})
        assert numbered.status_code == 200 and numbered.json()["decisions"][0]["id"] == "5"
        answered = client.post("/v1/focus/feedback", json={"id": 5, "label": "pass"})  # by the number it was sent as
        assert answered.status_code == 200 and answered.json()["id"] == "5"
        assert client.post("/v1/focus/feedback", json={"id": " ", "label": "pass"}).status_code == 422
        assert client.post("/v1/focus/messages", json={"messages": [{"id": True, "text": "x"}]}).status_code == 422
        long_id = client.post("/v1/focus/messages", json={"messages": [{"id": "i" * 301, "text": "x"}]})
        assert long_id.status_code == 422 and "an id of 301 characters, over 300" in long_id.text
        # Read as a file's row is: the same message gets the same id, and a bad time is refused.
        raw = {"text": "Dup check: revenue table\r\n", "sender": "ann@x.com "}
        row = read_messages(io.StringIO(json.dumps(raw) + "\n"), fmt="jsonl")[0]
        sent = client.post("/v1/focus/messages", json={"messages": [raw]}).json()["decisions"][0]
        assert sent["id"] == row.id
        late = {"messages": [{"text": "hello", "time": "not a time"}]}
        refused = client.post("/v1/focus/messages", json=late)
        assert refused.status_code == 422 and "messages[0] has a time that is not an ISO 8601" in refused.text
        assert "not a time" not in refused.text  # the value may be a piece of a message
        # A message of subject alone is read from its subject, as the CLI reads a row (it was a 422 here only).
        alone = client.post("/v1/focus/triage", json={"task": TASK, "messages": [
            {"id": "s1", "text": "", "subject": EMERGENCY.text}, {"id": "s2", "subject": EMERGENCY.text}]})  # fmt: skip
        assert alone.status_code == 200, alone.text
        rows = [{"id": f"s{i}", "text": "", "subject": EMERGENCY.text} for i in (1, 2)]
        read = read_messages(io.StringIO("".join(json.dumps(row) + "\n" for row in rows)), fmt="jsonl")
        assert alone.json()["decisions"] == [d.to_dict() for d in service.assistant.triage(Session(TASK), read)]
        nothing = client.post("/v1/focus/messages", json={"messages": [{"id": "e", "text": " ", "subject": ""}]})
        assert nothing.status_code == 422 and "is an empty message" in nothing.text
        twice = {"messages": [{"id": "z", "text": "Team lunch on Friday."}, {"id": "z", "text": "The server is down!"}]}
        invisible = {"messages": [{"text": "\u200b\u200b"}]}  # only invisible characters, as the CLI refuses
        for bad in ({"messages": []}, {"messages": [{"text": "  "}]}, {"messages": [{"text": "x", "extra": 1}]}, twice,
                    invisible):  # fmt: skip
            assert client.post("/v1/focus/messages", json=bad).status_code == 422
        assert client.post("/v1/focus/triage", json={"task": "\u200b", **body}).status_code == 422
        assert client.post("/v1/focus/sessions", json={"task": "\u200b"}).status_code == 422
        assert client.get(f"/v1/focus/digest?session={2**63}").status_code == 422  # not a 500 from SQLite
        assert client.get("/v1/focus/digest?session=999").status_code == 404
        assert client.post("/v1/focus/sessions", json={"task": TASK, "minutes": 1e300}).status_code == 422
        assert client.post("/v1/focus/sessions", json={"task": TASK, "minutes": True}).status_code == 422
        small = client.post("/v1/focus/sessions", json={"task": TASK, "minutes": 0.001})  # the CLI's floor: 1
        assert small.status_code == 422 and "--until" not in small.text  # it named a flag and a time never sent
        long_task = client.post("/v1/focus/triage", json={"task": "plan " * 1001, **body})
        assert long_task.status_code == 422
        with pytest.raises(ValueError, match="task is 5,005 characters long, over 5,000"):  # the CLI's the same
            Session("plan " * 1001)
        # A body over the limit is cut and flagged, as a file's is (it was a 422 over HTTP only).
        huge = client.post("/v1/focus/triage", json={"task": TASK, "messages": [{"text": "word " * 30_000}]})
        assert huge.status_code == 200 and huge.json()["decisions"][0]["truncated"] is True
        assert client.post("/v1/focus/feedback", json={"id": "r1", "label": "maybe"}).status_code == 422
        missing = client.post("/v1/focus/feedback", json={"id": "nope", "label": "hold"})
        assert missing.status_code == 404 and "no message 'nope' in the service's database" in missing.text
        assert str(tmp_path) not in missing.text  # where the server keeps its database is not the client's to know
        # An id that is not valid Unicode: refused naming it (it had been the database's codec error).
        with pytest.raises(ValueError, match="message id '\\\\udcff' contains an unpaired surrogate"):
            FocusService(str(tmp_path / "focus.db"), assistant=assistant).feedback("\udcff", "pass")
        assert client.post("/v1/focus/feedback", json={"id": "r1", "label": "hold"}).json()["agreed"] is False
        stateless = client.post("/v1/focus/triage", json={"task": TASK, "messages": [{"text": EMERGENCY.text}]})
        assert stateless.json()["decisions"][0]["decision"] == "pass"
        status = client.get("/v1/focus/status").json()
        assert status["stats"]["passed"] + status["stats"]["held"] == 4  # with ticket 5
        assert client.get("/v1/focus/digest").status_code == 200
        assert client.post("/v1/focus/stop", json={"forget": "yes"}).status_code == 422  # erasing wants a real true
        assert client.post("/v1/focus/stop").json()["stats"]["feedback"] == 2  # r1, ticket 5; no body: forget false
        assert client.post("/v1/focus/stop", json={}).status_code == 409
        # Not Unicode: refused before anything is stored (it was stored, then a 500 from every focus route).
        def raw(route: str, body: dict[str, Any]) -> int:  # "\ud800" escaped in the JSON, as a client sends it
            sent = client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
            return sent.status_code

        assert raw("/v1/focus/sessions", {"task": TASK, "allow": ["bob\ud800"]}) == 422
        assert client.get("/v1/focus/status").json()["running"] is False
        # A file's row as well: `focus ingest` failed on storing it with a codec error naming no line.
        line = json.dumps({"text": "hi", "sender": "ann\udcff@x.com"}) + "\n"
        with pytest.raises(DataError, match="line 1: field 'sender' contains an unpaired surrogate"):
            read_messages(io.StringIO(line), fmt="jsonl")
        # One id twice in a stateless triage, as the CLI and /v1/focus/messages refuse (two answers named "z").
        same = client.post("/v1/focus/triage", json={"task": TASK, **twice})
        assert same.status_code == 422 and "messages[1] has the id 'z' of messages[0]" in same.text
        copies = {"messages": [{"text": "Team lunch on Friday."}] * 2}
        assert client.post("/v1/focus/triage", json={"task": TASK, **copies}).status_code == 422


def test_serve_mounts_the_focus_routes(trained: dict[str, Path], assistant: FocusAssistant, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
                                       ) -> None:  # fmt: skip
    from attend.apps.focus.cli import serve_routers
    from attend.serve.app import create_app, load_for_serving
    from attend.serve.routes import ServeSettings

    monkeypatch.setattr("attend.apps.focus.assistant.FocusAssistant._cached_heads", lambda self, _: assistant.heads)
    model_dir = next(v for k, v in trained.items() if k != "data")

    class Args:
        focus_db = str(tmp_path / "s.db")

    specs = serve_routers(Args())
    app = create_app(load_for_serving(model_dir, ServeSettings()), ServeSettings(), routers=specs)
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        late_end = client.post("/v1/focus/sessions", json={"task": TASK, "until": "tomorrow"})
        # A route's own 422 has the schema's error type (it said "http"); other statuses keep theirs.
        assert late_end.status_code == 422 and late_end.json()["error"]["type"] == "validation"
        # ... and names its field in details, as the schema's 422 does (it had no details).
        assert late_end.json()["error"]["details"][0]["field"] == "until"
        late = client.post("/v1/focus/messages", json={"messages": [{"text": "hello", "time": "not a time"}]})
        (detail,) = late.json()["error"]["details"]
        assert late.status_code == 422 and detail["field"] == "messages.0.time" and detail["type"] == "value_error"
        assert detail["message"].startswith("has a time that is not an ISO")
        assert client.post("/v1/focus/sessions", json={"task": TASK}).status_code == 200
        assert client.post("/v1/focus/sessions", json={"task": TASK}).json()["error"]["type"] == "http"  # a 409
        decisions = client.post("/v1/focus/messages", json={"messages": [{"text": EMERGENCY.text}]}).json()
        assert decisions["decisions"][0]["decision"] == "pass"
        metrics_page = client.get("/metrics").text
    assert "/v1/focus/messages" in metrics_page  # the request was counted ...
    assert "garden" not in metrics_page and "garden" not in caplog.text  # ... its text never logged or measured


def test_serve_the_focus_assistant_without_a_model(assistant: FocusAssistant, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """``attend serve --focus-db PATH`` with no MODEL_DIR: the focus routes alone (the assistant reads with
    its own encoder); a router that needs the served model, or nothing to serve at all, is refused."""
    from attend.apps.focus.cli import serve_routers
    from attend.serve import RouterSpec
    from attend.serve.app import create_app, load_for_serving
    from attend.serve.routes import ServeSettings

    monkeypatch.setattr("attend.apps.focus.assistant.FocusAssistant._cached_heads", lambda self, _: assistant.heads)

    class Args:
        focus_db = str(tmp_path / "s.db")

    assert load_for_serving(None, ServeSettings()) is None
    with TestClient(create_app(None, ServeSettings(), routers=serve_routers(Args()))) as client:
        info = client.get("/v1/model").json()
        assert info["name"] is None and info["task"] is None and info["version"]["attend"]
        # no model: no config, and only the body limit (max_texts and the like are for a /v1/predict not served)
        assert info["config"] is None and set(info["limits"]) == {"max_body_bytes"}
        assert client.post("/v1/predict", json={"texts": ["hi"]}).status_code == 404
        # the digest of a database with no session is not found (it was a 409, as a conflict)
        assert client.get("/v1/focus/digest").status_code == 404
        assert client.head("/focus").status_code == 200  # an uptime probe's HEAD (it was a 405)
        assert client.post("/v1/focus/sessions", json={"task": TASK}).status_code == 200
        decisions = client.post("/v1/focus/messages", json={"messages": [{"text": EMERGENCY.text}]}).json()
        assert decisions["decisions"][0]["decision"] == "pass"
        assert client.get("/readyz").status_code == 200
        # An id that is not valid Unicode: a 422 naming it (it had been a 500 from the database's codec).
        broken = client.post("/v1/focus/feedback", content=b'{"id": "\\ud800", "label": "hold"}',
                             headers={"content-type": "application/json"})  # fmt: skip
        assert broken.status_code == 422 and "id contains an unpaired surrogate" in broken.text
    with pytest.raises(ValueError, match="nothing to serve: give a model directory"):
        create_app(None, ServeSettings())
    monitor = RouterSpec("attend.apps.monitor.router:served_monitor_router", {"db": str(tmp_path / "m.db")})
    with pytest.raises(ValueError, match="--monitor-db scores events with the served sentiment model"):
        create_app(None, ServeSettings(), routers=[monitor])
    assert not (tmp_path / "m.db").exists()


def test_serve_with_nothing_to_serve_is_a_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "attend", "serve"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: nothing to serve: give a model directory")
    result = subprocess.run([sys.executable, "-m", "attend", "serve", "--focus-db", str(tmp_path / "f.db"), "--int8"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--int8 set how a model is served; give its MODEL_DIR" in result.stderr
    assert not (tmp_path / "f.db").exists()


# --- evaluation -------------------------------------------------------------------------------


def test_metrics_by_hand() -> None:
    m = metrics([True, False, True, False], [True, True, False, False], urgent=[True, True, False, False],
                scores=[0.9, 0.2, 0.6, 0.1])  # fmt: skip
    assert m["pass_recall"] == 0.5 and m["hold_recall"] == 0.5 and m["balanced_accuracy"] == 0.5
    assert m["urgent_held"] == 1 and m["interruptions_per_100"] == 50.0
    assert m["brier"] == pytest.approx((0.01 + 0.64 + 0.36 + 0.01) / 4)


def test_the_suite_is_split_by_task_and_labelled_consistently() -> None:
    dev_tasks, dev = load_suite("dev")
    test_tasks, test = load_suite("test")
    assert len(dev_tasks) + len(test_tasks) >= 10 and len(dev) + len(test) >= 300
    assert not set(dev_tasks) & set(test_tasks)
    assert all(r.passed for r in dev + test if r.urgent)  # rule P1: urgent messages pass
    assert len({r.message.id for r in dev + test}) == len(dev) + len(test)


def test_suite_test_tasks_against_the_baselines(assistant: FocusAssistant) -> None:
    """On the held-out test tasks (h01-h07, written blind and scored twice before this test existed;
    nothing fitted or chosen on them): no urgent message held (the issue's goal, met); balanced
    accuracy and the margin over the best baseline guard the measured 0.815 and +7.9 points (the
    issue's 0.85 and +10 are not met; README "Focus assistant")."""
    report = evaluate_suite("test", assistant=assistant)
    # The dev tasks' figures are in-sample (the heads and costs were fitted on them): said there, not here.
    from attend.apps.focus.evaluation import format_report

    assert report["held_out"] and "not held-out" not in format_report(report)
    assert "were fitted on: not held-out figures" in format_report({**report, "split": "dev", "held_out": False})
    assert report["assistant"]["urgent_held"] == 0
    assert report["assistant"]["balanced_accuracy"] >= 0.80
    assert report["margin_over_best_baseline"] >= 0.065  # measured 0.079; a message or two of slack
    assert report["baselines"]["pass_all"]["balanced_accuracy"] == 0.5
    assert report["baselines"]["hold_all"]["urgent_held"] == report["assistant"]["urgent"]
    # Corrections in each task's first half, scored on its second half: they do not lift it here
    # (0.818 -> 0.806, measured; on dev too, README); they must not cost more than two points.
    # (Feedback learning itself: test_feedback_learns_a_preference_but_never_holds_an_emergency; the
    # learning curve on a real stream: README, `attend focus evaluate --stream`.)
    feedback = report["feedback"]
    assert feedback["corrections"] > 0
    assert feedback["with_feedback"]["balanced_accuracy"] >= feedback["without"]["balanced_accuracy"] - 0.02


def test_triage_helper_without_a_service(assistant: FocusAssistant) -> None:
    (d,) = triage(TASK, [EMERGENCY], assistant=assistant)
    assert d.to_dict()["decision"] == "pass"
    # One string is not an allowlist: tuple("Maria") allowed every message with an "a" in it.
    with pytest.raises(ValueError, match=r"allow must be a list of entries, not one string: give \['Maria'\]"):
        triage(TASK, [EMERGENCY], allow="Maria", assistant=assistant)  # type: ignore[arg-type]
    assert Session(TASK, (a for a in ["bob@x.com"])).allow == ("bob@x.com",)  # a generator, read once
    assert Session(TASK, ["  ", "\u200b", " maria "]).allow == ("maria",)  # blank entries dropped alike
    with pytest.raises(ValueError, match="task contains an unpaired surrogate"):  # a traceback from the tokenizer
        triage("Plan \udcff offsite", [EMERGENCY], assistant=assistant)


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Membership renews at $49.95 per month. Cancel any time.",  # was cut to "...renews at $49."
         ["Membership renews at $49.95 per month.", "Cancel any time."]),
        ("Meet at 3 p.m. in room 2. Bring the 2.5 mg dose!", ["Meet at 3 p.m. in room 2.", "Bring the 2.5 mg dose!"]),
        ("会议改到明天。请准时参加！谢谢", ["会议改到明天。", "请准时参加！", "谢谢"]),
        ("Line one\nLine two", ["Line one", "Line two"]),
        ("Membership renews at $49.95. Cancel any time.", ["Membership renews at $49.95.", "Cancel any time."]),
        ("Update to version 2.5. See example.com. Then sign in.", ["Update to version 2.5.", "See example.com.",
                                                                   "Then sign in."]),
        ("He said \"stop.\" Then he left.", ["He said \"stop.\"", "Then he left."]),
        ("Bring snacks (e.g. chips) to it. Ask J. Smith about it.", ["Bring snacks (e.g. chips) to it.",
                                                                     "Ask J. Smith about it."]),
    ],
)
def test_digest_sentences_do_not_end_inside_numbers_or_abbreviations(text: str, sentences: list[str]) -> None:
    from attend.apps.focus.digest import _sentences

    assert [text[a:b].strip() for a, b in _sentences(text)] == sentences


def test_a_key_sentence_is_at_most_a_few_hundred_characters(assistant: FocusAssistant) -> None:
    from attend.apps.focus.digest import MAX_SENTENCE_CHARS, _sentences, key_sentence

    # No sentence end in 100,000 characters: the whole body had been the key sentence (and the group's title).
    endless = "Umsatz im dritten Quartal " * 4000
    key = key_sentence(assistant.reader, endless)
    assert 0 < len(key) <= MAX_SENTENCE_CHARS and key in endless
    assert {key.split()[0], key.split()[-1]} <= {"Umsatz", "im", "dritten", "Quartal"}  # cut at spaces
    unspaced = "会议" * 400  # no space to cut at: cut at the limit
    assert [b - a for a, b in _sentences(unspaced)] == [300, 300, 200]


def test_a_chinese_sentence_can_be_the_key_sentence_beside_english_ones() -> None:
    """Words were counted by spaces: a whole Chinese sentence was one, never a candidate beside an
    English sentence of three words."""
    from attend.apps.focus.digest import _long_enough, _sentences

    text = "Meeting moved to 3pm. 请大家准时参加，会议很重要。 好的。 OK."
    spans = _sentences(text)
    chosen = [text[a:b].strip() for a, b in _long_enough(text, spans)]
    assert chosen == ["Meeting moved to 3pm.", "请大家准时参加，会议很重要。"]


def test_a_mail_wrapped_at_72_columns_is_read_in_sentences_not_lines() -> None:
    """Each wrapped line had been a sentence: "... rehearse the spring programme in the community hall next"."""
    import textwrap

    from attend.apps.focus.digest import _sentences

    paragraph = ("The choir will rehearse the spring programme in the community hall next Saturday at ten. Please "
                 "bring your folders and the new scores, which the office printed yesterday.")
    text = textwrap.fill(paragraph, 72) + "\n\nAgenda:\n- warm-up\n- the Fauré"
    said = [text[a:b].replace("\n", " ").strip() for a, b in _sentences(text)]
    assert said[:2] == ["The choir will rehearse the spring programme in the community hall next Saturday at ten.",
                        "Please bring your folders and the new scores, which the office printed yesterday."]
    assert said[2:] == ["Agenda:", "- warm-up", "- the Fauré"]  # short lines and list items still stand alone


def _open_at_once(db: str, barrier: Any, errors: Any) -> None:
    from attend.apps.focus.store import open_focus_store

    barrier.wait()
    try:
        open_focus_store(db).close()
    except Exception as exc:  # reported to the test, which names it
        errors.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_database_at_once_all_open_it(tmp_path: Path) -> None:
    """Before: all but one failed with 'table focus_schema already exists' or a UNIQUE error."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, errors = context.Barrier(4, timeout=60), context.Queue()
    workers = [context.Process(target=_open_at_once, args=(str(tmp_path / "new.db"), barrier, errors))
               for _ in range(4)]  # fmt: skip
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        found = []
        while not errors.empty():
            found.append(errors.get())
        assert not found and [w.exitcode for w in workers] == [0] * 4, found
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()


def test_a_client_is_told_the_databases_name_not_the_servers_folders() -> None:
    """GET /v1/model had given /srv/private/focus.db, and a URL would have given its password."""
    from attend.apps.sqlstore import public_name

    assert public_name("/srv/private/focus.db") == "focus.db"
    assert public_name("postgresql://ann:secret@db.internal:5432/focus") == "focus"


def test_an_until_the_clocks_skip_is_refused_and_times_are_said_in_one_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    """2:30 on the night New York's clocks jump from 2:00 to 3:00 had become 1:30, ending the session an
    hour early; the "not after the start" error gave a local time beside UTC; a lower-case z was refused."""
    import time

    from attend.apps.focus.store import session_end

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        started = "2027-03-14T05:00:00+00:00"  # 01:00 in New York
        with pytest.raises(ValueError, match=r"--until '2027-03-14T02:30': 2027-03-14T02:30 does not exist in this "
                                             r"machine's time zone on that day"):  # fmt: skip
            session_end("2027-03-14T02:30", started)
        assert session_end("2027-03-14T03:30", started) == "2027-03-14T03:30:00-04:00"
        assert session_end("2026-11-01T01:30", "2026-11-01T04:00:00+00:00") == "2026-11-01T01:30:00-04:00"  # first
        with pytest.raises(ValueError, match=r"is not after the start \(read as 2027-03-13T23:30-05:00; started "
                                             r"2027-03-14T00:00-05:00\)"):  # fmt: skip
            session_end("2027-03-13T23:30", "2027-03-14T05:00:00+00:00")
        assert session_end("2027-03-14T12:00z", started) == "2027-03-14T12:00:00+00:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_new_database_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    """It holds people's messages: SQLite had made it (and its write-ahead log) 0644, readable by every
    local user."""
    import stat

    store = open_focus_store(tmp_path / "own.db")
    store.start_session("Write the report", ())
    assert stat.S_IMODE((tmp_path / "own.db").stat().st_mode) == 0o600
    for name in ("own.db-wal", "own.db-shm"):  # while the store is open, if SQLite keeps them
        if (tmp_path / name).exists():
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    store.close()
