//! Connection flags every stream command takes, and KPL `.properties` files.

use std::path::PathBuf;

use kinesis_producer::{Config, ConfigBuilder};

/// Where and how to reach Kinesis.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// The stream: its name, or its ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME), which
    /// every call then addresses it by (what AWS recommends; reaches another account's stream).
    #[arg(long)]
    pub stream: String,
    /// The AWS region (default: the standard AWS region chain).
    #[arg(long)]
    pub region: Option<String>,
    /// The endpoint URL, e.g. http://127.0.0.1:4567 for a local Kinesis (`kpl local`). On a
    /// loopback address, static placeholder credentials are used unless AWS credentials are set.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// A KPL-style .properties file (`Name = value` lines, KPL property names).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Ignore a property name in --config that no KPL or producer property has, with a warning,
    /// as the KPL does (by default it is an error naming the closest known property).
    #[arg(long)]
    pub ignore_unknown_properties: bool,
}

impl ConnArgs {
    /// The producer configuration these flags (and the properties file) describe.
    pub fn config(&self) -> Result<Config, String> {
        self.build(self.builder(Config::builder())?)
    }

    /// `base` with the properties file and these flags applied.
    pub fn builder(&self, base: ConfigBuilder) -> Result<ConfigBuilder, String> {
        let mut builder = base.ignore_unknown_properties(self.ignore_unknown_properties);
        if let Some(path) = &self.config {
            builder = builder.properties_file(path).map_err(|e| e.to_string())?;
        }
        if let Some(region) = &self.region {
            builder = builder.region(region.clone());
        }
        if let Some(url) = &self.endpoint_url {
            builder = builder.endpoint(url.clone());
            let loopback = ["://127.", "://localhost", "://[::1]"]
                .iter()
                .any(|p| url.contains(p));
            if loopback && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                builder = builder.credentials("local", "local");
                if self.region.is_none() {
                    builder = builder.region("us-east-1");
                }
            }
        }
        Ok(builder)
    }

    /// The configuration `builder` describes; an error names the properties file.
    pub fn build(&self, builder: ConfigBuilder) -> Result<Config, String> {
        // Ranges are checked once everything is read (one property's range can depend on
        // another's), so a range error names the file but not a line.
        let config = builder.build().map_err(|e| match &self.config {
            Some(path) => format!("{}: {e}", path.display()),
            None => e.to_string(),
        })?;
        crate::logging::apply_log_level(config.log_level());
        // KPL settings with no effect here: `build` logged one warning naming them (kpl's log
        // shows it).
        Ok(config)
    }
}
