"""Prompt templates, strategies, answer extraction and evaluation (the Prompt Lab's logic).

Modules, in the order a prompt flows through them:

- ``tasks``: the tasks (sentiment, arithmetic, summarisation, translation, dates, last letters, coin
  flips, commonsense multiple choice), strategy and selection names;
- ``sandbox``: the bounded Jinja sandbox every template renders in (output, value, building, work and time budgets);
- ``templates``: templates checked and rendered there, and the YAML template library in ``examples/prompts/``;
- ``data``: bundled labelled sets (``examples/data/``) and uploaded JSONL/CSV files with a column mapping;
- ``demos``: choosing k demonstrations (fixed, random with a seed, most similar by MiniLM embeddings);
- ``strategies``: building the exact prompt (chat template, tokens) and streaming a strategy's run;
- ``columns``: up to four (strategy, model) columns on one input, one after another;
- ``extraction``: reading labels, numbers and free text out of outputs; majority voting;
- ``evaluation``: scoring strategies over a labelled set (accuracy, exact match, ROUGE) with progress and cancel;
- ``snippet``: "show the code" for llama-cpp-python or transformers;
- ``lab``: the Prompt Lab's controller (preview, run, compare, evaluate from one request);

Nothing here imports gradio; torch loads only when the MiniLM embedder is used.
"""

from playground.prompting.data import (
    ColumnMapping,
    Example,
    LabelledSet,
    UploadLimits,
    file_columns,
    labelled_set_from_upload,
    load_bundled,
    parse_labelled_file,
)
from playground.prompting.demos import Embedder, MiniLMEmbedder, rank_by_similarity, select_demos
from playground.prompting.evaluation import (
    EvaluationReport,
    ExampleResult,
    StrategyScore,
    evaluate,
    rouge_scores,
)
from playground.prompting.extraction import (
    VoteResult,
    extract_answer,
    extract_label,
    extract_number,
    extract_text,
    is_correct,
    majority_vote,
)
from playground.prompting.snippet import code_snippet
from playground.prompting.strategies import (
    BuiltPrompt,
    PromptSetup,
    SampledPath,
    StrategyConfig,
    StrategyRun,
    build_prompt,
    effective_params,
    run_prompt,
    run_strategy,
    suggested_params,
)
from playground.prompting.tasks import STRATEGIES, TASKS, TaskSpec, get_task
from playground.prompting.templates import PromptTemplate, TemplateLibrary, render_template, template_variables

__all__ = [
    "BuiltPrompt", "ColumnMapping", "Embedder", "EvaluationReport", "Example", "ExampleResult", "LabelledSet",
    "MiniLMEmbedder", "PromptSetup", "PromptTemplate", "STRATEGIES", "SampledPath", "StrategyConfig",
    "StrategyRun", "StrategyScore", "TASKS", "TaskSpec", "TemplateLibrary", "UploadLimits", "VoteResult",
    "build_prompt", "code_snippet", "effective_params", "evaluate", "extract_answer", "extract_label", "extract_number",
    "extract_text", "file_columns", "get_task", "is_correct", "labelled_set_from_upload", "load_bundled",
    "majority_vote", "parse_labelled_file", "rank_by_similarity", "render_template", "rouge_scores",
    "run_prompt", "run_strategy", "select_demos", "suggested_params", "template_variables",
]
