"""GET /metrics read by the official Prometheus parser (prometheus_client) after a known workload."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from gateway import start_gateway
from prometheus_client.parser import text_string_to_metric_families

from clawgate_client import Client


def scrape(url: str) -> dict[str, object]:
    http = url.replace("ws://", "http://", 1)
    with urllib.request.urlopen(http + "metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, object], family: str, name: str, **labels: str) -> float:
    fam = families[family]
    return sum(
        s.value
        for s in fam.samples  # type: ignore[attr-defined]
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_the_official_parser_reads_the_counts_of_a_known_workload(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "data")
    try:
        async with Client.connect(gw.url, request_timeout=10.0) as client:
            for _ in range(7):
                await client.gateway.health()
            await client.call("sessions.list", {"limit": 5})
        families = scrape(gw.url)
        # The parser names a counter family without `_total`; its samples keep it.
        calls = "clawgate_rpc_calls"
        assert families[calls].type == "counter"  # type: ignore[attr-defined]
        assert sample(families, calls, "clawgate_rpc_calls_total", method="gateway.health", code="ok") == 7
        assert sample(families, calls, "clawgate_rpc_calls_total", method="sessions.list", code="ok") == 1
        hist = "clawgate_rpc_duration_seconds"
        assert families[hist].type == "histogram"  # type: ignore[attr-defined]
        assert sample(families, hist, "clawgate_rpc_duration_seconds_count", method="gateway.health") == 7
        assert (
            sample(families, hist, "clawgate_rpc_duration_seconds_bucket", method="gateway.health", le="+Inf")
            == 7
        )
        for family in [
            "clawgate_connections",
            "clawgate_subscriptions",
            "clawgate_runs_active",
            "clawgate_auth_failures",
            "clawgate_auth_lockouts",
            "process_resident_memory_bytes",
        ]:
            assert family in families, family
        assert sample(families, "process_resident_memory_bytes", "process_resident_memory_bytes") > 1e6
    finally:
        assert gw.stop() == 0, gw.log()
