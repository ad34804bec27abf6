"""The page's data as it sits in a <script> element: no text from a trace can close the element or open
another, whatever it holds; the data is given back as it was by a JSON parser."""

from __future__ import annotations

import json
import re

import pytest

from rlm_mcp.viewer.events import clean_event
from rlm_mcp.viewer.page import embedded_json, render

HOSTILE = "</script><script>alert(1)</script><!-- & &amp; -->\u2028\ud800"


def test_embedded_json_escapes_every_angle_bracket_and_ampersand() -> None:
    value = {"<key>": [HOSTILE, "a > b && c < d"], "n": 1}
    text = embedded_json(value)
    assert not set("<>&") & set(text)
    assert text.isascii()  # a lone surrogate stays an escape, a line separator too
    assert "\\u003c/script\\u003e" in text and "\\u0026amp;" in text
    assert json.loads(text) == value


def test_embedded_json_refuses_a_number_no_json_parser_reads() -> None:
    with pytest.raises(ValueError):
        embedded_json({"x": float("nan")})


def test_a_hostile_trace_cannot_add_an_element_to_the_page() -> None:
    event, _ = clean_event({"id": 1, "type": "cell", "code": HOSTILE, "stdout": HOSTILE, "name": HOSTILE})
    assert event is not None
    clean = render([], "plain")
    hostile = render([event], HOSTILE, problems=[HOSTILE])
    assert hostile.count("</script") == clean.count("</script") and hostile.count("<script") == clean.count("<script")
    assert hostile.count("<!--") == clean.count("<!--")
    data = re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', hostile, re.DOTALL)
    assert data is not None
    parsed = json.loads(data.group(1))
    assert parsed["events"] == [event] and parsed["problem_count"] == 0


def test_each_page_has_its_own_nonce_and_a_policy_that_allows_nothing_else() -> None:
    first, second = render([], "t"), render([], "t")
    nonces = [re.findall(r'<script nonce="([\w-]+)">', page)[0] for page in (first, second)]
    assert nonces[0] != nonces[1] and len(nonces[0]) >= 24
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', first)
    assert policy is not None
    assert policy.group(1).startswith("default-src &#x27;none&#x27;; script-src &#x27;nonce-" + nonces[0])
    assert f'<style nonce="{nonces[0]}">' in first
