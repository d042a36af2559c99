"""The telemetry tables: their columns, how rows are inserted, and their migration.

Three live tables in `<state_dir>/telemetry/telemetry.duckdb` (component `telemetry` of
`mixer.migrations`), one per OTLP signal. Times are `TIMESTAMP` in UTC (microseconds); trace and
span ids are lowercase hex; `attributes` / `resource` are JSON objects (OTLP values: strings,
numbers, booleans, lists, objects; bytes as base64).

- `spans`: one row per span. `kind` is `internal|server|client|producer|consumer|unspecified`,
  `status_code` is `unset|ok|error`; `events` and `links` are JSON lists.
- `metric_points`: one row per data point. `kind` is `sum|gauge|histogram|
  exponential_histogram|summary`; `value` for sum and gauge; `count`, `sum`, `bucket_bounds`,
  `bucket_counts` (len(bounds) + 1 counts, upper bounds inclusive), `min`, `max` for histograms
  (an exponential histogram is converted to explicit bounds: negative buckets, the zero bucket
  up to its threshold, positive buckets); `count`, `sum` and `quantiles` (JSON list of
  `{"quantile", "value"}`) for summaries; `start_ts`, `temporality` (`delta|cumulative`) and
  `monotonic` where OTLP has them.
- `logs`: one row per log record; `ts` is the record's time, else its observed time, else the
  time it was received; `body` is the string body, or the JSON of any other body.

Rows are tuples in column order; times as integer microseconds since the epoch. A batch is
inserted column-wise in one statement (`INSERT ... SELECT UNNEST(?), UNNEST(?), ...`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mixer.migrations import Migration

__all__ = ["LOGS", "METRIC_POINTS", "MIGRATIONS", "SPANS", "TABLES", "Column", "Table"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Table:
    """A live table; `time` is the column its hourly archive partitions are cut on."""

    name: str
    time: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def create(self) -> str:
        columns = ",\n    ".join(f"{c.name} {c.type}" for c in self.columns)
        return f"CREATE TABLE {self.name} (\n    {columns}\n)"

    def insert(self) -> str:
        """One statement inserting a batch given as one list parameter per column."""
        return f"INSERT INTO {self.name} SELECT " + ", ".join(map(_unnest, self.columns))


def _unnest(column: Column) -> str:
    if column.type == "TIMESTAMP":  # given as integer microseconds since the epoch
        return f"make_timestamp(UNNEST(?::BIGINT[])) AS {column.name}"
    if column.type == "JSON":  # given as text
        return f"UNNEST(?::VARCHAR[])::JSON AS {column.name}"
    return f"UNNEST(?::{column.type}[]) AS {column.name}"


def _columns(spec: str) -> tuple[Column, ...]:
    pairs = (line.split() for line in spec.strip().splitlines())
    return tuple(Column(name, type_) for name, type_ in pairs)


SPANS = Table(
    "spans",
    "ts_start",
    _columns("""
        ts_start TIMESTAMP
        ts_end TIMESTAMP
        duration_us BIGINT
        trace_id VARCHAR
        span_id VARCHAR
        parent_span_id VARCHAR
        name VARCHAR
        kind VARCHAR
        status_code VARCHAR
        status_message VARCHAR
        service_name VARCHAR
        rack VARCHAR
        entity_id VARCHAR
        scenario VARCHAR
        scenario_hash VARCHAR
        gear VARCHAR
        flux_id VARCHAR
        attributes JSON
        resource JSON
        events JSON
        links JSON
    """),
)

METRIC_POINTS = Table(
    "metric_points",
    "ts",
    _columns("""
        ts TIMESTAMP
        name VARCHAR
        kind VARCHAR
        unit VARCHAR
        value DOUBLE
        count BIGINT
        sum DOUBLE
        bucket_bounds DOUBLE[]
        bucket_counts BIGINT[]
        rack VARCHAR
        gear VARCHAR
        wire VARCHAR
        scenario VARCHAR
        service_name VARCHAR
        attributes JSON
        resource JSON
        start_ts TIMESTAMP
        temporality VARCHAR
        monotonic BOOLEAN
        min DOUBLE
        max DOUBLE
        quantiles JSON
    """),
)

LOGS = Table(
    "logs",
    "ts",
    _columns("""
        ts TIMESTAMP
        severity_number INTEGER
        severity_text VARCHAR
        body VARCHAR
        trace_id VARCHAR
        span_id VARCHAR
        rack VARCHAR
        gear VARCHAR
        service_name VARCHAR
        attributes JSON
        resource JSON
    """),
)

TABLES: tuple[Table, ...] = (SPANS, METRIC_POINTS, LOGS)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "spans, metric_points and logs", tuple(t.create() for t in TABLES)),
)
