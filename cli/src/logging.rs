//! `kpl`'s log: what the library and the AWS SDK log through `tracing`, on stderr, for people
//! (`--log-format human`, the default) or for log pipelines (`--log-format json`, one object a
//! line). The level comes from `--log-level`, else `RUST_LOG`, else the properties file's
//! `LogLevel` (the KPL's names: trace, debug, info, warning, error), else info for kpl and the
//! library and warn for the crates under them.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line an event.
    Human,
    /// One JSON object an event.
    Json,
}

/// The flags every command takes for its log.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// The log level: error, warn (or warning), info, debug or trace, or a `RUST_LOG`-style
    /// filter (`kinesis_producer=debug,warn`). Default: `RUST_LOG`, else the properties file's
    /// LogLevel, else info.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// How log lines are written on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// The default when nothing sets a level: the KPL's `info` for kpl and the library, `warn` for
/// the crates under them (the SDK's info lines are about its own plumbing).
const DEFAULT: &str = "warn,kpl=info,kinesis_producer=info";

/// Targets that may write request signing material or raw HTTP headers (the session token
/// travels in `x-amz-security-token`) at their debug and trace levels: they are held at info
/// whatever level is asked for, so that no credential reaches the log.
const NEVER_VERBOSE: &[&str] = &[
    "aws_sigv4=info",
    "aws_smithy_runtime=info",
    "aws_smithy_runtime_api=info",
    "aws_smithy_http_client=info",
    "aws_runtime=info",
    "aws_config=info",
    "aws_credential_types=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "rustls=info",
];

struct Log {
    filter: reload::Handle<EnvFilter, Registry>,
    /// A level was set by `--log-level` or `RUST_LOG`: the properties file does not change it.
    explicit: bool,
}

static LOG: OnceLock<Log> = OnceLock::new();

/// A filter for `level`, with the credential guards after it (later directives for the same
/// target win in `EnvFilter`).
fn filter(level: &str) -> Result<EnvFilter, String> {
    let level = match level.trim() {
        "warning" => "warn",
        other => other,
    };
    let mut spec = level.to_owned();
    for guard in NEVER_VERBOSE {
        spec.push(',');
        spec.push_str(guard);
    }
    EnvFilter::try_new(&spec).map_err(|e| format!("--log-level {level:?}: {e}"))
}

/// Installs the log for this process.
///
/// # Errors
/// A `--log-level` or `RUST_LOG` that is not a level or filter, named.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (level, explicit) = match (&args.log_level, env) {
        (Some(level), _) => (level.clone(), true),
        (None, Some(env)) => (env, true),
        (None, None) => (DEFAULT.to_owned(), false),
    };
    let (layer, handle) = reload::Layer::new(filter(&level)?);
    let registry = tracing_subscriber::registry().with(layer);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let installed = match args.log_format {
        LogFormat::Human => registry
            .with(fmt.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
        LogFormat::Json => registry.with(fmt.json()).try_init(),
    };
    installed.map_err(|e| format!("cannot install the log: {e}"))?;
    let _ = LOG.set(Log {
        filter: handle,
        explicit,
    });
    Ok(())
}

/// Applies a properties file's `LogLevel` (trace, debug, info, warning, error), unless
/// `--log-level` or `RUST_LOG` set the level.
pub fn apply_log_level(level: &str) {
    if let Some(log) = LOG.get()
        && !log.explicit
        && let Ok(f) = filter(level)
    {
        let _ = log.filter.reload(f);
    }
}
