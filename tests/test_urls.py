"""URL names: a page and an API route never share one (`{% url %}` of a page would otherwise link to JSON)."""

from __future__ import annotations

from collections import Counter

from django.urls import URLPattern, URLResolver, get_resolver


def names(patterns: list, prefix: str = "", namespace: str = "") -> list[tuple[str, str]]:
    """(name as `reverse` takes it, route) of every named URL."""
    found: list[tuple[str, str]] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            found += names(entry.url_patterns, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern) and entry.name:
            found.append((namespace + entry.name, prefix + str(entry.pattern)))
    return found


def test_no_page_shares_its_url_name_with_another_page_or_an_api_route() -> None:
    routes = names(get_resolver().url_patterns)
    pages = Counter(name for name, route in routes if not route.startswith("api/"))
    api = {name for name, route in routes if route.startswith("api/")}  # the router's names repeat (format twins)
    assert sorted(name for name, count in pages.items() if count > 1) == []
    assert sorted(name for name in pages if name in api) == []
