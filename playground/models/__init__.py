"""Which models exist (catalog), where their weights are (sources) and which are loaded (cache)."""
