"""docs/grafana-dashboard.json: importable as is, and every query is PromQL over series the bot really exposes.

Without a Grafana here, the checks are: the fields Grafana's importer needs; a Prometheus datasource
variable every panel and query uses; a layout on Grafana's 24-column grid with no overlaps; every
expression parsed by a PromQL parser (promql-parser, the Rust parser's bindings); every metric name in
them present in a live /metrics of a bot that ran a task; every label they group, match or show by
present on those series; rates only over counters, quantiles only over histogram buckets by `le`; and
every family the bot exposes shown by some panel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from tests.conftest import Harness, png_bytes
from tests.scrape import Scrape, scrape

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own variables, as Grafana fills them in before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1d", "$__interval": "15s"}
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
COUNTING_FUNCTIONS = {"rate", "irate", "increase"}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def _promql(expr: str) -> promql_parser.Expr:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)


def test_the_dashboard_has_what_grafanas_import_needs() -> None:
    dashboard = _dashboard()
    assert dashboard["title"] == "Image Prompt Bot"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["id"] is None  # Grafana gives an imported dashboard its own id
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36  # datasources referenced by uid, as here
    assert {"time", "templating", "panels", "editable", "version"} <= set(dashboard)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"] == DATASOURCE
    assert _promql(
        instance["query"]["query"]
        .replace("label_values(", "group by (instance) (")
        .replace(", instance)", ")")
    )

    ids: set[int] = set()
    cells: set[tuple[int, int]] = set()
    for panel in _panels(dashboard):
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["id"] not in ids, f"panel id {panel['id']} used twice"
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert grid["w"] > 0
        assert grid["h"] > 0
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["title"]
        assert panel["description"], f"{panel['title']} has no description"
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
            assert target["expr"].strip()


def _exposed(metrics: Scrape) -> dict[str, set[str]]:
    """Return every series name the bot exposes, with the label names its samples carry."""
    names: dict[str, set[str]] = {}
    for sample in metrics.samples():
        names.setdefault(sample.name, set()).update(sample.labels)
    return names


@pytest.fixture
async def exposed(harness: Harness) -> dict[str, set[str]]:
    """The series of a bot that ran a task whose first reply edit Discord refused once (a 429)."""
    harness.discord.fail_next("PATCH", r"/webhooks/", status=429, retry_after=0.01)
    bot = await harness.start_bot(describe_provider="freepik", metrics_port=0)
    await harness.interact(bot, harness.describe_payload(png_bytes(colour=(3, 2, 1))))
    return _exposed(await scrape(bot))


def _selectors(tree: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        elif isinstance(node, promql_parser.MatrixSelector):
            found.append(node.vector_selector)

    promql_parser.walk(tree, pre_visit=visit)
    return found


def _grouping_labels(tree: promql_parser.Expr) -> set[str]:
    """Return the labels an expression aggregates by or matches on."""
    labels: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and getattr(node.modifier, "matching", None):
            labels.update(node.modifier.matching.labels)

    promql_parser.walk(tree, pre_visit=visit)
    return labels


def _check_functions(title: str, tree: promql_parser.Expr) -> None:
    def visit(node: object) -> None:
        if not isinstance(node, promql_parser.Call):
            return
        name = node.func.name
        if name in COUNTING_FUNCTIONS:
            [matrix] = node.args
            series = matrix.vector_selector.name
            assert series.endswith(("_total", "_bucket", "_count", "_sum")), (
                f"{title}: {name}() over {series}, which is not a counter"
            )
        if name == "histogram_quantile":
            _, buckets = node.args
            assert isinstance(buckets, promql_parser.AggregateExpr), (
                f"{title}: quantile of an unaggregated rate"
            )
            assert "le" in buckets.modifier.labels, f"{title}: quantile aggregated without le"
            assert all(s.name.endswith("_bucket") for s in _selectors(buckets)), title

    promql_parser.walk(tree, pre_visit=visit)


async def test_every_query_is_promql_over_series_the_bot_exposes(exposed: dict[str, set[str]]) -> None:
    dashboard = _dashboard()
    used: set[str] = set()
    checked = 0
    for title, target in _queries(dashboard):
        tree = _promql(target["expr"])
        selectors = _selectors(tree)
        assert selectors, f"{title}: no series"
        labels_here: set[str] = set(TARGET_LABELS)
        for selector in selectors:
            assert selector.name in exposed, f"{title}: {selector.name} is not in the bot's /metrics"
            labels_here |= exposed[selector.name]
            for matcher in selector.matchers.matchers:
                assert matcher.name in exposed[selector.name] | TARGET_LABELS, (
                    f"{title}: {selector.name} has no label {matcher.name}"
                )
            used.add(selector.name)
        assert _grouping_labels(tree) <= labels_here, f"{title}: groups by a label its series lack"
        shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert shown <= labels_here, f"{title}: the legend shows a label its series lack"
        _check_functions(title, tree)
        checked += 1
    assert checked >= 25
    # Every family the bot defines has a panel: a counter by its _total, a histogram by its buckets.
    families = {
        re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exposed if name.startswith("imagebot_")
    }
    shown_families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert families - shown_families == set(), "families without a panel"


async def test_the_readme_lists_every_metric_the_bot_exposes(exposed: dict[str, set[str]]) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(imagebot_\w+)`", section))
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in exposed if name.startswith("imagebot_")}
    assert listed == families
