"""Fake raw examples for every catalog dataset, written in that dataset's real TFDS feature spec
(field names, nesting, label encoding; the test checks them against the TFDS builder's spec), and
what the task must make of them."""

TEXT_A, TEXT_B = "the quick fox jumps", "a lazy dog sleeps"


def _glue(a="sentence1", b="sentence2", label=1):
  return {"idx": 0, "label": label, a: TEXT_A, **({b: TEXT_B} if b else {})}


def _cls(raw, label, texts=(TEXT_A, TEXT_B)):
  return [(raw, {"label": label, "contains": texts})]


_CIVIL = {"article_id": 1, "created_date": "2017", "id": "7", "identity_attack": 0.0,
          "insult": 0.1, "obscene": 0.0, "parent_id": 0, "parent_text": "", "publication_id": "2",
          "severe_toxicity": 0.0, "sexual_explicit": 0.0, "threat": 0.0}
_MRQA_CONTEXT = "[PAR] the river nile flows north through egypt ."


def _mrqa(subset):
  start = _MRQA_CONTEXT.index("egypt")
  return [({"answers": ["egypt"], "context": _MRQA_CONTEXT,
            "context_tokens": {"offsets": [0, 6], "tokens": ["[PAR]", "the"]},
            "detected_answers": [{"text": "egypt",
                                  "char_spans": [{"start": start, "end": start + 4}],
                                  "token_spans": [{"start": 7, "end": 7}]}],
            "qid": "q1", "question": "where does the nile flow ?",
            "question_tokens": {"offsets": [0], "tokens": ["where"]}, "subset": subset},
           {"answer": "egypt", "contains": ("where does the nile flow",)})]


