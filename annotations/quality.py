"""Annotation quality: gold accuracy, inter-annotator agreement. (Being written.)"""

from __future__ import annotations

from typing import Any

from annotations.models import Campaign


def campaign_quality(campaign: Campaign) -> dict[str, Any]:
    return {}
