//! How one Prometheus metric family is written from plain samples: the helper every section of
//! `/metrics` uses, so a family is one call with its name, help, type and `(labels, value)` pairs.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A sample's labels, in order.
pub(crate) type Labels = Vec<(&'static str, String)>;

/// Writes one family: its descriptor, then each sample (a lone label-less sample without `{}`).
pub(crate) fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels, u64)],
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    if let [(labels, value)] = samples {
        if labels.is_empty() {
            // A label-less sample is written without `{}`.
            return value_of(kind, *value, metric);
        }
    }
    for (labels, value) in samples {
        value_of(kind, *value, metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn value_of(kind: MetricType, value: u64, enc: MetricEncoder<'_>) -> fmt::Result {
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(enc),
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(enc),
    }
}
