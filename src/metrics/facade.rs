//! The metrics as the `metrics` crate sees them, so whatever exporter a service runs
//! (Prometheus, StatsD, OpenTelemetry, ...) picks them up.
//!
//! Each series becomes two counters, `<name>_sum` and `<name>_count` (a Prometheus summary
//! without quantiles: `rate(sum) / rate(count)` is the mean), and a sampled one also a gauge,
//! `<name>`, holding its latest value. Labels: `stream`, `shard`, `error_code` where the series
//! has them, and the configured `metrics_dimension`s. Handles are registered once per series, so an export is a few atomic stores.

use metrics_facade::{Counter, Gauge, Label};

use super::Stat;
use super::names::{Dims, Name};

/// A series' handles in the installed recorder.
#[derive(Debug)]
pub(crate) struct Handles {
    sum: Counter,
    count: Counter,
    gauge: Option<Gauge>,
}

fn labels(key: &Dims, extra: &[(String, String)]) -> Vec<Label> {
    let mut labels: Vec<Label> = extra
        .iter()
        .map(|(k, v)| Label::new(k.clone(), v.clone()))
        .collect();
    if let Some(s) = &key.stream {
        labels.push(Label::new("stream", s.to_string()));
    }
    if let Some(s) = &key.shard {
        labels.push(Label::new("shard", s.to_string()));
    }
    if let Some(c) = &key.code {
        labels.push(Label::new("error_code", c.to_string()));
    }
    labels
}

fn register(name: Name, key: &Dims, extra: &[(String, String)]) -> Handles {
    let base = name.exported();
    let labels = labels(key, extra);
    Handles {
        sum: metrics_facade::counter!(format!("{base}_sum"), labels.clone()),
        count: metrics_facade::counter!(format!("{base}_count"), labels.clone()),
        gauge: name
            .is_sampled()
            .then(|| metrics_facade::gauge!(base, labels)),
    }
}

/// One series to export: what the store keeps of it, and where its handles are kept.
pub(crate) struct Export<'a> {
    pub(crate) name: Name,
    pub(crate) dims: &'a Dims,
    pub(crate) total: &'a Stat,
    pub(crate) last: f64,
    pub(crate) handles: &'a mut Option<Handles>,
}

/// Hands `series` (those changed since the last export) to the `metrics` crate's recorder.
pub(crate) fn export<'a>(series: impl Iterator<Item = Export<'a>>, extra: &[(String, String)]) {
    for s in series {
        let h = s
            .handles
            .get_or_insert_with(|| register(s.name, s.dims, extra));
        // Counters take whole numbers: sums of milliseconds and bytes are rounded, from the
        // exact total each time, so no error accumulates.
        h.sum.absolute(s.total.sum.max(0.0).round() as u64);
        h.count.absolute(s.total.count);
        if let Some(g) = &h.gauge {
            g.set(s.last);
        }
    }
}
