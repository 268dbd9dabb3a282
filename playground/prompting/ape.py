"""Automatic prompt engineering (APE): a model writes the instructions, a development split scores them.

The search, as the course teaches it (Zhou et al.'s APE, with Pryzant et al.'s APO for the critique):

1. **Propose.** The chosen model reads a few demonstrations of the task (input, output) in APE's
   "I gave a friend an instruction ... The instruction was" prompt and writes an instruction; N such
   proposals, each from its own random draw of demonstrations and its own seed.
2. **Score.** Every candidate instruction is put into one fixed layout (:func:`instruction_template`:
   the instruction, the allowed labels for a classification task, then ``Input: ... Output:``) and
   evaluated zero-shot on a development split with the Prompt Lab's evaluation
   (:func:`playground.prompting.evaluation.evaluate`: accuracy, exact match or ROUGE-L).
3. **Vary.** For each later round the top ``keep`` candidates so far are varied: a *paraphrase*
   (APE's resampling: "generate a variation of the following instruction"), or a *critique* in the style
   of APO: the model sees the instruction and development examples it got wrong, says why, and writes an
   improved instruction. The new candidates are scored the same way.
4. **Test.** The best candidate over all rounds and the hand-written baseline (a template of the
   library) are both evaluated on a test split that the search never saw.

The three prompts are editable Jinja templates rendered through the project's sandbox (every
variable is listed in :data:`PROMPT_VARIABLES`); the defaults are written for this project. Candidates
are deduplicated (case, spacing and punctuation aside). The development and test splits are drawn
with the seed from the task's evaluation examples, disjoint; proposals see only the demonstration pool.

``progress`` hears a :class:`SearchProgress` after every generation (candidate i of n, example j of m,
generations done of planned); ``cancel`` is checked between generations and a cancelled search returns
what it finished, marked ``cancelled``. :class:`ApeLimits` caps what one request may ask for (tighter in
workshop mode).
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from playground.backends.base import Engine, GenerationParams
from playground.backends.slots import SlotHolder, no_slot
from playground.errors import InvalidParameterError
from playground.prompting.data import Example, LabelledSet, load_bundled
from playground.prompting.evaluation import EvaluationProgress, EvaluationReport, StrategyScore, evaluate
from playground.prompting.strategies import PromptSetup, StrategyConfig, build_prompt, run_prompt, suggested_params
from playground.prompting.tasks import FEW_SHOT, RANDOM, TASKS, ZERO_SHOT, TaskSpec, get_task
from playground.prompting.templates import PromptTemplate, TemplateLibrary, parse_template

if TYPE_CHECKING:
    from playground.config import Settings

PROPOSED, PARAPHRASE, CRITIQUE = "proposed", "paraphrase", "critique"
ORIGINS = (PROPOSED, PARAPHRASE, CRITIQUE)
PROPOSE, SCORE, TEST = "propose", "score", "test"  # the stages a progress report names

MAX_INSTRUCTION_CHARS = 400  # a candidate instruction is cut here (one or two sentences)
MAX_PROMPT_CHARS = 4_000  # each of the three editable prompts
IMPROVED_MARKER = "Improved instruction:"
VARIANT_STOP = ("\nInput:",)  # a candidate's layout: the model starts another example

DEFAULT_PROPOSAL_PROMPT = """\
I gave a friend an instruction and {{ demos | length }} inputs. The friend read the instruction and wrote \
an output for every one of the inputs. Here are the input-output pairs:
{% for demo in demos %}

Input: {{ demo.input }}
Output: {{ demo.target }}
{% endfor %}

What was the instruction? Reply with the instruction only, in one sentence.
The instruction was:"""

DEFAULT_PARAPHRASE_PROMPT = """\
Generate a variation of the following instruction while keeping its meaning. Reply with the new \
instruction only, in one sentence.

Instruction: {{ instruction }}"""

DEFAULT_CRITIQUE_PROMPT = """\
I am writing an instruction for a task. My current instruction is:
"{{ instruction }}"

It gets these examples wrong:
{% for failure in failures %}

