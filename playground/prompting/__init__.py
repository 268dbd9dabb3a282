"""Prompt templates, strategies, answer extraction and evaluation (the Prompt Lab's logic)."""
