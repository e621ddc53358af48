"""Series labels -> (server id, metric): the names dashboards and APIs give a series.

Read without a pattern, in this order:

- a Prometheus selector, ``node_load1{instance="web-01:9100", job="node"}`` or ``{instance="web-01:9100"}``: the
  server is the ``instance`` label with its port stripped (else ``host``, ``hostname``, ``nodename``, ``node``,
  ``server``), the metric the ``metric`` label, else ``__name__``, else the name before the braces;
- a Datadog query, ``avg:system.disk.in_use{host:web-01}``: the server is the ``host`` tag, the metric the name
  between the aggregator and the braces;
- words: an EC2 instance id (``i-0abc...``) or, of two words, the one that is not a metric name is the server;
  a word that is a metric name (through the alias table, or a node_exporter name) is the metric; a statistic in
  parentheses (``(Average)``) is dropped. So ``i-0abc CPUUtilization``, ``CPUUtilization i-0abc (Average)`` and
  ``web-01 cpu`` all read, and so does ``<server_id> <metric>`` for any names (CloudWatch ``Label`` convention).

``--label-format`` gives a pattern instead: ``{server}`` and ``{metric}`` capture, ``{_}`` skips any text, the
rest is literal, and the whole label must match (``{metric}-{server}``, ``{_}/{server}/{metric}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from capacity_forecaster.errors import InputError

EC2_INSTANCE_ID: Final[re.Pattern[str]] = re.compile(r"(?<![0-9A-Za-z])i-[0-9a-f]{8,17}(?![0-9a-f])")
SERVER_LABELS: Final[tuple[str, ...]] = ("instance", "host", "hostname", "nodename", "node", "server", "instance_id")
PROM_SELECTOR: Final[re.Pattern[str]] = re.compile(r"^\s*(?P<name>[A-Za-z_:][\w:.]*)?\s*\{(?P<labels>.*)\}\s*$")
PROM_PAIR: Final[re.Pattern[str]] = re.compile(r'([A-Za-z_][\w]*)\s*=~?\s*"((?:[^"\\]|\\.)*)"')
DATADOG_QUERY: Final[re.Pattern[str]] = re.compile(
    r"^\s*(?:(?:avg|sum|min|max|count):)?(?P<name>[A-Za-z_][\w.]*)\s*[{(](?P<tags>[^})]*)[})]"
)
STATISTIC: Final[re.Pattern[str]] = re.compile(r"\((?:Average|Maximum|Minimum|Sum|SampleCount|p\d+(?:\.\d+)?)\)", re.I)

NODE_EXPORTER_HINTS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"node_cpu_seconds_total|node_cpu_utili[sz]ation|cpu_usage|cpu_utili[sz]ation", re.I), "cpu"),
    (re.compile(r"node_memory_(MemAvailable|MemFree|MemTotal|Buffers|Cached)|node_memory_utili[sz]ation", re.I), "mem"),
    (re.compile(r"node_filesystem_(avail|free|size)_bytes|node_filesystem_usage|filesystem_used", re.I), "disk"),
    (re.compile(r"node_network_(receive|transmit)_bytes_total|node_network_(receive|transmit)", re.I), "net"),
)
"""node_exporter metric names (raw or in recording rules and expressions) -> metric. Applied to a series'
``__name__`` and to the ``--metric`` hint: ``100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}
[5m])))`` is cpu; ``1 - node_filesystem_avail_bytes / node_filesystem_size_bytes`` is disk."""


def strip_port(instance: str) -> str:
    """``web-01:9100`` -> ``web-01``, ``[::1]:9100`` -> ``::1``, ``10.0.0.5:9100`` -> ``10.0.0.5``."""
    text = instance.strip()
    bracketed = re.fullmatch(r"\[(.+)\](?::\d+)?", text)
    if bracketed:
        return bracketed.group(1)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit():
            return host
    return text


def metric_from_name(name: str, aliases: Mapping[str, str]) -> str:
    """A name or expression as the metric of a row: the name as read when the alias table knows it (the row rules
    map it), the canonical metric when a node_exporter hint names it, else the name (rejected as unknown_metric)."""
    text = name.strip()
    if text.lower() in aliases:
        return text
    for pattern, metric in NODE_EXPORTER_HINTS:
        if pattern.search(text):
            return metric
    return text


def _is_metric(word: str, aliases: Mapping[str, str]) -> bool:
    return word.lower() in aliases or any(p.fullmatch(word) or p.match(word) for p, _ in NODE_EXPORTER_HINTS)


def compile_label_format(pattern: str) -> re.Pattern[str]:
    """``--label-format`` -> a regex with ``server`` and ``metric`` groups; :class:`InputError` when it has neither."""
    if "{server}" not in pattern and "{metric}" not in pattern:
        raise InputError(f"--label-format {pattern!r} has neither {{server}} nor {{metric}}")
    parts = re.split(r"(\{server\}|\{metric\}|\{_\})", pattern)
    groups = {"{server}": r"(?P<server>.+?)", "{metric}": r"(?P<metric>.+?)", "{_}": r".*?"}
    seen: set[str] = set()
    regex = ""
    for part in parts:
        if part in groups:
            if part in seen and part != "{_}":
                raise InputError(f"--label-format {pattern!r} names {part} twice")
            seen.add(part)
            regex += groups[part]
        else:
            regex += re.escape(part)
    return re.compile(regex + r"$")


def parse_label(
    label: str,
    aliases: Mapping[str, str],
    *,
    pattern: re.Pattern[str] | None = None,
    single: str = "metric",
) -> tuple[str, str, dict[str, str]]:
    """``(server, metric, extra labels)`` of one series label (see the module docstring); "" where unknown.

    ``single``: what a label of one word that is neither a metric nor an instance id is (``"metric"`` for a
    CloudWatch ``Label``, ``"server"`` for a dashboard column, whose legend is often just the host).
    """
    text = label.strip()
    if pattern is not None:
        match = pattern.match(text)
        if not match:
            return "", "", {}
        found = match.groupdict()
        server, metric = (found.get("server") or "").strip(), (found.get("metric") or "").strip()
        return server, metric_from_name(metric, aliases) if metric else "", {}
    selector = PROM_SELECTOR.match(text)
    if selector and "=" in selector.group("labels"):
        labels = {k: v for k, v in PROM_PAIR.findall(selector.group("labels"))}
        server = next((strip_port(labels[k]) for k in SERVER_LABELS if labels.get(k)), "")
        name = labels.get("metric") or labels.get("__name__") or selector.group("name") or ""
        extra = {k: v for k, v in labels.items() if k not in ("__name__", "metric")}
        return server, metric_from_name(name, aliases) if name else "", extra
    query = DATADOG_QUERY.match(text)
    if query and ":" in query.group("tags"):
        tags = dict(t.strip().partition(":")[::2] for t in query.group("tags").split(",") if ":" in t)
        server = next((tags[k] for k in ("host", "hostname", "instance", "instance-id") if tags.get(k)), "")
        return server, metric_from_name(query.group("name"), aliases), {}
    words = STATISTIC.sub(" ", text).split()
    instance = next((w for w in words if EC2_INSTANCE_ID.fullmatch(w)), "")
    metrics = [w for w in words if _is_metric(w, aliases)]
    if instance:
        rest = [w for w in words if w != instance]
        return instance, metric_from_name(metrics[0] if metrics else " ".join(rest), aliases) if rest else "", {}
    if len(words) == 2:
        first, second = words
        if _is_metric(first, aliases) and not _is_metric(second, aliases):
            return strip_port(second), metric_from_name(first, aliases), {}
        return strip_port(first), metric_from_name(second, aliases), {}
    if len(words) == 1:
        (word,) = words
        if _is_metric(word, aliases):
            return "", metric_from_name(word, aliases), {}
        return (strip_port(word), "", {}) if single == "server" else ("", word, {})
    return "", text, {}
