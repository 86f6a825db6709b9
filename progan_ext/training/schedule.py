"""The progressive schedule: where training is after ``nimg`` images.

Phases: 4x4 stable, then for each next resolution a fade-in (alpha 0 -> 1 linearly over
``kimg_fade``) and a stable phase (``kimg_stable``). The last stable phase runs until
``total_kimg`` when that is given (the official runs keep training at the final resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..networks import resolutions_up_to

__all__ = ["Phase", "Position", "Schedule"]


@dataclass(frozen=True)
class Phase:
    index: int
    resolution: int
    kind: str  # "stable" or "fade"
    start_nimg: int
    end_nimg: int


@dataclass(frozen=True)
class Position:
    phase: Phase
    alpha: float
    nimg: int

    @property
    def resolution(self) -> int:
        return self.phase.resolution


class Schedule:
    def __init__(self, max_resolution: int, kimg_stable: float, kimg_fade: float, total_kimg: float | None = None):
        phases, nimg = [], 0
        for i, r in enumerate(resolutions_up_to(max_resolution)):
            kinds = ["stable"] if i == 0 else ["fade", "stable"]
            for kind in kinds:
                length = int(round(1000 * (kimg_fade if kind == "fade" else kimg_stable)))
                phases.append(Phase(len(phases), r, kind, nimg, nimg + length))
                nimg += length
        if total_kimg is not None:
            total = int(round(1000 * total_kimg))
            last = phases[-1]
            if total < last.start_nimg:
                raise ValueError(
                    f"--total-kimg {total_kimg} ends before the final resolution is reached "
                    f"({last.start_nimg / 1000:g} kimg); raise it or shorten the phases"
                )
            phases[-1] = Phase(last.index, last.resolution, last.kind, last.start_nimg, total)
        self.phases = phases
        self.total_nimg = phases[-1].end_nimg

    def at(self, nimg: int) -> Position:
        for ph in self.phases:
            if nimg < ph.end_nimg:
                alpha = 1.0
                if ph.kind == "fade":
                    alpha = (nimg - ph.start_nimg) / max(1, ph.end_nimg - ph.start_nimg)
                return Position(ph, alpha, nimg)
        last = self.phases[-1]
        return Position(last, 1.0, nimg)

    def done(self, nimg: int) -> bool:
        return nimg >= self.total_nimg

    def describe(self) -> str:
        return " -> ".join(
            f"{p.resolution}{'fade' if p.kind == 'fade' else ''}({(p.end_nimg - p.start_nimg) / 1000:g}k)"
            for p in self.phases
        )
