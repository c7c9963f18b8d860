"""Reading a component's Prometheus ``/metrics`` in tests: scrape it over HTTP(S), parse it with
prometheus_client's own parser, and look samples up by name and labels.

    page = scrape(node.metrics_url)
    page.value("qss_keys_served_total", interface="etsi014", master_sae="a")

``value`` sums the samples whose labels include the given ones (0.0 when none does), so a test
can ask for a total over the labels it does not name. ``text`` is the exposition as served, for
scanning it for what must never appear (key IDs, key material).
"""

from __future__ import annotations

import ssl
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Page:
    text: str
    samples: tuple[Sample, ...]

    def value(self, name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
            for s in self.samples
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


def parse(text: str) -> Page:
    samples = tuple(s for family in text_string_to_metric_families(text) for s in family.samples)
    return Page(text=text, samples=samples)


def scrape(url: str, *, context: ssl.SSLContext | None = None, timeout: float = 10.0) -> Page:
    """GET ``url`` (a component's /metrics) and parse it; raises on any status but 200."""
    with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
        assert answer.status == 200, f"{url}: HTTP {answer.status}"
        content_type = answer.headers.get("Content-Type", "")
        assert content_type.startswith("text/plain"), f"{url}: Content-Type {content_type}"
        return parse(answer.read().decode("utf-8"))
