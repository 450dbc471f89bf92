"""Model output with NUL characters is stored, not lost to a database error."""

from __future__ import annotations

import pytest

from annotations.models import Prompt
from prefarena.text import storable


def test_storable_replaces_nul_only():
    assert storable("plain") == "plain"
    assert storable("a\x00b\x00") == "a\ufffdb\ufffd"


@pytest.mark.django_db
def test_generated_text_with_nul_is_stored(tiny_models):
    from models_hub.services import model_register
    from workers import runners
    from workers.ml.types import Completion
    from workers.models import GenerationJob, GenerationOutput

    model = model_register(name="m", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"]))
    prompt = Prompt.objects.create(content="hi")
    job = GenerationJob.objects.create(progress_total=1)
    runners._generation_store(job, model, [runners.Sample(prompt, 0, Completion("bad\x00byte", 1, 2, "stop"), seed=0)])
    assert GenerationOutput.objects.get(job=job).response.text == "bad\ufffdbyte"
