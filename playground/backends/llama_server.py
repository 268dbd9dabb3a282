"""llama-cpp-python's OpenAI-compatible server with the app's llama.cpp model parameters.

``python -m playground.backends.llama_server --model M.gguf ...`` takes the same
arguments as ``python -m llama_cpp.server``; it only installs the parameter
policy of :mod:`playground.backends.llama_loading` first, so the server does not
die on a CPU whose AMX buffers fault.
"""

from __future__ import annotations

import runpy

from playground.backends.llama_loading import install_parameter_policy


def main() -> None:
    install_parameter_policy()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
