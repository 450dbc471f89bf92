"""Every write of the annotation workflow, each in one transaction; one module per concern, names re-exported here.

- `campaigns.py`: campaigns (validated create and update), guidelines, members;
- `items.py`: items imported from validated rows or made from generated responses, with their slot rows;
- `leases.py`: the lease queue (the next item, skips, the reaper of expired leases);
- `judgments.py`: a person's judgment, and external (LLM, reward-model, arena) judgments in bulk;
- `review.py`: the review queue (items whose labels disagree), reviewers' claims and adjudications.
- `images.py`: images stored once by their hash (validated by annotations/images.py).

Concurrency rules (ARCHITECTURE.md): leases take slot rows with SELECT ... FOR UPDATE SKIP LOCKED;
submissions lock the item row so "item done" is decided by exactly one transaction; constraints,
not Python checks, keep overlap <= k and one human judgment per (item, annotator).
"""

from annotations.services.campaigns import (
    campaign_create,
    campaign_update,
    guidelines_publish,
    membership_remove,
    membership_set,
)
from annotations.services.images import image_store, image_store_decoded
from annotations.services.items import IMPORT_BATCH, items_create_from_responses, items_exclude, items_import
from annotations.services.judgments import (
    ExternalJudgment,
    judgment_record_external,
    judgment_submit,
    judgments_record_external,
)
from annotations.services.leases import assignment_leases_reap, item_lease_next, item_skip
from annotations.services.review import (
    ReviewEntry,
    ReviewScanCounts,
    review_adjudicate,
    review_claim_next,
    review_item_consider,
    review_item_recheck,
    review_release,
    review_scan,
)

__all__ = [
    "IMPORT_BATCH",
    "ExternalJudgment",
    "ReviewEntry",
    "ReviewScanCounts",
    "assignment_leases_reap",
    "campaign_create",
    "campaign_update",
    "guidelines_publish",
    "image_store",
    "image_store_decoded",
    "item_lease_next",
    "item_skip",
    "items_create_from_responses",
    "items_exclude",
    "items_import",
    "judgment_record_external",
    "judgment_submit",
    "judgments_record_external",
    "membership_remove",
    "membership_set",
    "review_adjudicate",
    "review_claim_next",
    "review_item_consider",
    "review_item_recheck",
    "review_release",
    "review_scan",
]
