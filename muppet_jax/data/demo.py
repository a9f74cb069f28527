"""The offline demo suite: generated, deterministic, learnable tasks of all four families, and a
byte-level BPE tokenizer trained on them (cached on first use).

Each generator draws from templates with a fixed seed per (task, split), so every machine sees the
same examples. The tasks are easy on purpose: a small model beats chance by a wide margin within
a few hundred CPU steps, which makes the demo a smoke test of the whole pipeline.
"""

from __future__ import annotations

import functools
import os
import pathlib
import random
import shutil
import tempfile
from typing import Any, Callable

NAMES = ["anna", "ben", "carla", "dev", "emma", "felix", "gina", "hugo", "iris", "jonas",
         "kira", "leo", "maya", "nils", "olga", "paul"]
CITIES = ["paris", "lima", "oslo", "cairo", "tokyo", "delhi", "quito", "rome", "seoul", "dakar",
          "perth", "hanoi"]
ITEMS = ["apples", "books", "chairs", "lamps", "pens", "shirts", "cups", "maps"]
PLACES = ["market", "station", "library", "harbor", "museum", "bakery"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "foggy"]
POSITIVE = ["great", "wonderful", "superb", "lovely", "brilliant", "delightful", "excellent"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "poor", "dull", "horrible"]
SUBJECTS = ["movie", "meal", "concert", "book", "hotel", "game", "show"]
FILLERS = ["honestly", "i think", "to be fair", "overall", "in my view", "as expected", "sadly",
           "luckily", "again"]
TOPICS = {
    "sports": ["goal", "match", "team", "coach", "league", "score", "stadium", "player"],
    "politics": ["vote", "senate", "minister", "election", "policy", "party", "law", "debate"],
    "science": ["atom", "theory", "lab", "experiment", "cell", "galaxy", "energy", "data"],
    "food": ["soup", "bread", "spice", "recipe", "oven", "cheese", "salad", "dessert"],
}
COLORS = {"banana": "yellow", "cherry": "red", "lime": "green", "plum": "purple",
          "orange": "orange", "coconut": "brown", "blueberry": "blue", "lemon": "yellow",
          "grape": "purple", "kiwi": "green", "strawberry": "red", "fig": "brown"}
CHOICE_COLORS = sorted(set(COLORS.values()))
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine"]

Example = dict[str, Any]


def _sentiment(rng: random.Random) -> Example:
  label = rng.randrange(2)
  adjective = rng.choice(POSITIVE if label else NEGATIVE)
  text = f"{rng.choice(FILLERS)} , the {rng.choice(SUBJECTS)} was {adjective} ."
  if rng.random() < 0.5:
    text = f"{text} {rng.choice(NAMES)} saw it in {rng.choice(CITIES)} ."
  return {"text_a": text, "text_b": "", "label": label}


def _topic(rng: random.Random) -> Example:
  label = rng.randrange(len(TOPICS))
  words = rng.sample(TOPICS[sorted(TOPICS)[label]], 3) + [rng.choice(NAMES), rng.choice(CITIES)]
  rng.shuffle(words)
  return {"text_a": "news : " + " ".join(words) + " .", "text_b": "", "label": label}


def _entailment(rng: random.Random) -> Example:
  """0 entailment, 1 neutral, 2 contradiction (MNLI's order); the hypothesis's wording decides,
  as in the annotation artifacts of real NLI data, so that a small model learns it quickly."""
  a, b = rng.sample(NAMES, 2)
  number, item, other = rng.choice(NUMBERS), *rng.sample(ITEMS, 2)
  premise = f"{a} has {number} {item} and {b} went to the {rng.choice(PLACES)} ."
  label = rng.randrange(3)
  hypothesis = rng.choice([
      [f"{a} has some {item} .", f"{a} owns {item} .", f"there are {item} ."],
      [f"{a} wants more {other} .", f"{b} might like {other} .", f"{a} may sell {item} ."],
      [f"{a} has no {item} .", f"{a} never had {item} .", f"nobody has {item} ."],
  ][label])
  return {"text_a": premise, "text_b": hypothesis, "label": label}


def _similarity(rng: random.Random) -> Example:
  """Score (0..5) = how many of the pair's words are positive adjectives."""
  score = rng.randrange(6)
  words = rng.sample(POSITIVE, min(score, len(POSITIVE))) + rng.sample(
      ITEMS + PLACES + WEATHER, 8 - score)
  rng.shuffle(words)
  return {"text_a": " ".join(words[:4]), "text_b": " ".join(words[4:]), "label": float(score)}