FAKES = {
    "glue_cola": _cls(_glue("sentence", None), 1, (TEXT_A,)),
    "glue_sst2": _cls(_glue("sentence", None, 0), 0, (TEXT_A,)),
    "glue_mrpc": _cls(_glue(), 1),
    "glue_qqp": _cls(_glue("question1", "question2", 0), 0),
    "glue_stsb": [({"idx": 0, "label": 3.8, "sentence1": TEXT_A, "sentence2": TEXT_B},
                   {"score": 3.8, "contains": (TEXT_A, TEXT_B)})],
    "glue_mnli": _cls({"hypothesis": TEXT_B, "idx": 0, "label": 2, "premise": TEXT_A}, 2),
    "glue_qnli": _cls(_glue("question", "sentence"), 1),
    "glue_rte": _cls(_glue(label=0), 0),
    "glue_wnli": _cls(_glue(), 1),
    "super_glue_boolq": _cls({"idx": 0, "label": 1, "question": TEXT_A, "passage": TEXT_B}, 1),
    "super_glue_cb": _cls({"hypothesis": TEXT_B, "idx": 0, "label": 2, "premise": TEXT_A}, 2),
    "super_glue_wic": _cls({"end1": 3, "end2": 5, "idx": 0, "label": 1, "sentence1": TEXT_A,
                            "sentence2": TEXT_B, "start1": 0, "start2": 2, "word": "jump"}, 1,
                           ("jump: " + TEXT_A, TEXT_B)),
    "super_glue_multirc": _cls({"answer": "yes it does", "idx": {"answer": 0, "paragraph": 0,
                                                                "question": 0},
                                "label": 1, "paragraph": TEXT_A, "question": TEXT_B}, 1,
                               (TEXT_A, TEXT_B + " yes it does")),
    **{f"anli_r{r}": _cls({"context": TEXT_A, "hypothesis": TEXT_B, "label": 1, "uid": "u"}, 1)
       for r in (1, 2, 3)},
    # The second example has no gold label (-1) and is dropped.
    "snli": [({"hypothesis": TEXT_B, "label": 0, "premise": TEXT_A},
              {"label": 0, "contains": (TEXT_A, TEXT_B)}),
             ({"hypothesis": "x", "label": -1, "premise": "y"}, None)],
    "imdb": _cls({"label": 1, "text": TEXT_A}, 1, (TEXT_A,)),
    "yelp_polarity": _cls({"label": 0, "text": TEXT_A}, 0, (TEXT_A,)),
    "ag_news": _cls({"description": TEXT_B, "label": 3, "title": TEXT_A}, 3),
    "trec": _cls({"label-coarse": 5, "label-fine": 40, "text": TEXT_A}, 5, (TEXT_A,)),
    "scitail": _cls({"hypothesis": TEXT_B, "label": 1, "premise": TEXT_A}, 1),
    "paws": _cls({"label": 1, "sentence1": TEXT_A, "sentence2": TEXT_B}, 1),
    "sentiment140": [
        ({"date": "d", "polarity": 4, "query": "q", "text": TEXT_A, "user": "u"},
         {"label": 1, "contains": (TEXT_A,)}),
        ({"date": "d", "polarity": 2, "query": "q", "text": "neutral", "user": "u"}, None),
        ({"date": "d", "polarity": 0, "query": "q", "text": TEXT_B, "user": "u"},
         {"label": 0, "contains": (TEXT_B,)}),
    ],
    "civil_comments": [({**_CIVIL, "text": TEXT_A, "toxicity": 0.8},
                        {"label": 1, "contains": (TEXT_A,)}),
                       ({**_CIVIL, "text": TEXT_B, "toxicity": 0.1},
                        {"label": 0, "contains": (TEXT_B,)})],
    "dbpedia14": _cls({"label": 13, "title": TEXT_A, "content": TEXT_B}, 13),
    # Multiple choice: `choice` is the correct index, `contains` the texts of the choices' rows.
    "hellaswag": [({"activity_label": "a", "context": "she picks up the", "endings":
                    ["ball .", "cat .", "phone .", "cup ."], "label": 2, "source_id": "s",
                    "split_type": "indomain"},
                   {"choice": 2, "contains": ("she picks up the", "phone .")})],
    "cosmos_qa": [({"answer0": "red", "answer1": "blue", "answer2": "green", "answer3": "none",
                    "context": "the sky was clear", "id": "1", "label": 1,
                    "question": "what color ?"},
                   {"choice": 1, "contains": ("the sky was clear what color ?", "blue")})],
    "piqa": [({"goal": "open a jar", "id": "1", "label": 0, "sol1": "twist the lid",
               "sol2": "eat the lid"}, {"choice": 0, "contains": ("open a jar", "twist the lid")})],
    "openbookqa": [({"answerKey": 3, "clarity": 1.0, "fact1": "f", "humanScore": 1.0,
                     "question": {"stem": "sun is a", "choice_A": "moon", "choice_B": "car",
                                  "choice_C": "rock", "choice_D": "star"},
                     "turkIdAnonymized": "t"}, {"choice": 3, "contains": ("sun is a", "star")})],
    "winogrande": [({"label": 1, "option1": "the trophy", "option2": "the case",
                     "sentence": "it did not fit because _ was too small ."},
                    {"choice": 1, "contains": ("it did not fit because",
                                               "the case was too small .")})],
    "arc": [({"answerKey": "C", "choices": {"label": ["A", "B", "C", "D"],
                                            "text": ["ice", "wood", "iron", "paper"]},
              "id": "1", "question": "which is a metal ?"},
             {"choice": 2, "contains": ("which is a metal ?", "iron")}),
            # Three choices only: dropped.
            ({"answerKey": "A", "choices": {"label": ["A", "B", "C"], "text": ["x", "y", "z"]},
              "id": "2", "question": "q"}, None)],
    "qasc": [({"answerKey": "B", "choices": {"label": list("ABCDEFGH"),
                                             "text": [f"c{i}" for i in range(8)]},
               "combinedfact": "", "fact1": "", "fact2": "", "formatted_question": "",
               "id": "1", "question": "what grows ?"},
              {"choice": 1, "contains": ("what grows ?", "c1")})],
    "commonsense_qa": [({"abstractive_explanation": "", "answer": "bank",
                         "choices": ["park", "bank", "zoo", "sea", "farm"],
                         "extractive_explanation": "", "id": "1",
                         "question": "where is money kept ?"},
                        {"choice": 1, "contains": ("where is money kept ?", "bank")})],
    "copa": [({"choice1": "it rained", "choice2": "it was sunny", "idx": 0, "label": 0,
               "premise": "the grass was wet", "question": "cause"},
              {"choice": 0, "contains": ("the grass was wet What was the cause?",
                                         "it rained")})],
    # Two questions about one article: two examples.
    "race": [({"answers": ["B", "D"], "article": "tom went home .", "example_id": "1",
               "options": [["a1", "b1", "c1", "d1"], ["a2", "b2", "c2", "d2"]],
               "questions": ["who went ?", "where ?"]},
              [{"choice": 1, "contains": ("tom went home .", "who went ? b1")},
               {"choice": 3, "contains": ("tom went home .", "where ? d2")}])],
    "squad": [({"answers": {"answer_start": [17], "text": ["paris"]},
                "context": "the capital is in paris , france .", "id": "1",
                "question": "where is the capital ?", "title": "t"},
               {"answer": "paris", "contains": ("where is the capital ?",)})],
    "newsqa": _mrqa("NewsQA"),
    "triviaqa": _mrqa("TriviaQA-web"),
    "searchqa": _mrqa("SearchQA"),
    "hotpotqa": _mrqa("HotpotQA"),
    "natural_questions": _mrqa("NaturalQuestionsShort"),
    "cnn_dailymail": [({"article": TEXT_A, "highlights": TEXT_B, "id": "1", "publisher": "cnn"},
                       {"summary": TEXT_B, "contains": (TEXT_A,)})],
    "gigaword": [({"document": TEXT_A, "summary": TEXT_B}, {"summary": TEXT_B,
                                                            "contains": (TEXT_A,)})],
    "reddit_tifu": [({"documents": TEXT_A, "id": "1", "num_comments": 1.0, "score": 1.0,
                      "title": "t", "tldr": TEXT_B, "ups": 1.0, "upvote_ratio": 1.0},
                     {"summary": TEXT_B, "contains": (TEXT_A,)})],
    "aeslc": [({"email_body": TEXT_A, "subject_line": TEXT_B},
               {"summary": TEXT_B, "contains": (TEXT_A,)})],
}
