"""The metrics docs/operations.md lists are the ones ``server/metrics.py`` exposes, with the same types and labels,
in both formats a scraper may ask for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import EngineGauges, Metrics

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(antiphon_\w+)` \| (counter|gauge|histogram) \| ([\w, ]+) \|", re.M)
OPENMETRICS = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """Each metric of docs/operations.md's tables: its type and labels (counters by their name without ``_total``,
    as the parsers name a family)."""
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    return {
        name.removesuffix("_total"): (kind, frozenset(label.strip() for label in labels.split(",")))
        for name, kind, labels in ROW.findall(text)
    }


def recorded() -> Metrics:
    """A registry that has seen one of everything the engines and transports report, so every series exists."""
    metrics = Metrics(lambda: [EngineGauges("m", 1, 0, sessions=1, prefix_entries=1, prefix_hits=1, prefix_misses=1)])
    metrics.text_request("m", "grpc", "generate", "stop", 0.01, 0.1, 3, 5)
    metrics.audio_request("a", "websocket", "stop", 0.01, 0.5, 8000, 16000)
    metrics.image_request("i", "http", "stop", 0.01, 0.2, 3)
    metrics.classify_request("c", "http", "stop", 0.01)
    metrics.iteration("m", 0.01, 1)
    metrics.token_gap("m", 0.001)
    metrics.error("http", "400")
    return metrics


def exposed(accept: str) -> dict[str, tuple[str, frozenset[str]]]:
    body, content_type = recorded().exposition(accept)
    if content_type.startswith("application/openmetrics-text"):
        families = list(parse_openmetrics(body.decode()))
    else:
        families = list(text_string_to_metric_families(body.decode()))
    return {
        f.name: (f.type, frozenset(label for s in f.samples for label in s.labels if label != "le"))
        for f in families
        if not f.name.endswith("_created")  # prometheus_client's, documented as such
    }


def test_the_tables_list_metrics() -> None:
    """The tables are read: eighteen metrics, each with its labels."""
    assert len(documented()) == 18


@pytest.mark.parametrize("accept", ["", OPENMETRICS], ids=["text", "openmetrics"])
def test_every_documented_metric_is_exposed_with_its_labels_and_no_other(accept: str) -> None:
    """The exposed families are exactly the documented ones, with the documented types and labels."""
    assert exposed(accept) == documented()


def test_openmetrics_is_answered_when_asked_for() -> None:
    """A scraper asking for OpenMetrics (as Prometheus does) gets it, ended by ``# EOF``."""
    body, content_type = recorded().exposition(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.decode().endswith("# EOF\n")