Input: {{ failure.input }}
Expected answer: {{ failure.expected }}
Answer given: {{ failure.output }}
{% endfor %}

In one or two sentences, say why the instruction could have led to these mistakes. Then write a better \
instruction on a last line that starts with "Improved instruction:"."""

# The variables each editable prompt is rendered with (besides input, task and labels, as every template).
PROMPT_VARIABLES = {
    "proposal_prompt": "demos (each: input, target, and the task's own field names)",
    "paraphrase_prompt": "instruction",
    "critique_prompt": "instruction, failures (each: input, expected, output)",
}


def _option(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class ApeLimits:
    """What one search may ask for; the app's mode decides (``from_settings``), a test may give its own."""

    max_candidates: int = 16
    max_rounds: int = 5
    max_dev: int = 60
    max_test: int = 200
    max_demos: int = 8
    max_failures: int = 5
    max_prompt_chars: int = MAX_PROMPT_CHARS

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ApeLimits":
        """Workshop mode (one machine, a room): at most 8 candidates x 2 rounds on 20 development examples and
        40 test examples (about 400 short generations); no tighter caps elsewhere."""
        if settings.mode == "workshop":
            return cls(max_candidates=8, max_rounds=2, max_dev=20, max_test=40, max_demos=5, max_failures=3)
        return cls()


