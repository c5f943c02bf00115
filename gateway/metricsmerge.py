"""Merge the Prometheus expositions of several worker processes into one (pure).

With `run --workers N` every worker counts what it handled; a scrape of /metrics, answered by
whichever worker the kernel picked, must still show the whole gateway. Samples with the same
name and labels are combined: counters, histograms and most gauges are summed (each worker has
its own buffer shard, so pending bytes and capacity add up); the gauges below are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

# How a gauge combines across workers when summing would be wrong.
GAUGE_COMBINE = {
    "gateway_upstream_up": min,  # up only if every worker reaches it
    "gateway_buffer_full": max,
    "gateway_buffer_oldest_age_seconds": max,
    "gateway_build_info": max,
}


def merge_expositions(texts: Iterable[str]) -> bytes:
    """One exposition (text format 0.0.4) holding the combined samples of all `texts`."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            combine = _combiner(family)
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = samples.get(key)
                samples[key] = (
                    sample.value if old is None else combine(sample.name, old, sample.value)
                )
    for name, merged in families.items():
        merged.samples = [
            Sample(sample_name, dict(labels), value)
            for (sample_name, labels), value in values[name].items()
        ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


def _combiner(family: Metric):  # type: ignore[no-untyped-def]
    special = GAUGE_COMBINE.get(family.name) if family.type == "gauge" else None

    def combine(sample_name: str, a: float, b: float) -> float:
        if sample_name.endswith("_created"):
            return min(a, b)  # the earliest worker's start of the series
        if special is not None:
            return float(special(a, b))
        return a + b

    return combine


class _Fixed:
    """A collector returning given metric families."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families
