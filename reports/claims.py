"""Which paper claim (PAPER.md, C1..C11) each figure and table of a report puts to the test."""
from __future__ import annotations

from typing import Iterable

import pandas as pd

CLAIMS: dict[str, str] = {
    "C1": "Embedding vectors are not equally important; more dimensions for the important ones "
          "save memory at equal quality",
    "C2": ">65% embedding-size reduction with quality maintained (industry; closest: synthetic "
          "Criteo-like data at budget 0.35)",
    "C3": "Public CTR data: 93.75%-99.75% pruned / tables 2.1x-800x smaller with negligible "
          "accuracy loss",
    "C4": "Saves more memory than in-training row pruning (AdaEmbed, ITEP) at the same quality",
    "C5": "Improves model throughput vs the state of the art",
    "C6": "Utility from access frequency and gradient magnitude beats frequency alone",
    "C7": "Chunk count K trades memory and quality against per-step latency (overhead linear "
          "in K)",
    "C8": "Zero padding costs almost nothing vs projection layers",
    "C9": "Per-chunk pruning ratios differ from the global ratio and drift with the data",
    "C10": "Sensitivity to decay gamma and sample size m",
    "C11": "Stable over long training; adapts to changes in the data",
}

# report output (figure stem or table name) -> claim ids it tests
OUTPUT_CLAIMS: dict[str, tuple[str, ...]] = {
    "ne_vs_memory": ("C1", "C3", "C4"),
    "throughput_ratio": ("C5",),
    "k_ablation": ("C7",),
    "utility_ablation": ("C6",),
    "decay_sampling_heatmap": ("C10",),
    "thresholds_comparison": ("C9",),
    "kept_fraction_over_time": ("C9", "C11"),
    "padding_comparison": ("C8",),
    "kept_width_hist": ("C1", "C11"),
    "ne_over_time": ("C11",),
    "compression_within": ("C2", "C3"),
    "config_summary": ("C1", "C4", "C5"),
}


def claim_table(outputs: Iterable[str], experiment: str) -> pd.DataFrame:
    """One row per (output, claim): the figure or table file, experiment, claim id and text.

    ``outputs`` are file names (``figures/ne_vs_memory.png``) or bare stems.
    """
    rows = []
    for out in outputs:
        stem = out.rsplit("/", 1)[-1].split(".", 1)[0]
        for cid in OUTPUT_CLAIMS.get(stem, ()):
            rows.append({"output": out, "experiment": experiment, "claim": cid,
                         "claim_text": CLAIMS[cid]})
    return pd.DataFrame(rows, columns=["output", "experiment", "claim", "claim_text"])
