"""User-controlled text, made safe to show: run, layer, class, metric and split
names, config keys and values, event details and finding text that quotes them.

Streamlit renders Markdown in ``st.title``, ``st.markdown``, ``st.caption``,
alerts, and in the labels of expanders, tabs, page links, metrics and radio
options; plotly renders a subset of HTML (``<a href>``, ``<b>``, ``<br>``, …)
in titles, legends, axis and tick labels and hover text. A run named
``![x](http://host/beacon)`` would make every viewer's browser fetch that URL.
Every user string goes through :func:`plain` (Markdown) or :func:`plotly_text`
(plotly) at the line that shows it. Pure functions: no Streamlit, no plotly.
"""

from __future__ import annotations

import html
import re

# CommonMark lets a backslash escape any ASCII punctuation character, which then
# stands for itself: no emphasis, link, image, code, heading, list, table, HTML,
# KaTeX ($), or Streamlit directive (:red[…], :material/…:, :emoji:) can start.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# GFM still turns bare URLs, www. names and e-mail addresses into links, because
# its autolink pass runs on the text after escapes are resolved. It links only
# when the URL follows a space or punctuation, or the address's "@" follows
# its user name: an invisible WORD JOINER (U+2060) there leaves plain text.
_AUTOLINK_STARTS = re.compile(r"(?i)(https?|www|@)")
WORD_JOINER = "\u2060"
# A label is one line: a line break would start a new Markdown block.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def plain(text: object) -> str:
    r"""``text`` as Markdown that renders as exactly that text, on one line.

    Example:
        >>> print(plain("**bold** ![x](y)"))
        \*\*bold\*\* \!\[x\]\(y\)
    """
    # Leading spaces would make an indented code block.
    text = _CONTROL_CHARACTERS.sub(" ", str(text)).strip()
    # The word joiner goes in first: between a backslash and the character it
    # escapes it would turn the backslash into a visible one.
    text = _AUTOLINK_STARTS.sub(WORD_JOINER + r"\1", text)
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


# Rule ids and similar names shown in code font: a backtick inside would end
# the code span early, and a line break would end the line.
_CODE_SAFE = re.compile(r"[A-Za-z0-9_.\-/ ]+")


def inline_code(text: object) -> str:
    r"""``text`` in code font when that shows it as it is, else :func:`plain` text.

    Example:
        >>> print(inline_code("loss_spike"), inline_code("a`b"))
        `loss_spike` a\`b
    """
    text = str(text)
    return f"`{text}`" if _CODE_SAFE.fullmatch(text) else plain(text)


def plotly_text(text: object) -> str:
    """``text`` for a plotly title, legend, axis, tick or hover label: ``<``,
    ``>`` and ``&`` as entities, which plotly shows as the characters.

    Example:
        >>> plotly_text("<a href='http://x'>a & b</a>")
        "&lt;a href='http://x'&gt;a &amp; b&lt;/a&gt;"
    """
    return html.escape(str(text), quote=False)
