"""`{{ text|markdown }}`: Markdown rendered to HTML, then sanitised with nh3 (Ammonia).

Guidelines are written by campaign managers, but they are shown to every annotator, so the HTML
is cleaned with an allow-list after rendering: raw `<script>`, event handlers and `javascript:`
URLs never reach the page, whatever the Markdown contained.
"""

from __future__ import annotations

import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


# nh3's default allow-list minus <img>: an image in the guidelines would load from any outside host
# on every annotator's page (tracking), and guidelines are text.
ALLOWED_TAGS = nh3.ALLOWED_TAGS - {"img"}


def markdown_to_safe_html(text: str | None) -> SafeString:
    """Render Markdown and sanitise the HTML; safe to output without further escaping."""
    html = markdown_lib.markdown(text or "", extensions=["extra", "sane_lists"], output_format="html")
    # Only nh3's output is marked safe: it parses the HTML and keeps its allow-list of tags/attributes.
    return mark_safe(nh3.clean(html, tags=ALLOWED_TAGS))  # noqa: S308


register.filter("markdown", markdown_to_safe_html)
