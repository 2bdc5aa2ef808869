"""Synthetic Criteo-/Avazu-like click data whose labels come from a planted model.

Why planted: the usual random generators (torchrec RandomRecDataset, DLRM random mode) draw
labels independent of the inputs, so no method can be judged on them. Here the label logit is

    bias + a_d * sum_j beta_j x_j + a_w * sum_f w_f[id_f] + a_z * sum_{f<g} <z_f[id_f], z_g[id_g]>

where every id has a scalar effect ``w`` and a latent vector ``z`` whose useful width (its
number of non-zero leading dims) shrinks with the id's popularity: popular ids use up to
``latent_dim`` dims, the tail few or none. So giving popular rows more embedding dimensions
really pays, and the generator's own probabilities give the Bayes NE, the best any model can do.

Inputs, per table f with n_f ids (id 0 = the empty/default token):
- id 0 takes ``default_mass_f`` of the accesses; the other ids are drawn by bounded Zipf over
  popularity ranks 1..n_f-1 (P(r) ~ r^-s_f, s_f seeded per table in [zipf_min, zipf_max]);
- the rank -> id map drifts: each new day a random ``drift`` fraction of ranks trade ids among
  themselves, so some popular ids fall into the tail and some tail ids become popular;
- width(id) = round(L * clip(1 - ln(1+r)/ln(1+r0), 0, 1)) with r the id's rank by expected
  frequency over all days and r0 = ``width_tail`` * n_f (ids past r0 have width 0).
Dense features (Criteo: I1..I13) are log(1+count) of zero-inflated log-normal counts.

Randomness is counter-based (one numpy Generator per 65,536-row block, per table, per day), so
the bytes depend only on the config, never on chunking. Memory: ~25 bytes per id kept (Zipf CDF
float64, rank map int32, width uint8, latent offsets int32, scalar effect float32, latent values:
sum of widths x 4 bytes, ~0.5-1 dims per id at scale 1) plus transient popularity counts (8
bytes per id) and ~100 MB of per-chunk buffers; rows go to disk in chunks, so the row count
does not matter. Criteo at scale=1 (33.8M ids): 1.06 GB peak RSS measured (300k rows).

Modules: ``config`` (the settings and their fingerprint), ``presets`` (the imitated datasets),
``laws`` (days, Zipf access laws, drift), ``planted`` (the label model), ``generation`` (rows to
disk, reuse).
"""
from benchmark.data.synthetic.config import (GENERATOR_VERSION, SyntheticConfig, as_config,
                                             default_path, knob_suffix)
from benchmark.data.synthetic.generation import (BLOCK_ROWS, CHUNK_BLOCKS, ensure_synthetic,
                                                 generate)
from benchmark.data.synthetic.laws import (DayMaps, TableLaw, build_law, day_starts,
                                           split_ranges)
from benchmark.data.synthetic.planted import PlantedModel, PlantedTable, build_planted
from benchmark.data.synthetic.presets import PRESETS, Preset, table_rows

__all__ = ["SyntheticConfig", "PRESETS", "Preset", "TableLaw", "DayMaps", "PlantedModel",
           "as_config", "build_law", "build_planted", "generate", "ensure_synthetic",
           "table_rows", "day_starts", "split_ranges", "default_path", "knob_suffix"]
