//! `kpl bench --report FILE.html`: one self-contained page (styles and charts inline, nothing
//! fetched) with the workload, the runs side by side, the charts, and the bill.

use std::fmt::Write as _;
use std::path::Path;

use super::chart;
use super::report::{Report, headings, rows};

/// Rows whose cells the page marks with `data-figure` (and `data-run`), so that a test or a
/// script can read them back and hold them against the JSON: the row's name in the table, and
/// its field in a run.
const FIGURES: &[(&str, &str)] = &[
    ("user records put", "user_records_put"),
    ("Kinesis records put", "kinesis_records_put"),
    ("PutRecords calls", "put_records_calls"),
    ("PUT payload units", "put_payload_units"),
    ("throttled entries", "throttled_entries"),
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page for `report`; `workload` is the one-line description the table output starts with.
pub(super) fn page(report: &Report<'_>, workload: &str) -> String {
    let runs = &report.runs;
    let heads = headings(runs);
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kpl bench report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; background: #fff; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead th {{ background: #eef3f8; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.25em; margin-top: 1.6em; }}
.note {{ color: #555; font-size: 0.9em; }}
svg {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
</style></head><body>
<h1>kpl bench report</h1>
<p>{}</p>
<p>Sink: {}; stream <code>{}</code>.</p>
"#,
        escape(workload),
        escape(&report.sink),
        escape(report.stream)
    );
    if let Some(input) = &report.input {
        let _ = writeln!(
            h,
            "<p>Input <code>{}</code> ({:?}): {} records, {} partition keys, {} with explicit hash keys, data {} bytes median, {} largest.</p>",
            escape(&input.path.display().to_string()),
            input.format,
            input.records,
            input.distinct_partition_keys,
            input.with_explicit_hash_key,
            input.data_bytes_p50,
            input.data_bytes_max
        );
    }

    h.push_str("<h2>The runs side by side</h2>\n<table><thead><tr><th></th>");
    for head in &heads {
        let _ = write!(h, "<th>{}</th>", escape(head));
    }
    h.push_str("</tr></thead><tbody>\n");
    for (name, cell) in rows() {
        let _ = write!(h, "<tr><td>{}</td>", escape(name));
        let marked = FIGURES.iter().find(|(row, _)| *row == name).map(|(_, f)| f);
        for (i, r) in runs.iter().enumerate() {
            match marked {
                Some(f) => {
                    let _ = write!(
                        h,
                        r#"<td data-figure="{f}" data-run="{i}">{}</td>"#,
                        escape(&cell(r))
                    );
                }
                None => {
                    let _ = write!(h, "<td>{}</td>", escape(&cell(r)));
                }
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");

    h.push_str("<h2>The bill: a month of this traffic</h2>\n");
    let _ = writeln!(
        h,
        r#"<p class="note">Every run at {:.0} user records/s, from its own Kinesis records, bytes and PUT payload units per user record. Prices: ${} a shard-hour, ${} a million PUT payload units, ${} an on-demand stream-hour, ${} a GB written ({}).</p>"#,
        report.bill_user_records_per_second,
        report.prices.shard_hour,
        report.prices.million_put_payload_units,
        report.prices.on_demand_stream_hour,
        report.prices.on_demand_gb_written,
        escape(report.prices.source)
    );
    h.push_str("<table><thead><tr><th></th><th>shards needed</th><th>provisioned, USD a month</th><th>on demand, USD a month</th></tr></thead><tbody>\n");
    for (i, (r, head)) in runs.iter().zip(&heads).enumerate() {
        let b = &r.bill;
        let _ = writeln!(
            h,
            r#"<tr><td>{}</td><td data-figure="shards_needed" data-run="{i}">{}</td><td data-figure="provisioned_monthly_usd" data-run="{i}">{:.2}</td><td data-figure="on_demand_monthly_usd" data-run="{i}">{:.2}</td></tr>"#,
            escape(head),
            b.shards_needed,
            b.provisioned_monthly_usd,
            b.on_demand_monthly_usd
        );
    }
    h.push_str("</tbody></table>\n");

    if runs.iter().any(|r| r.setting.is_some()) {
        h.push_str("<h2>The sweep: packing and p99 latency against the value</h2>\n");
        h.push_str(&chart::sweep_svg(runs));
    }
    if let Some(r) = runs.iter().find(|r| !r.producers.is_empty()) {
        h.push_str("<h2>The fleet: each producer's share and throttling</h2>\n");
        h.push_str(&chart::fleet_svg(r));
    }
    h.push_str("<h2>Rate over time and the latency distribution</h2>\n");
    h.push_str(&chart::svg(runs));
    h.push_str("</body></html>\n");
    h
}

/// Writes the page to `path`.
pub(super) fn write(path: &Path, report: &Report<'_>, workload: &str) -> Result<(), String> {
    std::fs::write(path, page(report, workload)).map_err(|e| format!("{}: {e}", path.display()))
}