@dataclass(frozen=True)
class ApeConfig:
    """One search; the help texts become the widgets' info."""

    task: str = _option("sentiment", "The task whose demonstrations the instructions are proposed from.")
    baseline: str = _option("", "The hand-written template the winner is compared with on the test split "
                                "(empty: the task's first zero-shot template).")
    candidates: int = _option(8, "Instructions written per round: proposals in round 1, variations of the best "
                                 "ones in later rounds.", low=1)
    rounds: int = _option(2, "Rounds of the search: round 1 proposes, each later one varies the best so far.",
                          low=1)
    keep: int = _option(3, "How many of the best candidates so far each later round varies (top-k).", low=1)
    dev_size: int = _option(20, "Development examples every candidate is scored on.", low=1)
    test_size: int = _option(0, "Test examples the winner and the baseline are scored on, never seen by the "
                                "search (0: all the task's examples not in the development split).", low=0)
    demos_shown: int = _option(5, "Demonstrations the model reads for each proposal (a random draw each time).",
                               low=1)
    failures_shown: int = _option(3, "Development examples a candidate got wrong that its critique shows.", low=1)
    temperature: float = _option(0.9, "Sampling temperature of proposals and variations (the scoring is greedy).")
    seed: int = _option(0, "Seed of the splits, the demonstration draws and the sampling: same seed, same search.",
                        low=0, high=2**31 - 1)
    proposal_prompt: str = _option(DEFAULT_PROPOSAL_PROMPT, "APE's prompt: the model reads demonstrations and "
                                                            "writes the instruction (variables: demos).")
    paraphrase_prompt: str = _option(DEFAULT_PARAPHRASE_PROMPT, "The prompt of a paraphrase (variable: "
                                                                "instruction).")
    critique_prompt: str = _option(DEFAULT_CRITIQUE_PROMPT, "The critique prompt in the style of APO: why the "
                                                            "instruction failed, then a better one (variables: "
                                                            "instruction, failures).")

    def __post_init__(self) -> None:
        for f in fields(self):  # number widgets give 8.0 for 8
            value = getattr(self, f.name)
            if f.type == "int" and isinstance(value, float) and value.is_integer():
                object.__setattr__(self, f.name, int(value))

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ApeConfig":
        """A config from plain values (a preset, an API call); an unknown key is an error naming the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidParameterError(f"Unknown prompt-search settings {unknown}; known: {sorted(known)}.")
        return cls(**dict(values))

    def validated(self, limits: ApeLimits = ApeLimits()) -> "ApeConfig":
        """Self after checking every field against its bounds and ``limits``; raises InvalidParameterError."""
        get_task(self.task)
        caps = {"candidates": limits.max_candidates, "rounds": limits.max_rounds, "dev_size": limits.max_dev,
                "test_size": limits.max_test, "demos_shown": limits.max_demos,
                "failures_shown": limits.max_failures, "keep": limits.max_candidates, "seed": 2**31 - 1}
        for name, cap in caps.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidParameterError(f"{name} must be a whole number, not {value!r}.")
            low = next(f.metadata.get("low", 0) for f in fields(self) if f.name == name)
            if not low <= value <= cap:
                raise InvalidParameterError(f"{name}={value} is out of range: choose {low} to {cap}.")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not 0.0 <= self.temperature <= 2.0:
            raise InvalidParameterError(f"temperature={self.temperature!r} is out of range: choose 0 to 2.")
        for name in PROMPT_VARIABLES:
            text = getattr(self, name)
            if not isinstance(text, str) or not text.strip():
                raise InvalidParameterError(f"The {name.replace('_', ' ')} is empty; write one (variables: "
                                            f"{PROMPT_VARIABLES[name]}).")
            if len(text) > limits.max_prompt_chars:
                raise InvalidParameterError(f"The {name.replace('_', ' ')} has {len(text):,} characters; the "
                                            f"limit is {limits.max_prompt_chars:,}.")
            parse_template(text)  # a syntax error names its line
        return self


# --------------------------------------------------------------------------- candidates and their template


_JINJA_MARKS = re.compile(r"\{[{%#]|[}%#]\}")
_LEADS = re.compile(r"^(?:the\s+instruction\s+(?:was|is)\s*:?|improved\s+instruction\s*:|new\s+instruction\s*:|"
                    r"instruction\s*:|output\s*:|answer\s*:)\s*", re.IGNORECASE)


def clean_instruction(text: str) -> str:
    """The instruction in a model's reply: after "Improved instruction:" if there is one, its first non-empty
    line, without a leading "The instruction was:" or quotes, without Jinja delimiters, at most
    ``MAX_INSTRUCTION_CHARS`` characters ("" when nothing is left)."""
    text = text or ""
    marker = text.lower().rfind(IMPROVED_MARKER.lower())
    if marker >= 0:
        text = text[marker + len(IMPROVED_MARKER):]
    text = _JINJA_MARKS.sub(" ", text)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    for _ in range(3):
        line = _LEADS.sub("", line).strip().strip("\"'`*“”‘’ ").strip()
    line = re.sub(r"\s+", " ", line)
    if len(line) > MAX_INSTRUCTION_CHARS:
        line = line[:MAX_INSTRUCTION_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + "."
    return line


def critique_reasons(text: str) -> str:
    """The critique's reasons: its reply before "Improved instruction:" (one line, at most 400 characters)."""
    marker = (text or "").lower().rfind(IMPROVED_MARKER.lower())
    reasons = (text or "")[:marker] if marker >= 0 else ""
    return re.sub(r"\s+", " ", reasons).strip()[:MAX_INSTRUCTION_CHARS]


def dedupe_key(instruction: str) -> str:
    """Two instructions are the same candidate when they differ only in case, spacing and punctuation."""
    return " ".join(re.findall(r"\w+", instruction.lower()))


