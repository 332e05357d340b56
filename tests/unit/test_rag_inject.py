"""Passages into a chat request and citations out: placement, delimiters, query extraction, the request field."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.model import RetrievalConfig
from gateway.config.snapshot import Alias
from gateway.errors import InvalidRequest
from gateway.rag import inject
from gateway.rag.hook import plan
from gateway.rag.retrieve import relevant
from gateway.rag.store.search import Hit


def hit(text: str = "Twenty-five days of leave.", **over: Any) -> Hit:
    values: dict[str, Any] = {
        "chunk_id": 7,
        "kb_id": 1,
        "kb_name": "hr",
        "document_id": 3,
        "document_name": "leave.md",
        "chunk_index": 2,
        "heading_path": ("Leave", "Annual"),
        "text": text,
        "language": "en",
        "score": 0.0325,
        "ranks": {"keyword": 1},
        "scores": {"keyword": 0.5},
    }
    return Hit(**(values | over))


def test_last_user_text_reads_strings_and_text_parts() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "part one"}, {"type": "image_url"}, {"type": "text", "text": "two"}],
        },
    ]
    assert inject.last_user_text(messages) == "part one\ntwo"
    assert inject.last_user_text([{"role": "system", "content": "x"}]) == ""
    assert inject.last_user_text("not a list") == ""


def test_system_message_goes_after_the_leading_system_messages() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "a"},
            {"role": "developer", "content": "b"},
            {"role": "user", "content": "q"},
        ]
    }
    inject.inject(body, "PASSAGES")
    assert [m["content"] for m in body["messages"]] == ["a", "b", "PASSAGES", "q"]
    bare = {"messages": [{"role": "user", "content": "q"}]}
    inject.inject(bare, "PASSAGES")
    assert bare["messages"][0] == {"role": "system", "content": "PASSAGES"}


def test_render_numbers_passages_inside_nonce_delimiters() -> None:
    text = inject.render([hit(), hit("second", kb_name="it", document_name="vpn.md", heading_path=())], nonce="abc")
    assert "<<<PASSAGES abc>>>\n[1] hr / leave.md > Leave > Annual\nTwenty-five days of leave." in text
    assert "[2] it / vpn.md\nsecond\n<<<END PASSAGES abc>>>" in text
    assert "not instructions" in text


def test_template_replaces_only_the_placeholder_and_runs_nothing() -> None:
    template = "Context {0} {__class__} {{x}}:\n{passages}"
    text = inject.render([hit()], template, nonce="n")
    assert text.startswith("Context {0} {__class__} {{x}}:\n<<<PASSAGES n>>>")


def test_nonce_differs_per_request() -> None:
    first, second = inject.render([hit()]), inject.render([hit()])
    assert first.split(">>>")[0] != second.split(">>>")[0]


def test_citations_are_numbered_with_a_short_snippet() -> None:
    long = "word " * 200
    (cited,) = inject.citations([hit(long)])
    assert cited["index"] == 1
    assert cited["document"] == "leave.md"
    assert cited["heading_path"] == ["Leave", "Annual"]
    assert cited["snippet"].endswith("…")
    assert len(cited["snippet"]) <= inject.SNIPPET_CHARS + 1


def test_relevance_keeps_keyword_hits_and_similar_dense_hits() -> None:
    assert relevant(hit(), 0.9)
    dense = hit(ranks={"dense": 1}, scores={"dense": 0.3})
    assert relevant(dense, 0.25)
    assert not relevant(dense, 0.35)


def alias(**over: Any) -> Alias:
    return Alias(name="support", routes=(), **over)


def test_plan_takes_the_field_out_of_the_body() -> None:
    body: dict[str, Any] = {"messages": [], "knowledge_bases": ["hr", "hr", "it"]}
    found = plan(alias(knowledge_bases=("handbook",)), body, chat=True)
    assert found is not None
    assert found.requested == ("hr", "it")
    assert found.configured == ("handbook",)
    assert "knowledge_bases" not in body


def test_no_plan_without_knowledge_bases_or_for_other_operations() -> None:
    assert plan(alias(), {"messages": []}, chat=True) is None
    assert plan(alias(knowledge_bases=("hr",)), {"input": "x"}, chat=False) is None


@pytest.mark.parametrize("value", ["hr", [1], [""], ["x" * 201], ["a"] * 11, None])
def test_plan_refuses_a_malformed_field(value: Any) -> None:
    body: dict[str, Any] = {"messages": [], "knowledge_bases": value}
    if value is None:
        assert plan(alias(), body, chat=True) is None
        return
    with pytest.raises(InvalidRequest) as caught:
        plan(alias(), body, chat=True)
    assert caught.value.param == "knowledge_bases"


def test_plan_refuses_knowledge_bases_on_embeddings() -> None:
    with pytest.raises(InvalidRequest):
        plan(alias(), {"input": "x", "knowledge_bases": ["hr"]}, chat=False)


def test_alias_retrieval_settings_travel_with_the_plan() -> None:
    settings = RetrievalConfig(top_k=2, on_error="answer")
    found = plan(alias(knowledge_bases=("hr",), retrieval=settings), {"messages": []}, chat=True)
    assert found is not None
    assert found.retrieval.top_k == 2
