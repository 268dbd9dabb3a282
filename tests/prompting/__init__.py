"""Tests of the Prompt Lab logic (playground.prompting)."""