def instruction_template(task: TaskSpec | str, instruction: str) -> str:
    """The full Prompt Lab template of a candidate: the instruction, the labels (classification), then the
    demonstrations (few-shot strategies) and the input, each as ``Input: ... Output: ...``.

    The instruction is written into the template as plain text (its Jinja delimiters were removed when it was
    cleaned, and are removed again here), so the template is valid whatever the model wrote.
    """
    task = get_task(task) if isinstance(task, str) else task
    text = _JINJA_MARKS.sub(" ", instruction).strip()
    lines = [text]
    if task.answer_kind == "label":
        lines.append('Answer with one of: {{ labels | join(", ") }}.')
    lines += ["{% for demo in demos %}", "", "Input: {{ demo.input }}", "Output: {{ demo.target }}",
              "{% endfor %}", "", "Input: {{ input }}", "Output:"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Failure:
    """A development example a candidate got wrong (or scored lowest on, for free text)."""

    input: str
    expected: str
    output: str


@dataclass(frozen=True)
class Candidate:
    """One instruction of the search: where it came from and its development score."""

    id: int  # 1-based, in the order written
    text: str
    round: int  # 1-based
    origin: str  # proposed, paraphrase or critique
    parent: int | None = None  # the candidate it varies
    dev_score: float | None = None  # the task's metric on the development split (0-1); None: not scored
    unanswered: int = 0
    note: str = ""  # a critique's reasons
    failures: tuple[Failure, ...] = ()

    def as_row(self) -> dict:
        return {"#": self.id, "round": self.round, "origin": self.origin, "parent": self.parent or "",
                "instruction": self.text, "dev_score": None if self.dev_score is None else round(self.dev_score, 4),
                "unanswered": self.unanswered, "critique": self.note}


@dataclass(frozen=True)
class SearchProgress:
    """How far a search is: the stage (propose, score, test), its round, the candidate i of n being written or
    scored, the example j of m being scored, and the generations done of planned."""

    stage: str
    round: int = 0
    rounds: int = 0
    candidate: int = 0
    candidates: int = 0
    example: int = 0
    examples: int = 0
    done: int = 0
    planned: int = 0
    elapsed_s: float = 0.0
    finished: bool = False
    cancelled: bool = False

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.planned) if self.planned else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None before the first generation, or once finished)."""
        if self.finished or not self.done or self.elapsed_s <= 0:
            return None
        return self.elapsed_s / self.done * max(0, self.planned - self.done)


SearchCallback = Callable[[SearchProgress], None]


@dataclass(frozen=True)
class ApeResult:
    """Every candidate with its round and score, the best per round, and the winner against the baseline."""

    task: str
    metric: str  # accuracy, exact_match or rougeL
    candidates: tuple[Candidate, ...]
    best_per_round: tuple[tuple[int, float, float], ...]  # (round, best dev score so far, best of the round's own)
    winner: Candidate | None
    baseline: str  # the baseline template's id
    baseline_test: StrategyScore | None
    winner_test: StrategyScore | None
    dev_size: int
    test_size: int
    duplicates: int  # written candidates dropped as repeats (or empty)
    generations: int
    cancelled: bool
    elapsed_s: float

    @property
    def winner_template(self) -> str:
        """The winner as a full Prompt Lab template of the task ("" when nothing was scored)."""
        return instruction_template(self.task, self.winner.text) if self.winner else ""

    def rows(self) -> list[dict]:
        """Every candidate, best development score first (unscored last)."""
        ranked = sorted(self.candidates, key=lambda c: (c.dev_score is None, -(c.dev_score or 0.0), c.id))
        return [c.as_row() for c in ranked]

    def chart_rows(self) -> list[dict]:
        """The chart's points, long form: per round, the best score so far and the best of the round's own."""
        rows = []
        for round_, so_far, own in self.best_per_round:
            rows.append({"round": round_, "series": "best so far", "score": round(so_far, 4)})
            rows.append({"round": round_, "series": "best of the round", "score": round(own, 4)})
        return rows

    def test_rows(self) -> list[dict]:
        rows = []
        for name, score in (("baseline", self.baseline_test), ("winner", self.winner_test)):
            if score is not None:
                rows.append({"prompt": name, "examples": score.examples,
                             "score": round(score.metrics[self.metric], 4), "unanswered": score.unanswered})
        return rows


def primary_metric(task: TaskSpec | str) -> str:
    """The one number a search ranks candidates by: accuracy, exact match or ROUGE-L F1."""
    task = get_task(task) if isinstance(task, str) else task
    return {"label": "accuracy", "number": "exact_match"}.get(task.answer_kind, "rougeL")


def split_examples(data: LabelledSet, dev_size: int, test_size: int, seed: int
                   ) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(development, test) drawn with ``seed`` from the set's evaluation examples: disjoint, the same for the
    same seed; ``test_size`` 0 takes every example not in the development split."""
    examples = list(data.examples)
    if dev_size >= len(examples):
        raise InvalidParameterError(f"The task has {len(examples)} examples to split; the development split may "
                                    f"take at most {len(examples) - 1}, so some are left to test on, not "
                                    f"{dev_size}.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    dev = tuple(examples[i] for i in order[:dev_size])
    rest = [examples[i] for i in order[dev_size:]]
    if test_size > len(rest):
        raise InvalidParameterError(f"{len(rest)} examples are left after the development split of {dev_size}; "
                                    f"choose a test size of at most {len(rest)} (or 0 for all of them).")
    test = tuple(rest[:test_size] if test_size else rest)
    return dev, test


def baseline_template(library_templates: Sequence[PromptTemplate], task: str, template_id: str = ""
                      ) -> PromptTemplate:
    """The hand-written template to beat: ``template_id`` (of the task, suiting zero-shot), else the task's first
    zero-shot template."""
    suitable = [t for t in library_templates if t.task == task and t.suits(ZERO_SHOT)]
    if not template_id:
        if not suitable:
            raise InvalidParameterError(f"The task {task!r} has no zero-shot template to compare with.")
        return suitable[0]
    chosen = next((t for t in suitable if t.id == template_id), None)
    if chosen is None:
        names = ", ".join(t.id for t in suitable) or "none"
        raise InvalidParameterError(f"The baseline {template_id!r} is not a zero-shot template of the task "
                                    f"{task!r}; choose one of: {names}.")
    return chosen


# --------------------------------------------------------------------------- the search


class _Search:
    """One search's state: the engine, the splits, the counts for progress, the candidates so far."""

    def __init__(self, engine: Engine, config: ApeConfig, data: LabelledSet, baseline: PromptTemplate,
                 progress: SearchCallback | None, cancel: threading.Event | None, slot: SlotHolder) -> None:
        self.engine, self.config, self.baseline = engine, config, baseline
        self.task = get_task(config.task)
        self.metric = primary_metric(self.task)
        self.dev, self.test = split_examples(data, config.dev_size, config.test_size, config.seed)
        self.pool = data.demos
        self.dev_set = LabelledSet(self.task, self.dev, data.demos, f"{data.source} (development split)")
        self.test_set = LabelledSet(self.task, self.test, data.demos, f"{data.source} (test split)")
        self.progress, self.cancel, self.slot = progress, cancel, slot
        self.scoring = suggested_params(self.task, StrategyConfig(strategy=ZERO_SHOT))
        self.started = time.perf_counter()
        self.done = 0
        # Writing each candidate and scoring it on every development example, each round; then two on the test.
        self.planned = config.rounds * config.candidates * (1 + len(self.dev)) + 2 * len(self.test)
        self.candidates: list[Candidate] = []
        self.seen: set[str] = set()
        self.duplicates = 0
        self.cancelled = False

    # -- reporting -----------------------------------------------------------------------
    def report(self, stage: str, round_: int = 0, candidate: int = 0, candidates: int = 0, example: int = 0,
               examples: int = 0, finished: bool = False) -> None:
        if self.progress is not None:
            self.progress(SearchProgress(stage, round_, self.config.rounds, candidate, candidates, example, examples,
                                         self.done, self.planned, time.perf_counter() - self.started, finished,
                                         self.cancelled))

    def stopped(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
        return self.cancelled

    # -- writing candidates -----------------------------------------------------------------
    def _sampling(self, seed: int, max_new_tokens: int) -> GenerationParams:
        return GenerationParams(max_new_tokens=max_new_tokens, temperature=float(self.config.temperature),
                                top_p=0.95, top_k=40, repetition_penalty=1.1, seed=seed)

    def generate(self, template: str, strategy: StrategyConfig, input_text: str, variables: Mapping[str, Any],
                 params: GenerationParams) -> str | None:
        """One generation from an editable prompt (rendered in the sandbox); None when cancelled."""
        setup = PromptSetup(task=self.task.id, template=template, strategy=strategy, answer_kind="text",
                            variables=dict(variables), name="prompt search")
        built = build_prompt(self.engine, setup, input_text, self.pool, params=params)
        run = run_prompt(self.engine, built, setup, params, cancel=self.cancel, slot=self.slot)
        if run.cancelled:
            self.cancelled = True
            return None
        self.done += 1
        return run.output

    def propose(self, index: int) -> str | None:
        config = self.config
        k = min(config.demos_shown, len(self.pool))
        strategy = StrategyConfig(strategy=FEW_SHOT, k=k, selection=RANDOM,
                                  selection_seed=(config.seed * 1009 + index) % 2**31)
        return self.generate(config.proposal_prompt, strategy, "the task", {},
                             self._sampling(config.seed * 1009 + index, 64))

    def vary(self, parent: Candidate, origin: str, seed: int) -> tuple[str, str] | None:
        """(instruction, critique reasons) of one variation of ``parent``; None when cancelled."""
        config = self.config
        strategy = StrategyConfig(strategy=ZERO_SHOT)
        if origin == CRITIQUE:
            failures = [{"input": f.input, "expected": f.expected, "output": f.output} for f in parent.failures]
            reply = self.generate(config.critique_prompt, strategy, parent.text,
                                  {"instruction": parent.text, "failures": failures}, self._sampling(seed, 128))
            return None if reply is None else (clean_instruction(reply), critique_reasons(reply))
        reply = self.generate(config.paraphrase_prompt, strategy, parent.text, {"instruction": parent.text},
                              self._sampling(seed, 64))
        return None if reply is None else (clean_instruction(reply), "")

    def add(self, text: str, round_: int, origin: str, parent: int | None, note: str = "") -> Candidate | None:
        """The new candidate, or None (and fewer generations planned) for an empty one or a repeat."""
        key = dedupe_key(text)
        if not key or key in self.seen:
            self.duplicates += 1
            self.planned -= len(self.dev)
            return None
        self.seen.add(key)
        candidate = Candidate(len(self.candidates) + 1, text, round_, origin, parent, note=note)
        self.candidates.append(candidate)
        return candidate

    # -- scoring ---------------------------------------------------------------------------
    def setup_for(self, instruction: str, name: str) -> PromptSetup:
        return PromptSetup(task=self.task.id, template=instruction_template(self.task, instruction),
                           strategy=StrategyConfig(strategy=ZERO_SHOT), name=name, stop=VARIANT_STOP)

    def evaluate(self, setups: list[PromptSetup], data: LabelledSet, stage: str, round_: int, candidate: int,
                 candidates: int) -> EvaluationReport:
        before = self.done
        labels = [s.label for s in setups]

        def heard(step: EvaluationProgress) -> None:
            if step.finished:
                return
            self.done = before + step.done
            which = candidate if len(setups) == 1 else labels.index(step.strategy) + 1
            self.report(stage, round_, which, candidates, step.strategy_done, step.examples)

        report = evaluate(self.engine, setups, data, self.scoring, progress=heard, cancel=self.cancel,
                          slot=self.slot)
        self.done = before + len(report.results)
        if report.cancelled:
            self.cancelled = True
        return report

    def score(self, candidate: Candidate, round_: int, position: int, count: int) -> Candidate:
        report = self.evaluate([self.setup_for(candidate.text, f"candidate {candidate.id}")], self.dev_set, SCORE,
                               round_, position, count)
        if report.cancelled or not report.scores:
            return candidate
        score = report.scores[0]
        wrong = [r for r in report.results if r.correct is False]
        if not wrong and self.task.answer_kind == "text":  # free text: the lowest ROUGE-L are its failures
            wrong = sorted(report.results, key=lambda r: r.scores.get("rougeL", 0.0))
            wrong = [r for r in wrong if r.scores.get("rougeL", 0.0) < 1.0]
        failures = tuple(Failure(r.input, r.target, (r.output or "").strip()[:MAX_INSTRUCTION_CHARS])
                         for r in wrong[:self.config.failures_shown])
        scored = replace(candidate, dev_score=float(score.metrics[self.metric]), unanswered=score.unanswered,
                         failures=failures)
        self.candidates[candidate.id - 1] = scored
        return scored

    def ranked(self) -> list[Candidate]:
        scored = [c for c in self.candidates if c.dev_score is not None]
        return sorted(scored, key=lambda c: (-(c.dev_score or 0.0), c.id))

    # -- the rounds -------------------------------------------------------------------------
    def written(self, round_: int) -> list[Candidate]:
        """The candidates of one round, written one after another."""
        config = self.config
        new: list[Candidate] = []
        parents = self.ranked()[:config.keep]
        for j in range(config.candidates):
            if self.stopped():
                break
            self.report(PROPOSE, round_, j + 1, config.candidates)
            if round_ == 1 or not parents:  # (a later round proposes only when nothing was scored before it)
                reply = self.propose((round_ - 1) * config.candidates + j)
                made = None if reply is None else (clean_instruction(reply), "", PROPOSED, None)
            else:
                parent = parents[j % len(parents)]
                origin = CRITIQUE if j % 2 == 1 and parent.failures else PARAPHRASE
                varied = self.vary(parent, origin, (config.seed * 1009 + round_ * 101 + j) % 2**31)
                made = None if varied is None else (varied[0], varied[1], origin, parent.id)
            if made is None:
                break
            candidate = self.add(made[0], round_, made[2], made[3], made[1])
            if candidate is not None:
                new.append(candidate)
        return new

    def run(self) -> ApeResult:
        best: list[tuple[int, float, float]] = []
        for round_ in range(1, self.config.rounds + 1):
            new = self.written(round_)
            for position, candidate in enumerate(new, start=1):
                if self.stopped():
                    break
                self.score(candidate, round_, position, len(new))
            ranked = self.ranked()
            own = [self.candidates[c.id - 1].dev_score for c in new]
            own = [score for score in own if score is not None]
            if ranked and own and not self.cancelled:
                best.append((round_, float(ranked[0].dev_score or 0.0), float(max(own))))
            if self.stopped():
                break
        ranked = self.ranked()
        winner = ranked[0] if ranked else None
        baseline_test = winner_test = None
        if winner is not None and not self.stopped():
            baseline_setup = PromptSetup.from_template(self.baseline, StrategyConfig(strategy=ZERO_SHOT),
                                                       name="baseline")
            report = self.evaluate([baseline_setup, self.setup_for(winner.text, "winner")], self.test_set, TEST,
                                   self.config.rounds, 0, 2)
            scores = {s.strategy: s for s in report.scores}
            if not report.cancelled:
                baseline_test, winner_test = scores.get("baseline"), scores.get("winner")
        else:
            self.planned = self.done
        self.report(TEST, self.config.rounds, finished=True)
        return ApeResult(task=self.task.id, metric=self.metric, candidates=tuple(self.candidates),
                         best_per_round=tuple(best), winner=winner, baseline=self.baseline.id,
                         baseline_test=baseline_test, winner_test=winner_test, dev_size=len(self.dev),
                         test_size=len(self.test), duplicates=self.duplicates, generations=self.done,
                         cancelled=self.cancelled, elapsed_s=time.perf_counter() - self.started)


def check_search(engine: Engine, config: ApeConfig, data: LabelledSet, baseline: PromptTemplate,
                 limits: ApeLimits = ApeLimits()) -> None:
    """Raise the error a search would meet before its first generation: the settings, the splits, and every
    editable prompt rendered once (the proposal with demonstrations, the critique with a made-up failure)."""
    config = config.validated(limits)
    if data.task.id != config.task or baseline.task != config.task:
        raise InvalidParameterError(f"The examples and the baseline must be of the task {config.task!r}.")
    if not data.demos:
        raise InvalidParameterError("The task has no demonstrations to propose instructions from.")
    split_examples(data, config.dev_size, config.test_size, config.seed)
    probe = GenerationParams(max_new_tokens=128, temperature=0.0)
    k = min(config.demos_shown, len(data.demos))
    checks = (
        (config.proposal_prompt, StrategyConfig(strategy=FEW_SHOT, k=k), {}),
        (config.paraphrase_prompt, StrategyConfig(strategy=ZERO_SHOT), {"instruction": "Classify the text."}),
        (config.critique_prompt, StrategyConfig(strategy=ZERO_SHOT),
         {"instruction": "Classify the text.", "failures": [{"input": "an input", "expected": "an answer",
                                                              "output": "another answer"}]}),
    )
    for template, strategy, variables in checks:
        setup = PromptSetup(task=config.task, template=template, strategy=strategy, answer_kind="text",
                            variables=variables)
        build_prompt(engine, setup, "the task", data.demos, params=probe)


def search_instructions(engine: Engine, config: ApeConfig, data: LabelledSet, baseline: PromptTemplate, *,
                        limits: ApeLimits = ApeLimits(), progress: SearchCallback | None = None,
                        cancel: threading.Event | None = None, slot: SlotHolder = no_slot) -> ApeResult:
    """Run the search (see the module's docstring) and return every candidate, the best per round and the
    winner against ``baseline`` on the test split. Problems with the settings, the splits or the prompts are
    raised before the first generation."""
    check_search(engine, config, data, baseline, limits)
    return _Search(engine, config, data, baseline, progress, cancel, slot).run()


# --------------------------------------------------------------------------- the tab's controller


class SearchModels(Protocol):
    """The models one person may use (``Services.models_for``): an engine by id and engine choice."""

    def engine(self, model_id: str, engine: str) -> Engine:
        """A loaded engine for the model."""


@dataclass(frozen=True)
class SearchRequest:
    """What the Prompt search tab sends: the search's settings, the model and the engine choice."""

    config: ApeConfig
    model_id: str
    engine: str = "auto"


class PromptSearch:
    """The Prompt search tab's logic: the library's baselines, the bundled data, the limits and the slots."""

    def __init__(self, library: TemplateLibrary, *, limits: ApeLimits = ApeLimits(), slot: SlotHolder = no_slot,
                 bundled: Mapping[str, LabelledSet] | None = None) -> None:
        self.library = library
        self.limits = limits
        self.slot = slot
        self.bundled = dict(bundled) if bundled is not None else {task: load_bundled(task) for task in TASKS}

    def baselines(self, task: str) -> list[PromptTemplate]:
        """The task's hand-written templates that suit zero-shot (the first is the default baseline)."""
        get_task(task)
        return [t for t in self.library.for_task(task, ZERO_SHOT)]

    def data(self, task: str) -> LabelledSet:
        return self.bundled[get_task(task).id]

    def _plan(self, request: SearchRequest, models: SearchModels) -> tuple[Engine, LabelledSet, PromptTemplate]:
        config = request.config.validated(self.limits)
        baseline = baseline_template(self.library.templates, config.task, config.baseline)
        return models.engine(request.model_id, request.engine), self.data(config.task), baseline

    def check(self, request: SearchRequest, models: SearchModels) -> None:
        """Raise the error the search would meet before its first generation (settings, splits, prompts)."""
        engine, data, baseline = self._plan(request, models)
        check_search(engine, request.config, data, baseline, self.limits)

    def search(self, request: SearchRequest, models: SearchModels, *, progress: SearchCallback | None = None,
               cancel: threading.Event | None = None) -> ApeResult:
        engine, data, baseline = self._plan(request, models)
        return search_instructions(engine, request.config, data, baseline, limits=self.limits, progress=progress,
                                   cancel=cancel, slot=self.slot)

    def saved_entry(self, result: ApeResult) -> tuple[str, dict[str, str]]:
        """(template id, entry) that puts the winner into a session's library of edited templates (the Prompt
        Lab's ``saved_templates``): the winner's template, saved as the baseline's edit; the Prompt Lab's Reset
        brings the hand-written one back."""
        if result.winner is None:
            raise InvalidParameterError("The search has no winner yet: run it until one candidate is scored.")
        self.library.get(result.baseline)
        return result.baseline, {"template": result.winner_template, "system": ""}
