"""How candidates are sampled (the method's N per temperature, SPEC section 1): one declaration
for the backend, offline sampling and the CLI, with each setting's option and environment
variable (illume.options). Light to import: the sampling itself is illume.vlm."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from illume.errors import IllumeError
from illume.options import option

# The product's default share of candidates sampled with the adapter disabled: the hot half of
# 5 x T=0.3 + 5 x T=0.8, the setting measured in benchmarks/data_efficiency.py (README, Diversity).
DEFAULT_BASE_SHARE = 0.5


@dataclass(frozen=True)
class SamplingConfig:
    temperatures: tuple[float, ...] = option((0.3, 0.8), "Sampling temperatures, comma-separated.",
                                             env="ILLUME_TEMPERATURES", min=0, min_open=True)
    per_temperature: int = option(5, "Candidates sampled at each temperature.", env="ILLUME_PER_TEMPERATURE", min=1)
    top_k_fraction: float = option(0.1, "Top-k over this best fraction of the vocabulary.",
                                   env="ILLUME_TOP_K_FRACTION", min=0, min_open=True, max=1)
    max_new_tokens: int = option(100, "Longest candidate, in tokens.", env="ILLUME_MAX_NEW_TOKENS", min=1)
    seed: int = option(0, "Sampling seed; with each task's key (its id and the options it holds) it fixes the "
                          "task's candidates, whatever batch the task is sampled in.", env="ILLUME_SEED")
    # 0 here (the published method); the product (PRODUCT_SAMPLING) samples DEFAULT_BASE_SHARE so.
    base_share: float = option(0.0, (
        "Diversity remedy: with an adapter loaded, this share of each task's candidates (hottest temperature "
        "first) is sampled with the adapter disabled, i.e. by the model as built; the adapter stays unmerged "
        "(slower per token, ml_backend/README.md). 0: all from the adapter."), env="ILLUME_BASE_SHARE", min=0, max=1)

    def __post_init__(self) -> None:
        if not 0.0 <= self.base_share <= 1.0:
            raise IllumeError(f"base share {self.base_share} is not between 0 and 1",
                              "Pass the share of candidates to sample with the adapter disabled, e.g. 0.5 (0: none).")
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise IllumeError(f"temperatures {self.temperatures} are not all above 0",
                              "Pass at least one temperature above 0, e.g. 0.3,0.8.")

    @property
    def count(self) -> int:
        return self.per_temperature * len(self.temperatures)

    def base_counts(self) -> list[int]:
        """Per temperature (in config order): how many of its candidates the base model samples."""
        left = int(self.base_share * self.count + 0.5)
        counts = [0] * len(self.temperatures)
        for index in sorted(range(len(self.temperatures)), key=lambda i: -self.temperatures[i]):
            counts[index] = min(self.per_temperature, left)
            left -= counts[index]
        return counts


# What the product samples by default (the backend, offline sampling, and the loop through them):
# the method's settings with the diversity remedy on.
PRODUCT_SAMPLING = dataclasses.replace(SamplingConfig(), base_share=DEFAULT_BASE_SHARE)


def preselect_option():
    """The pre-annotation policy, a field of the backend's settings and of offline sampling (which
    stores predictions as the backend does): declared here once for both."""
    return option(0, "Pre-annotation policy: how many best-scored candidates each prediction pre-ticks. 0 (no "
                     "pre-ticks) asks annotators to select, as the method does; pre-ticks left standing would train "
                     "the model on its own guesses (`illume-sync export` and `status` count them).",
                  env="ILLUME_PRESELECT", min=0)