def _review(rng: random.Random) -> Example:
  """0 negative, 1 mixed, 2 positive: the two adjectives' polarities decide. Held out of the demo
  pre-finetuning, whose sentiment and similarity tasks teach those polarities."""
  label = rng.randrange(3)
  first, second = [(NEGATIVE, NEGATIVE), (POSITIVE, NEGATIVE), (POSITIVE, POSITIVE)][label]
  adjectives = [rng.choice(first), rng.choice(second)]
  rng.shuffle(adjectives)
  return {"text_a": f"{rng.choice(NAMES)} found the {rng.choice(SUBJECTS)} {adjectives[0]} and "
                    f"the {rng.choice(SUBJECTS)} {adjectives[1]} .",
          "text_b": "", "label": label}


def _choice(rng: random.Random) -> Example:
  fruit = rng.choice(sorted(COLORS))
  wrong = rng.sample([c for c in CHOICE_COLORS if c != COLORS[fruit]], 3)
  label = rng.randrange(4)
  choices = wrong[:label] + [COLORS[fruit]] + wrong[label:]
  return {"context": f"{rng.choice(NAMES)} eats a {fruit} . what color is the {fruit} ?",
          "choices": choices, "label": label}


def _span(rng: random.Random) -> Example:
  """The asked-about person is the only one who "lives in" a city; the other sentences mention
  other cities, so the answer is found from its context."""
  who, other = rng.sample(NAMES, 2)
  home, *elsewhere = rng.sample(CITIES, 3)
  sentences = [f"{who} lives in {home} .", f"{other} works in {elsewhere[0]} .",
               f"the weather in {elsewhere[1]} is {rng.choice(WEATHER)} ."]
  rng.shuffle(sentences)
  context = " ".join(sentences)
  start = context.index(f"{who} lives in {home}") + len(f"{who} lives in ")
  return {"question": f"where does {who} live ?", "context": context,
          "answer_start": start, "answer_text": home}


def _summarize(rng: random.Random) -> Example:
  who, item, place = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(PLACES)
  document = (f"it was {rng.choice(WEATHER)} in {rng.choice(CITIES)} . {who} went to the {place}"
              f" and bought {rng.choice(NUMBERS)} {item} . {rng.choice(FILLERS)} , the "
              f"{rng.choice(SUBJECTS)} was {rng.choice(POSITIVE + NEGATIVE)} .")
  return {"document": document, "summary": f"{who} bought {item} at the {place} ."}


# name -> (family, classes or choices, generator, train size, validation size)
DEMO_TASKS: dict[str, tuple[str, int, Callable[[random.Random], Example], int, int]] = {
    "demo_sentiment": ("classification", 2, _sentiment, 3000, 200),
    "demo_topic": ("classification", 4, _topic, 2400, 200),
    "demo_entailment": ("classification", 3, _entailment, 3200, 300),
    "demo_similarity": ("regression", 1, _similarity, 1500, 200),
    "demo_choice": ("multiple_choice", 4, _choice, 2000, 200),
    "demo_span": ("span", 1, _span, 2500, 200),
    "demo_summarize": ("summarization", 1, _summarize, 6000, 200),
    "demo_review": ("classification", 3, _review, 600, 300),
}
# Left out of the demo pre-finetuning (and of its tokenizer's corpus, whose words it reuses): the
# target of the demo fine-tuning and study.
HELD_OUT = ("demo_review",)
PREFINETUNING_TASKS = tuple(t for t in DEMO_TASKS if t not in HELD_OUT)


@functools.lru_cache(maxsize=None)
def examples(task: str, split: str) -> tuple[Example, ...]:
  """The examples of a demo task's split; the same on every machine."""
  _, _, generate, train_size, validation_size = DEMO_TASKS[task]
  size = train_size if split == "train" else validation_size
  rng = random.Random(f"{task}/{split}")
  return tuple(generate(rng) for _ in range(size))


def _corpus() -> list[str]:
  texts = []
  for task in PREFINETUNING_TASKS:
    for ex in examples(task, "train"):
      texts.extend(str(v) for v in ex.values() if isinstance(v, str))
      texts.extend(ex.get("choices", ()))
  return texts


TOKENIZER_DIR = "demo_tokenizer_v3"  # Bump when the demo texts change.


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("MUPPET_JAX_CACHE", "~/.cache/muppet_jax")).expanduser()


def tokenizer_path() -> pathlib.Path:
  """A RoBERTa-style byte-level BPE tokenizer for the demo, trained and saved on first use."""
  path = cache_dir() / TOKENIZER_DIR
  if (path / "tokenizer.json").exists():
    return path
  import tokenizers
  import transformers

  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(_corpus(), vocab_size=1000, min_frequency=2,
                          special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
  tokenizer = transformers.RobertaTokenizerFast(tokenizer_object=bpe._tokenizer,
                                                model_max_length=512)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=".demo_tokenizer."))
  try:
    tokenizer.save_pretrained(tmp)
    tmp.rename(path)
  except OSError:  # Another process cached it first.
    shutil.rmtree(tmp, ignore_errors=True)
  return path
