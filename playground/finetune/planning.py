"""Before a run starts: what the data looks like to the model.

``data_report`` formats and tokenises the training split with the run's
template and tokenizer: split sizes, a few formatted examples, token lengths
for a histogram and how many examples ``max_length`` will cut. It runs in the
app process (a tokenizer only, no model) and raises the same clear errors as
the trainer. What the run will cost is ``playground.finetune.train.preflight``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.finetune.config import FinetuneConfig
from playground.finetune.data import format_pairs, load_splits, template_for
from playground.finetune.encoding import encode_pairs
from playground.finetune.hub_data import hub_source_for

HISTOGRAM_BINS = 12


@dataclass(frozen=True)
class DataReport:
    counts: dict[str, int]  # train / validation / test
    source: str
    template: str
    examples: tuple[dict[str, Any], ...]  # the first formatted training examples (prompt, completion)
    lengths: tuple[int, ...]  # tokens per training example, before cutting
    truncated: int  # training examples longer than max_length
    max_length: int
    labels: tuple[str, ...] = ()

    def histogram(self, bins: int = HISTOGRAM_BINS) -> list[dict[str, Any]]:
        """Rows (bin label, examples) of the token-length histogram, with the cut-off bin marked."""
        if not self.lengths:
            return []
        low, high = min(self.lengths), max(self.lengths)
        width = max(1, -(-(high - low + 1) // bins))
        counts: dict[int, int] = {}
        for length in self.lengths:
            start = low + (length - low) // width * width
            counts[start] = counts.get(start, 0) + 1
        return [{"tokens": f"{start}-{start + width - 1}", "examples": counts[start],
                 "cut": "over max_length" if start + width - 1 > self.max_length else "fits"}
                for start in sorted(counts)]


def data_report(config: FinetuneConfig, resolver, data_dir: Path, catalog=None, count: int = 3) -> DataReport:
    """Split sizes, formatted examples and token lengths of the training split, as the run will see them."""
    from playground.finetune.methods import load_tokenizer, locate_model

    config.check(catalog)
    splits = load_splits(config, hub=hub_source_for(data_dir, resolver))
    source = locate_model(config, resolver, data_dir, catalog)
    template = template_for(config)
    pairs = format_pairs(splits.train, template)
    tokenizer = load_tokenizer(source)
    encoded = encode_pairs(pairs, tokenizer, source.family, config.max_length, config.batch_size,
                           {label: i for i, label in enumerate(splits.labels)} if splits.labels else None)
    examples = tuple({"line": p.record.line, "prompt": p.prompt, "completion": p.completion} for p in pairs[:count])
    return DataReport(counts=splits.counts(), source=splits.source, template=template.id, examples=examples,
                      lengths=tuple(encoded.stats.lengths), truncated=encoded.stats.truncated,
                      max_length=config.max_length, labels=splits.labels)
