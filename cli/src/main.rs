//! `kpl`: the kinesis-producer command-line tool.

mod aggregate;
mod bench;
mod conn;
mod demo;
mod inspect;
mod io;
mod lines;
mod local;
mod logging;
mod pick;
mod positions;
mod progress;
mod prometheus;
mod put;
mod read;
mod retry;
mod tail;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kinesis-producer's command-line tool: pack, inspect and check Kinesis records in the KPL
/// aggregation format.
#[derive(Parser)]
#[command(name = "kpl", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: logging::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Aggregate user records (JSON Lines) into Kinesis records, as the KPL would.
    #[command(after_help = aggregate::EXAMPLES)]
    Aggregate(aggregate::Args),
    /// Decode Kinesis records and show whether they are aggregates and what they carry.
    #[command(after_help = inspect::EXAMPLES)]
    Inspect(inspect::Args),
    /// Send lines (raw or JSON) to a stream through the producer.
    #[command(after_help = put::EXAMPLES)]
    Put(put::Args),
    /// Follow files (glob patterns) and send their new lines, surviving rotation and restarts.
    #[command(after_help = tail::EXAMPLES)]
    Tail(tail::Args),
    /// Read a stream's user records (deaggregated), shard by shard in lineage order.
    #[command(after_help = read::EXAMPLES)]
    Read(read::Args),
    /// Run a local Kinesis (in memory, on 127.0.0.1) for development.
    #[command(after_help = local::EXAMPLES)]
    Local(local::Args),
    /// Measure what aggregation saves: a synthetic workload or your own records, with
    /// aggregation on and off side by side, swept settings, a fleet, and the monthly bill (local
    /// Kinesis with shard limits by default, in-memory, or a real endpoint).
    #[command(after_help = bench::EXAMPLES)]
    Bench(Box<bench::Args>),
    /// Run the producer end to end on an embedded local Kinesis and show what aggregation saves.
    #[command(after_help = demo::EXAMPLES)]
    Demo(demo::Args),
}

/// A configuration error, naming the command-line flag that set the KPL property.
fn flag_error(err: kinesis_producer::ConfigError) -> String {
    let kinesis_producer::ConfigError::OutOfRange { property, .. } = &err else {
        return err.to_string();
    };
    let flag = match *property {
        "AggregationMaxSize" => "--max-size",
        "AggregationMaxCount" => "--max-count",
        "MaxRecordSize" => "--max-record-size",
        _ => return err.to_string(),
    };
    format!("{flag}: {err}")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(&cli.log) {
        eprintln!("kpl: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Aggregate(args) => aggregate::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(*args),
        Command::Put(args) => put::run(args),
        Command::Local(args) => local::run(args),
        Command::Read(args) => read::run(args),
        Command::Tail(args) => tail::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kpl: {err}");
            ExitCode::from(2)
        }
    }
}
