"""Entry point: build the playground from settings and launch it (also the Hugging Face Spaces entry).

    python app.py [--port 7860] [--mode workshop] ...   (python app.py --help lists every flag)
"""

from __future__ import annotations

import sys

from playground.cli import serve

if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
