//! The bill: what a run's traffic would cost a month on Kinesis Data Streams, provisioned and
//! on demand, from what the run measured (Kinesis records, bytes and PUT payload units put per
//! second), at list prices the user can override.
//!
//! The arithmetic, as AWS's pricing page describes it: a provisioned stream pays per
//! shard-hour and per million PUT payload units (one per started 25 KiB of each Kinesis
//! record); it needs a shard per 1,000 records/s or 1 MiB/s written, whichever needs more. An
//! on-demand stream pays per stream-hour and per GB written, each record counted as its size
//! rounded up to the next KiB. A month is 730 hours. Reads, retention and fan-out are not in it.

use serde::Serialize;

/// Hours in the month the bill is for (AWS's convention: 8,760 / 12).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// List prices in US dollars.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Prices {
    /// Provisioned: one shard for an hour.
    pub shard_hour: f64,
    /// Provisioned: a million PUT payload units.
    pub million_put_payload_units: f64,
    /// On demand: the stream for an hour.
    pub on_demand_stream_hour: f64,
    /// On demand: a GB (2^30 bytes) written.
    pub on_demand_gb_written: f64,
    /// Where and when the defaults were read.
    pub source: &'static str,
}

/// The prices of us-east-1 as read on 2026-12-03 (the price table of
/// aws.amazon.com/kinesis/data-streams/pricing could not be opened from this machine; these are
/// its figures as quoted by public cost tools and notes found with the search tools that day).
/// `--price-*` overrides each one.
pub const US_EAST_1: Prices = Prices {
    shard_hour: 0.015,
    million_put_payload_units: 0.014,
    on_demand_stream_hour: 0.04,
    on_demand_gb_written: 0.08,
    source: "us-east-1 list prices read 2026-12-03 (override with --price-*)",
};

/// What a run measured, per second of it.
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    pub kinesis_records_per_second: f64,
    pub bytes_per_second: f64,
    pub put_payload_units_per_second: f64,
    /// KiB written per second, each Kinesis record rounded up to a whole KiB (on demand).
    pub kib_per_second: f64,
}

/// A month of that traffic.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Bill {
    /// Provisioned shards the traffic needs (1,000 records/s and 1 MiB/s each).
    pub shards_needed: u64,
    pub provisioned_shard_hours_usd: f64,
    pub provisioned_put_payload_units_usd: f64,
    pub provisioned_monthly_usd: f64,
    pub on_demand_stream_hours_usd: f64,
    pub on_demand_data_written_usd: f64,
    pub on_demand_monthly_usd: f64,
}

/// The bill for a month of `traffic` at `prices`.
pub fn bill(traffic: Traffic, prices: &Prices) -> Bill {
    let seconds = HOURS_PER_MONTH * 3600.0;
    let by_records = (traffic.kinesis_records_per_second / 1000.0).ceil();
    let by_bytes = (traffic.bytes_per_second / (1024.0 * 1024.0)).ceil();
    let shards = by_records.max(by_bytes).max(1.0);
    let shard_hours = shards * HOURS_PER_MONTH * prices.shard_hour;
    let units =
        traffic.put_payload_units_per_second * seconds / 1e6 * prices.million_put_payload_units;
    let stream_hours = HOURS_PER_MONTH * prices.on_demand_stream_hour;
    let gb = traffic.kib_per_second * seconds / (1024.0 * 1024.0);
    let written = gb * prices.on_demand_gb_written;
    Bill {
        shards_needed: shards as u64,
        provisioned_shard_hours_usd: shard_hours,
        provisioned_put_payload_units_usd: units,
        provisioned_monthly_usd: shard_hours + units,
        on_demand_stream_hours_usd: stream_hours,
        on_demand_data_written_usd: written,
        on_demand_monthly_usd: stream_hours + written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn a_month_of_100_records_of_35_kib_a_second_by_hand() {
        // 100 records/s of 35 KiB: 3,500 KiB/s = 3.42 MiB/s, so 4 shards (records would need
        // 1); 2 PUT payload units each, 200/s.
        let b = bill(
            Traffic {
                kinesis_records_per_second: 100.0,
                bytes_per_second: 100.0 * 35.0 * 1024.0,
                put_payload_units_per_second: 200.0,
                kib_per_second: 3500.0,
            },
            &US_EAST_1,
        );
        assert_eq!(b.shards_needed, 4);
        // 4 shards × 730 h × $0.015 = $43.80.
        assert!(close(b.provisioned_shard_hours_usd, 43.8), "{b:?}");
        // 200/s × 2,628,000 s = 525.6 M units × $0.014 = $7.3584.
        assert!(close(b.provisioned_put_payload_units_usd, 7.3584), "{b:?}");
        assert!(close(b.provisioned_monthly_usd, 51.1584), "{b:?}");
        // On demand: 730 h × $0.04 = $29.20; 3,500 KiB/s × 2,628,000 s = 8,771.7 GiB × $0.08.
        assert!(close(b.on_demand_stream_hours_usd, 29.2), "{b:?}");
        let gib = 3500.0 * 2_628_000.0 / 1_048_576.0;
        assert!(close(b.on_demand_data_written_usd, gib * 0.08), "{b:?}");
    }

    #[test]
    fn records_not_bytes_can_set_the_shards_and_an_idle_stream_still_has_one() {
        let small = Traffic {
            kinesis_records_per_second: 2500.0,
            bytes_per_second: 2500.0 * 100.0,
            put_payload_units_per_second: 2500.0,
            kib_per_second: 2500.0,
        };
        assert_eq!(bill(small, &US_EAST_1).shards_needed, 3);
        let idle = Traffic {
            kinesis_records_per_second: 0.0,
            bytes_per_second: 0.0,
            put_payload_units_per_second: 0.0,
            kib_per_second: 0.0,
        };
        let b = bill(idle, &US_EAST_1);
        assert_eq!(b.shards_needed, 1);
        assert!(close(b.provisioned_monthly_usd, 730.0 * 0.015), "{b:?}");
        assert!(close(b.on_demand_monthly_usd, 730.0 * 0.04), "{b:?}");
    }
}
