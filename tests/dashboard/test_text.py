"""User text made safe to show (dashboard/app/text.py), against a CommonMark parser and plotly's rules."""

from __future__ import annotations

import pytest

from traindoctor.dashboard.app.text import WORD_JOINER, inline_code, plain, plotly_text

HOSTILE = {
    "image-beacon": "![x](http://127.0.0.1:9/beacon) **bold** <img src=x onerror=alert(1)>",
    "link": "[click](https://example.com) <https://example.com>",
    "html-and-entities": "<b>b</b> &amp; &#60;script&#62;",
    "heading": "# heading",
    "list": "1. one",
    "quote-and-table": "> q | a | b |",
    "code": "`code` ```fence```",
    "katex": "$x^2$ and $$y$$",
    "streamlit-directives": ":red[red] :smile: :material/home: :small[s]",
    "backslashes": "a\\b \\* \\",
    "autolinks": "www.example.com http://auto.example mail@example.com",
    "line-breaks": "one\n\n# two\r\nthree\tfour",
    "indented": "    indented code",
}


def shown(text: str) -> str:
    """What a reader should see: the text on one line."""
    return " ".join(text.split())


def html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_plain_renders_as_exactly_its_text(text):
    """The oracle is a CommonMark parser with GFM's tables and strikethrough: one paragraph of
    text, no element. (GFM autolinks and Streamlit's directives are checked in Chromium by
    tests/dashboard/test_browser.py.)"""
    markdown_it = pytest.importorskip("markdown_it")
    parser = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
    rendered = parser.render(plain(text)).replace(WORD_JOINER, "")
    assert rendered == f"<p>{html_text(shown(text))}</p>\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("http://x", WORD_JOINER + "http\\:\\/\\/x"),
    ("WWW.x", WORD_JOINER + "WWW\\.x"),
    ("a@b.c", "a" + WORD_JOINER + "\\@b\\.c"),
], ids=["url", "www", "email"])
def test_plain_breaks_gfm_autolinks_with_an_invisible_word_joiner(text, expected):
    assert plain(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("loss_spike", "`loss_spike`"),
    ("my.rule-2", "`my.rule-2`"),
    ("a`b", plain("a`b")),
    ("![x](y)", plain("![x](y)")),
], ids=["rule-id", "dotted", "backtick", "markdown"])
def test_inline_code_only_when_the_code_span_shows_the_text(text, expected):
    assert inline_code(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("<a href='http://x'>a</a>", "&lt;a href='http://x'&gt;a&lt;/a&gt;"),
    ("a & b <br> c", "a &amp; b &lt;br&gt; c"),
    ("&lt;", "&amp;lt;"),
    ("plain", "plain"),
], ids=["link", "break", "entity", "plain"])
def test_plotly_text_escapes_the_characters_plotly_reads_as_html(text, expected):
    assert plotly_text(text) == expected
