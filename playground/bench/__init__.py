"""``python -m playground bench``: the speed figures the design promises, measured in one run.

Tests never assert wall-clock times; this package is where speed is checked instead. One process
measures every figure on this machine, suite by suite:

- :mod:`~playground.bench.startup`: ``app.py`` to its first HTTP 200, no model loaded (< 10 s);
- :mod:`~playground.bench.machine`: the machine's own ceilings, read bandwidth (one thread and the
  bench's threads) and float32 sgemm FLOP/s (informational);
- :mod:`~playground.bench.llama_decode`: llama.cpp decode through the app's engine against plain
  llama-cpp-python (>= 0.9 x), and the warm time to first token of a chat prompt (< 0.5 s);
- :mod:`~playground.bench.prompt_lab`: self-consistency N=5 over one sample (<= 2.0 x) and a whole
  sentiment evaluation (< 120 s), with the timing functions behind them;
- :mod:`~playground.bench.roofline`: each offline GGUF model's decode bytes/s over the read bandwidth
  (>= 0.7 for Gemma-3-270M), and after the fine-tune figure the trainer's FLOP/s over sgemm (>= 0.6);
- :mod:`~playground.bench.transformers_engine`: the transformers engine's first (GGUF conversion) and
  second load (< 5 s), and llama.cpp's speed over its CPU speed;
- :mod:`~playground.bench.finetune`: the app's trainer over the textbook peft + ``Trainer`` script of
  :mod:`~playground.bench.plain_trainer` (>= 1.0 x; ``--skip-finetune`` leaves it out);
- :mod:`~playground.bench.architectures`: the whole Architectures tab, warm (< 2 s);
- :mod:`~playground.bench.gguf_export`: a random LoRA of the model turned into a llama.cpp adapter GGUF,
  and merged into its GGUF and quantized to Q4_K_M (informational).

``--load`` is a run of its own (the suites above are left out): :mod:`~playground.bench.load` starts the
app in workshop mode and has N people (1, 8, 32) at once get an identity and stream one short Quantized
CPU chat through ``gradio_client``; errors, p50/p90 time to first and last token, aggregate tokens/s, and
the room's targets at N = 32 (no error, >= 3x the aggregate speed of N = 1, p90 first token < 3 s, ``GET /``
and ``GET /health`` < 1 s meanwhile). ``--load-server llama.cpp`` runs the same people with the app pointed
at llama-cpp-python's OpenAI-compatible server.

``--cpu-demo`` and ``--trainer-variants`` are runs of their own too: :mod:`~playground.bench.cpu_demo` runs
the CPU demo preset end to end after its pre-flight estimate (the whole run < 10 minutes, each phase's
seconds, the ROUGE-L gain >= 19.5 points, the estimate within 25 % of the real run), and
:mod:`~playground.bench.trainer_variants` measures packed batches, logits on label positions and bf16
autocast (where the CPU has native bf16) each alone against padded fp32 batches.

:mod:`~playground.bench.core` holds what they share (the figure record and its target, the options,
the CPU watch, ABBA rounds), :mod:`~playground.bench.streams` the timed generation streams,
:mod:`~playground.bench.quiet` the stdout that carries nothing but the table or JSON (library output goes
to stderr, the bench's log; progress bars are off), and :mod:`~playground.bench.cli` the command line, the
driver and the table or JSON it prints. The exit
code is 1 when a figure misses its target or could not be measured, else 0. Heavy libraries are
imported inside the functions that need them, so importing the bench loads no model; everything
written goes to a scratch folder that is removed at the end.
"""

from playground.bench.cli import build_arg_parser, format_table, main, run_benchmarks
from playground.bench.core import BenchOptions, Figure, Measure

__all__ = ["BenchOptions", "Figure", "Measure", "build_arg_parser", "format_table", "main", "run_benchmarks"]
