"""A playground for prompting and fine-tuning pre-trained language models.

The package is split so that everything except ``playground.ui`` can be used
without gradio: the CLI, the tests and the tabs all call the same functions.
"""

__version__ = "0.1.0"
