"""``python -m playground serve | finetune | export | bench | download | walk``: the app, training, a run's
llama.cpp files, benchmarks, the offline kit and a recorded walk for the Replay tab from the command line."""

from __future__ import annotations

import sys

USAGE = """usage: python -m playground COMMAND [options]

commands:
  serve     run the web app (same flags as python app.py; see serve --help)
  finetune  train a YAML config in this process (finetune CONFIG.yaml [--max-steps N]
            [--data-dir DIR] [--output RUN_DIR]; also under accelerate launch -m playground)
  export    a LoRA run as llama.cpp files: export RUN_DIR --gguf TYPE (merged and quantized, e.g. Q4_K_M)
            or export RUN_DIR --adapter-gguf (the adapter for llama.cpp's --lora); prints the file's path
  bench     measure speed and memory and print the figures (bench --help)
  download  fetch Hub models and the DialogSum data set ahead of time for offline use: download IDS | --all
            (into PLAYGROUND_MODELS_DIR, else the Hub cache; resumable, verified); download --check prints
            what works offline now and the command that fetches each missing one (download --help)
  walk      walk record --out FILE: start the app in presenter mode on the packaged models, walk the tabs with
            Record on (Architectures, Prompt Lab, a short fine-tuning run, the Quantized CPU chat) and write
            the walk for the Replay tab (walk record --help)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        from playground.cli import serve

        return serve(rest)
    if command == "finetune":
        from playground.finetune.cli import main as finetune_main

        return finetune_main(rest)
    if command == "export":
        from playground.finetune.export_cli import main as export_main

        return export_main(rest)
    if command == "bench":
        from playground.bench import main as bench_main

        return bench_main(rest)
    if command == "download":
        from playground.models.download import main as download_main

        return download_main(rest)
    if command == "walk":
        from playground.ui.walk_cli import main as walk_main

        return walk_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
