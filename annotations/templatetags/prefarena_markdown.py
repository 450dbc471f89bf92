"""`{{ text|markdown }}`: guidelines' Markdown, and `{{ text|text_markdown }}`: a prompt or a model's text (raw HTML
escaped), rendered and sanitised by `prefarena.rendering` (the one policy).

Guidelines are written by campaign managers, but they are shown to every annotator, so the HTML is cleaned
with an allow-list after rendering: raw `<script>`, event handlers and `javascript:` URLs never reach the page,
whatever the Markdown contained.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from prefarena import rendering

register = template.Library()


def markdown_to_safe_html(text: str | None) -> SafeString:
    """Render Markdown and sanitise the HTML; safe to output without further escaping."""
    # Only the sanitiser's output is marked safe: nh3 parses the HTML and keeps its allow-list.
    return mark_safe(rendering.markdown_to_safe_html(text))  # noqa: S308


def text_markdown(text: Any) -> SafeString:
    """A prompt or a response (a string, or OpenAI-style content parts) as sanitised HTML."""
    return mark_safe(rendering.text_to_html(rendering.content_text(text)))  # noqa: S308


register.filter("markdown", markdown_to_safe_html)
register.filter("text_markdown", text_markdown)
