//! `kpl local`: the embedded local Kinesis as a server on 127.0.0.1, for development.

use std::process::ExitCode;

use kinesis_producer::local::{LocalKinesis, LocalOptions};

pub const EXAMPLES: &str = "\
Examples:
  kpl local --port 4567 --create-stream events:4
  kpl local --enforce-limits --create-stream events:2      # throttles like AWS
Then, in another terminal:
  kpl put --stream events --endpoint-url http://127.0.0.1:4567 app.log
  kpl read --stream events --endpoint-url http://127.0.0.1:4567 --count
  AWS SDKs and the AWS CLI work too: point their endpoint URL at it (any credentials).
It listens on 127.0.0.1 only, keeps everything in memory, and stops on Ctrl-C.";

#[derive(clap::Args)]
pub struct Args {
    /// The port on 127.0.0.1 (0 picks a free one, printed at start).
    #[arg(long, default_value_t = 4567)]
    port: u16,
    /// Throttle each shard at 1000 records/s and 1 MiB/s, as AWS does.
    #[arg(long)]
    enforce_limits: bool,
    /// Create a stream at start: NAME or NAME:SHARDS (default 1 shard). Repeatable.
    #[arg(long, value_name = "NAME[:SHARDS]")]
    create_stream: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let kinesis = LocalKinesis::start(LocalOptions {
            enforce_limits: args.enforce_limits,
            port: args.port,
        })
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", args.port))?;
        println!("local Kinesis listening on {}", kinesis.endpoint());
        for spec in &args.create_stream {
            let (name, shards) = match spec.split_once(':') {
                Some((n, s)) => (
                    n,
                    s.parse::<i32>()
                        .map_err(|_| format!("--create-stream {spec}: shards must be a number"))?,
                ),
                None => (spec.as_str(), 1),
            };
            kinesis.create_stream(name, shards).await?;
            println!("created stream {name} with {shards} shard(s)");
        }
        println!(
            "per-shard limits {}; Ctrl-C stops it",
            if args.enforce_limits {
                "enforced (1000 records/s, 1 MiB/s)"
            } else {
                "not enforced"
            }
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        tokio::signal::ctrl_c().await?;
        println!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
