"""prefarena.rendering: Markdown to HTML under the one sanitiser policy (guidelines, prompts, responses)."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.template import Context, Template

from prefarena import rendering
from tests.xss_payloads import PAYLOADS


class Elements(HTMLParser):
    """Every element and attribute a browser would build from the HTML (escaped text builds none)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def elements(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser.found


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("render", [rendering.text_to_html, rendering.markdown_to_safe_html])
def test_no_payload_leaves_an_active_element_attribute_or_url(render, payload):
    html = render(payload)
    for tag, attrs in elements(html):
        assert tag in rendering.TAGS and tag != "img", html
        for name, value in attrs:
            assert not name.startswith("on") and name not in {"style", "src", "action", "formaction"}, html
            if name == "href":
                assert urlsplit(value or "").scheme in {"", "http", "https", "mailto"}, html
            if name == "class":
                assert set((value or "").split()) <= rendering.CLASSES.get(tag, set()), html
    assert "<script" not in html.lower()


def test_markdown_renders_headings_lists_tables_and_highlighted_code():
    text = (
        "# Title\n\n- one\n- two\n\n1. first\n2. second\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```python\ndef f(x):\n    return x\n```\n\n**bold** and `code`"
    )
    html = rendering.text_to_html(text)
    assert "<h1>Title</h1>" in html
    assert "<ul>\n<li>one</li>" in html and "<ol>" in html
    assert "<table>" in html and "<th>a</th>" in html and "<td>1</td>" in html
    assert '<div class="codehilite"><pre>' in html
    assert '<span class="k">def</span>' in html  # Pygments' keyword class survives the sanitiser
    assert '<span class="nf">f</span>' in html
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html


def test_raw_html_in_model_text_is_shown_as_text_while_guidelines_keep_allowed_tags():
    text = "<b>bold</b> <img src=x onerror=alert(1)>"
    assert rendering.text_to_html(text) == "<p>&lt;b&gt;bold&lt;/b&gt; &lt;img src=x onerror=alert(1)&gt;</p>"
    assert rendering.markdown_to_safe_html(text) == "<p><b>bold</b> </p>"


def test_only_highlighting_classes_survive():
    html = rendering.markdown_to_safe_html('<p><span class="k evil">x</span></p>\n\n<div class="codehilite x">y</div>')
    assert html == '<p><span class="k">x</span></p>\n\n<div class="codehilite">y</div>'


def test_links_keep_http_and_get_noopener():
    html = rendering.text_to_html("[site](https://example.org) <https://example.org/a>")
    assert '<a href="https://example.org" rel="noopener noreferrer">site</a>' in html
    assert '<a href="https://example.org/a" rel="noopener noreferrer">' in html


def test_prompt_messages_each_rendered_and_a_string_prompt_is_one_message():
    assert rendering.prompt_to_html("**hi**") == [{"role": "", "html": "<p><strong>hi</strong></p>"}]
    messages = rendering.prompt_to_html(
        [
            {"role": "system", "content": "<script>x</script>"},
            {"role": "user", "content": [{"type": "text", "text": "*a*"}, {"type": "text", "text": "b"}]},
        ]
    )
    assert messages == [
        {"role": "system", "html": "<p>&lt;script&gt;x&lt;/script&gt;</p>"},
        {"role": "user", "html": "<p><em>a</em>\nb</p>"},
    ]


def test_empty_and_none_render_to_nothing():
    assert rendering.text_to_html("") == ""
    assert rendering.text_to_html(None) == ""


def test_template_filter_renders_a_models_text_with_html_escaped():
    template = Template("{% load prefarena_markdown %}{{ text|text_markdown }}")
    html = template.render(Context({"text": "**yes** <script>window.pwned = 1</script>"}))
    assert html == "<p><strong>yes</strong> &lt;script&gt;window.pwned = 1&lt;/script&gt;</p>"
