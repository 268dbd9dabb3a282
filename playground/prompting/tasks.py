"""The Prompt Lab's fixed vocabulary: tasks, strategies, demonstration selections and answer kinds.

A task says which field of an example is the input and which the target, how
an answer is pulled out of the model's text (a label, a number, free text, a
date, one word or a multiple-choice letter) and how a set of answers is scored
(accuracy, exact match or ROUGE). The
bundled data of every task lives in ``examples/data/`` and its templates in
``examples/prompts/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from playground.errors import InvalidParameterError

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
DATA_DIR = EXAMPLES_DIR / "data"
PROMPTS_DIR = EXAMPLES_DIR / "prompts"

# How the answer is pulled out of the model's text: a label, a number, free text, a date (ISO), one word
# (checked exactly) or a multiple-choice letter.
ANSWER_KINDS = ("label", "number", "text", "date", "word", "choice")

# Prompting strategies, in the order the Prompt Lab shows them.
ZERO_SHOT = "zero_shot"
FEW_SHOT = "few_shot"
ZERO_SHOT_COT = "zero_shot_cot"
FEW_SHOT_COT = "few_shot_cot"
SELF_CONSISTENCY = "self_consistency"
STRATEGIES = (ZERO_SHOT, FEW_SHOT, ZERO_SHOT_COT, FEW_SHOT_COT, SELF_CONSISTENCY)
STRATEGY_NAMES = MappingProxyType({
    ZERO_SHOT: "Zero-shot (instruction only)",
    FEW_SHOT: "Few-shot (k demonstrations)",
    ZERO_SHOT_COT: "Zero-shot chain-of-thought",
    FEW_SHOT_COT: "Few-shot chain-of-thought",
    SELF_CONSISTENCY: "Self-consistency (majority vote over sampled reasoning paths)",
})

# How few-shot demonstrations are chosen from the demonstration set.
FIXED = "fixed"
RANDOM = "random"
SIMILAR = "similar"
SELECTIONS = (FIXED, RANDOM, SIMILAR)
SELECTION_NAMES = MappingProxyType({
    FIXED: "Fixed: the first k demonstrations",
    RANDOM: "Random: k demonstrations drawn with a seed",
    SIMILAR: "Most similar to the input (MiniLM sentence embeddings)",
})

DEFAULT_COT_TRIGGER = "Let's think step by step."


@dataclass(frozen=True)
class TaskSpec:
    """One task of the Prompt Lab: its fields, its answers and its metric."""

    id: str
    name: str
    input_field: str  # the example's input column in the bundled data; also a template variable
    target_field: str  # the expected output's column; also the demonstrations' variable name
    answer_kind: str  # one of ANSWER_KINDS
    metric: str  # "accuracy", "exact_match" or "rouge"
    data_file: str  # file name in examples/data/
    description: str
    labels: tuple[str, ...] = ()  # the allowed labels ("label") or choice letters ("choice")

    @property
    def data_path(self) -> Path:
        return DATA_DIR / self.data_file

    @property
    def supports_reasoning(self) -> bool:
        """Chain-of-thought and self-consistency need an answer that can be checked and voted on."""
        return self.answer_kind != "text"


TASKS: Mapping[str, TaskSpec] = MappingProxyType({
    "sentiment": TaskSpec(
        id="sentiment", name="Sentiment classification", input_field="text", target_field="label",
        answer_kind="label", metric="accuracy", data_file="sentiment.jsonl",
        description="Is a short everyday sentence positive, negative or neutral?",
        labels=("positive", "negative", "neutral"),
    ),
    "arithmetic": TaskSpec(
        id="arithmetic", name="Arithmetic word problems", input_field="question", target_field="answer",
        answer_kind="number", metric="exact_match", data_file="arithmetic.jsonl",
        description="Small word problems with whole-number answers and worked rationales.",
    ),
    "summarization": TaskSpec(
        id="summarization", name="Dialogue summarisation", input_field="dialogue", target_field="summary",
        answer_kind="text", metric="rouge", data_file="dialogues.jsonl",
        description="Summarise a short everyday dialogue in one or two sentences (scored with ROUGE).",
    ),
    "translation": TaskSpec(
        id="translation", name="Translation (English to French)", input_field="text", target_field="translation",
        answer_kind="text", metric="rouge", data_file="translation.jsonl",
        description="Translate a short English sentence (scored with ROUGE against one reference).",
    ),
    "dates": TaskSpec(
        id="dates", name="Date arithmetic", input_field="question", target_field="answer",
        answer_kind="date", metric="exact_match", data_file="dates.jsonl",
        description="Days and weeks before or after a date, across month and year ends and leap days; "
                    "answers are dates (YYYY-MM-DD).",
    ),
    "last_letters": TaskSpec(
        id="last_letters", name="Last-letter concatenation", input_field="words", target_field="answer",
        answer_kind="word", metric="exact_match", data_file="last_letters.jsonl",
        description="Join the last letters of two to four words (\"apple river\" -> \"er\"); checked exactly.",
    ),
    "coin_flips": TaskSpec(
        id="coin_flips", name="Coin flips", input_field="question", target_field="answer",
        answer_kind="label", metric="accuracy", data_file="coin_flips.jsonl",
        description="A coin starts heads up and people flip it or not: is it still heads up (yes or no)?",
        labels=("yes", "no"),
    ),
    "commonsense": TaskSpec(
        id="commonsense", name="Commonsense multiple choice", input_field="question", target_field="answer",
        answer_kind="choice", metric="accuracy", data_file="commonsense.jsonl",
        description="Everyday questions with five choices, A to E; the answer is a letter.",
        labels=("A", "B", "C", "D", "E"),
    ),
})


def get_task(task_id: str) -> TaskSpec:
    """The task with this id; raises InvalidParameterError naming the choices."""
    try:
        return TASKS[task_id]
    except KeyError:
        raise InvalidParameterError(f"Unknown task {task_id!r}. Choose one of: {', '.join(TASKS)}.") from None
