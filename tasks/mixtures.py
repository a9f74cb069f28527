"""Muppet mixtures. Rates are proportional to train-split size (`muppet_jax.data.mixing`).

- `muppet_roberta`: the 42 non-summarization catalog tasks; `muppet_bart`: all 46.
- One per family: `muppet_classification` (incl. STS-B regression), `muppet_commonsense`,
  `muppet_mrc`, `muppet_summarization`.
- The task-count series `muppet_roberta_n10` ... `_n40`: nested subsets (each a superset of the
  previous), all holding the paper's evaluation tasks MNLI, STS-B, BoolQ, RACE and SQuAD, and
  spanning the three RoBERTa families from n10 on.
- `muppet_demo`: the offline demo suite but `demo_review`, which the demo fine-tuning targets;
  `muppet_demo_n2`, `muppet_demo_n4`: its task-count series for the demo study, whose tasks
  related to `demo_review` (sentiment and similarity, about the same adjectives) come second.
"""

from __future__ import annotations

from muppet_jax.data import demo
from muppet_jax.data import mixing
from tasks import catalog

EVALUATION_TASKS = ("glue_mnli", "glue_stsb", "super_glue_boolq", "race", "squad")
# The order in which the task-count series adds tasks: evaluation tasks first, then rounds that
# take from every family in turn.
SCALING_ORDER = EVALUATION_TASKS + (
    "glue_qqp", "hellaswag", "newsqa", "glue_sst2", "snli",
    "commonsense_qa", "triviaqa", "glue_qnli", "anli_r1", "cosmos_qa",
    "ag_news", "searchqa", "piqa", "paws", "yelp_polarity",
    "winogrande", "hotpotqa", "imdb", "glue_cola", "anli_r2",
    "natural_questions", "openbookqa", "glue_mrpc", "scitail", "dbpedia14",
    "arc", "anli_r3", "super_glue_multirc", "qasc", "trec",
    "glue_rte", "copa", "super_glue_wic", "super_glue_cb", "sentiment140",
    "civil_comments", "glue_wnli",
)
SCALING_SIZES = (10, 15, 20, 25, 30, 35, 40)
DEMO_SCALING_ORDER = ("demo_topic", "demo_choice", "demo_sentiment", "demo_similarity")

_FAMILY_MIXTURES = {
    "muppet_classification": ("classification", "regression"),
    "muppet_commonsense": ("multiple_choice",),
    "muppet_mrc": ("span",),
    "muppet_summarization": ("summarization",),
}


def _register() -> None:
  entries = catalog.entries()
  mixing.add_mixture("muppet_bart", [e.name for e in entries])
  mixing.add_mixture("muppet_roberta",
                     [e.name for e in entries if e.info.family != "summarization"])
  for name, families in _FAMILY_MIXTURES.items():
    mixing.add_mixture(name, [e.name for e in entries if e.info.family in families])
  for n in SCALING_SIZES:
    mixing.add_mixture(f"muppet_roberta_n{n}", SCALING_ORDER[:n])
  mixing.add_mixture("muppet_demo", demo.PREFINETUNING_TASKS)
  for n in (2, 4):
    mixing.add_mixture(f"muppet_demo_n{n}", DEMO_SCALING_ORDER[:n])


_register()
