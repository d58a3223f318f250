"""Decoding options as plain data (no torch), so that the service's routes and job records can
build and check them without loading the model's libraries.

`DecodeOptions` is what one request asks of the COMMIT decoding loop (`models/decoding.py`);
`check_schedule` validates a mask schedule's official name (`models/schedule.py` computes it).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("cosine", "exp", "linear", "log", "pow2", "uniform")  # and any powP


def schedule_exponent(method: str) -> float | None:
    """P of a `powP` method; None for the other methods."""
    if not method.startswith("pow"):
        return None
    try:
        p = float(method[3:])
    except ValueError:
        raise ValueError(f"mask schedule {method!r}: pow needs an exponent, e.g. pow2") from None
    if not p > 0:
        raise ValueError(f"mask schedule {method!r}: the exponent must be positive")
    return p


def check_schedule(method: str) -> None:
    """Raise ValueError unless `method` names an official mask schedule."""
    if method not in ("cosine", "exp", "linear", "log", "uniform") and (
        schedule_exponent(method) is None
    ):
        raise ValueError(f"unknown mask schedule {method!r}; use one of {SCHEDULES}")


@dataclass(frozen=True)
class DecodeOptions:
    steps: int = 12
    temperature: float = 1.0
    # 4.5 is the official UCF-101 class-conditional setting (BAIR frame prediction uses 400).
    choice_temperature: float = 4.5
    # top-k / top-p restrict which tokens are drawn; the confidence used for re-masking stays
    # the log-prob under the full distribution (the official code does not renormalise it).
    top_k: int | None = None
    top_p: float | None = None
    # Classifier-free guidance scale s, as the official code: logits = c + s * (c - u), where c
    # is the conditional pass and u the unconditional one (class token, task token and condition
    # tokens replaced by [MASK]). s = 0 is plain conditional decoding (the default: off); s = 1
    # is twice as far from u as c is. Not the diffusion convention u + w (c - u): w = s + 1.
    guidance_scale: float = 0.0
    # The mask schedule by its official name (models.schedule): cosine, exp, uniform/linear,
    # log or powP.
    schedule: str = "cosine"

    @classmethod
    def preset(cls, name: str, **overrides) -> DecodeOptions:
        """A named set of official decoding settings (`DECODE_PRESETS`), fields overridable."""
        if name not in DECODE_PRESETS:
            raise ValueError(f"unknown decoding preset {name!r}; known: {sorted(DECODE_PRESETS)}")
        return cls(**{**DECODE_PRESETS[name], **overrides})

    def __post_init__(self) -> None:
        check_schedule(self.schedule)
        if self.steps < 1:
            raise ValueError("steps must be at least 1")
        if self.temperature < 0 or self.choice_temperature < 0:
            raise ValueError("temperatures must be non-negative")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


# The official evaluation settings. "ucf-cg" is this project's default (cosine, 4.5).
DECODE_PRESETS: dict[str, dict] = {
    "ucf-cg": {"schedule": "cosine", "choice_temperature": 4.5},
    # BAIR frame prediction as the official evaluation decodes it.
    "bair-fp": {"schedule": "exp", "choice_temperature": 400.0},
}
