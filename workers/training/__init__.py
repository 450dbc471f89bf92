"""The training home: runs, retraining policies, their REST, pages and the worker side.

- `services.py`: every write (create, cancel, register a version, promote, policies); validation of configs.
- `data.py`: a snapshot's rows as training examples.
- `runner.py`: a run inside a gpu worker (train, publish the weights atomically, evaluate, register).
- `evaluation.py`: held-out accuracy, samples and judged battles of a trained version.
- `policies.py`: retraining policies fired by beat; the reaper of runs.
- `api.py`, `views.py`: REST of runs and policies; the Training pages (runs list, start-a-run form, run page).
- `forms.py`: the start-a-run form, one typed field per TrainingConfig field, checked by the REST API's code.
- `lineage.py`, `model_views.py`: the Models page (lineage tree, champion, rating, evaluation) and its actions.
- `urls.py`: the routes of the Models and Training pages.

Rows live in `workers/models.py` (`TrainingRun`, `RetrainPolicy`); pure statistics and the TRL code in `workers/ml/`.
"""
