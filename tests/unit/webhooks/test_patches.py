"""The JSON Patch builders produce operations that apply to the document they were built for."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.unit.webhooks.helpers import apply_patch
from webhooks import patches


def test_pointer_tokens_escape_tilde_before_slash() -> None:
    assert patches.escape("qss.dev/inject-status") == "qss.dev~1inject-status"
    assert patches.escape("a~/b") == "a~0~1b"
    assert patches.pointer("metadata", "annotations", "x/y~z") == "/metadata/annotations/x~1y~0z"
    assert patches.pointer("spec", "containers", 3) == "/spec/containers/3"


def test_append_creates_an_absent_or_empty_list_whole_and_appends_to_one_that_has_items() -> None:
    docs: list[dict[str, Any]] = [{"spec": {}}, {"spec": {"volumes": []}}]
    for doc in docs:
        ops = patches.append(
            "/spec/volumes", doc["spec"].get("volumes"), [{"name": "a"}, {"name": "b"}]
        )
        assert ops == [
            {"op": "add", "path": "/spec/volumes", "value": [{"name": "a"}, {"name": "b"}]}
        ]
        assert apply_patch(doc, ops)["spec"]["volumes"] == [{"name": "a"}, {"name": "b"}]
    doc = {"spec": {"volumes": [{"name": "x"}]}}
    ops = patches.append("/spec/volumes", doc["spec"]["volumes"], [{"name": "a"}])
    assert ops == [{"op": "add", "path": "/spec/volumes/-", "value": {"name": "a"}}]
    assert patches.append("/spec/volumes", [], []) == []


def test_insert_first() -> None:
    doc = {"spec": {"initContainers": [{"name": "x"}]}}
    ops = patches.insert_first("/spec/initContainers", doc["spec"]["initContainers"], {"name": "s"})
    assert apply_patch(doc, ops)["spec"]["initContainers"] == [{"name": "s"}, {"name": "x"}]
    assert patches.insert_first("/spec/initContainers", None, {"name": "s"}) == [
        {"op": "add", "path": "/spec/initContainers", "value": [{"name": "s"}]}
    ]


def test_set_annotation_creates_the_map_or_sets_the_key_and_skips_what_is_set() -> None:
    assert patches.set_annotation(None, "qss.dev/x", "1") == [
        {"op": "add", "path": "/metadata/annotations", "value": {"qss.dev/x": "1"}}
    ]
    doc = {"metadata": {"annotations": {"other": "y"}}}
    ops = patches.set_annotation(doc["metadata"]["annotations"], "qss.dev/x", "1")
    assert apply_patch(doc, ops)["metadata"]["annotations"] == {
        "other": "y",
        "qss.dev/x": "1",
    }
    assert patches.set_annotation({"qss.dev/x": "1"}, "qss.dev/x", "1") == []


def test_encode_is_base64_of_the_json_list() -> None:
    ops = [patches.replace("/a", 1)]
    assert json.loads(base64.b64decode(patches.encode(ops))) == [
        {"op": "replace", "path": "/a", "value": 1}
    ]
