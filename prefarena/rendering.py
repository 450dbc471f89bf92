"""Text shown as HTML: Markdown rendered, code highlighted by Pygments, then sanitised by nh3. One policy.

Every HTML the pages show from stored text comes from here: campaign guidelines (the `markdown` template
filter), and prompts and model responses (the annotation lease's and the arena battle's `html` fields, the
arena's streamed `battle.text` events). The browser only inserts these strings; it never turns text into HTML.

Two inputs, one sanitiser:
- **Guidelines** (`markdown_to_safe_html`), written by campaign managers, may hold raw HTML; it is kept when
  the allow-list keeps it.
- **Prompts and responses** (`text_to_html`) are written by users and models. Raw HTML in them is escaped
  before rendering (shown as the text it is: a model writing `<div>` means the characters), so only the
  Markdown syntax makes elements.

Both then pass `nh3.clean` with `TAGS` (nh3's allow-list minus `<img>`: an image would load from any outside
host on every annotator's page) and `CLASSES` (only the classes Pygments' highlighter writes, on `span`, and
`codehilite` on its `div`): no `<script>`, no event handler, no `style`, no `javascript:` URL survives, whatever
the Markdown held. Links get `rel="noopener noreferrer"`. The highlighting's colours are
`static/css/pygments.css` (made by `HtmlFormatter().get_style_defs(".codehilite")`).
"""

from __future__ import annotations

import threading
from typing import Any

import markdown
import nh3
from pygments.token import STANDARD_TYPES

TAGS: set[str] = set(nh3.ALLOWED_TAGS) - {"img"}
# Pygments' short token classes ("k", "nf", "s1", …); "" is the plain-text token's.
CLASSES: dict[str, set[str]] = {
    "span": {css for css in STANDARD_TYPES.values() if css},
    "div": {"codehilite"},
}

_EXTENSIONS = ["extra", "sane_lists", "codehilite"]
_EXTENSION_CONFIGS = {"codehilite": {"guess_lang": False, "css_class": "codehilite"}}

# A Markdown instance is not thread-safe (it keeps state between blocks); building one costs ~1 ms.
_local = threading.local()


def _renderer(allow_html: bool) -> markdown.Markdown:
    attribute = "with_html" if allow_html else "without_html"
    renderer = getattr(_local, attribute, None)
    if renderer is None:
        renderer = markdown.Markdown(extensions=_EXTENSIONS, extension_configs=_EXTENSION_CONFIGS)
        if not allow_html:
            # Raw HTML blocks and inline tags are then plain text, escaped on output like any other text.
            renderer.preprocessors.deregister("html_block")
            renderer.inlinePatterns.deregister("html")
        setattr(_local, attribute, renderer)
    return renderer


def sanitise(html: str) -> str:
    """The one sanitiser policy: nh3 with `TAGS` and `CLASSES`."""
    return nh3.clean(html, tags=TAGS, allowed_classes=CLASSES)


def _render(text: str, *, allow_html: bool) -> str:
    renderer = _renderer(allow_html)
    try:
        return sanitise(renderer.convert(text))
    finally:
        renderer.reset()


def markdown_to_safe_html(text: str | None) -> str:
    """Guidelines: Markdown with raw HTML allowed where the allow-list keeps it, sanitised."""
    return _render(text or "", allow_html=True)


def text_to_html(text: str | None) -> str:
    """A prompt or a response: Markdown rendered (raw HTML escaped), code highlighted, sanitised."""
    return _render(text or "", allow_html=False)


def content_text(content: Any) -> str:
    """One message's content as text: a string, or OpenAI-style parts `[{"type": "text", "text": ...}, ...]`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Image parts are not text: the pages show them beside it (annotations.selectors.prompt_html).
        return "\n".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part)
            for part in content
            if not (isinstance(part, dict) and part.get("type") == "image_url")
        )
    return "" if content is None else str(content)


def prompt_to_html(prompt: Any) -> list[dict[str, str]]:
    """A stored prompt (a string, or a list of `{role, content}` messages) as `[{"role", "html"}]`; a string
    prompt is one message with role ""."""
    if isinstance(prompt, list):
        messages = []
        for message in prompt:
            if isinstance(message, dict):
                messages.append(
                    {"role": str(message.get("role") or ""), "html": text_to_html(content_text(message.get("content")))}
                )
            else:
                messages.append({"role": "", "html": text_to_html(content_text(message))})
        return messages
    return [{"role": "", "html": text_to_html(content_text(prompt))}]
