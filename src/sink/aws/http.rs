//! The HTTP client of the SDK clients (Kinesis, CloudWatch) when the configuration names a
//! proxy (`ProxyHost`, `ProxyPort`, `ProxyUserName`, `ProxyPassword`) or the certificates to
//! trust (`CaCertFile`, `CaCertPath`): the SDK's own hyper and rustls client, told to go through
//! the proxy and to trust those certificates. Without either, the SDK's default client is used.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_smithy_http_client::Connector;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use crate::config::Config;

/// The client `config` asks for, or `None` for the SDK's default one.
pub(crate) fn http_client(config: &Config) -> Option<SharedHttpClient> {
    let proxy = config.proxy();
    let trusted = config.trusted_certificates();
    if proxy.is_none() && trusted.is_none() {
        return None;
    }
    let trust = match trusted {
        // As the KPL: given certificates replace the default roots.
        Some(certs) => certs.pem().iter().fold(TrustStore::empty(), |t, pem| {
            t.with_pem_certificate(pem.clone())
        }),
        None => TrustStore::default(),
    };
    let tls = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("building a TLS context checks nothing");
    let proxy = proxy.map(|p| {
        let config = ProxyConfig::all(p.url()).expect("the proxy URL was checked by Config");
        let config = match p.credentials() {
            Some((user, password)) => config.with_basic_auth(user, password),
            None => config,
        };
        (p.url().to_owned(), config)
    });
    Some(SharedHttpClient::new(Client {
        proxy,
        tls,
        connectors: Mutex::new(HashMap::new()),
    }))
}

/// A connector's timeouts: connect, read.
type Timeouts = (Option<Duration>, Option<Duration>);

/// One connector (and so one connection pool) per timeout setting, as the SDK's own client
/// keeps them: the SDK asks for a connector on every call.
struct Client {
    /// The proxy: its URL without credentials (for `Debug`), and its configuration.
    proxy: Option<(String, ProxyConfig)>,
    tls: TlsContext,
    connectors: Mutex<HashMap<Timeouts, SharedHttpConnector>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the proxy's configuration: its Debug shows the password, and the SDK logs its
        // runtime components, this client among them, at trace level.
        f.debug_struct("Client")
            .field("proxy", &self.proxy.as_ref().map(|(url, _)| url))
            .finish_non_exhaustive()
    }
}

impl HttpClient for Client {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        connectors
            .entry(key)
            .or_insert_with(|| {
                let mut builder = Connector::builder();
                builder.set_connector_settings(Some(settings.clone()));
                builder.set_sleep_impl(components.sleep_impl());
                builder.set_proxy_config(self.proxy.as_ref().map(|(_, p)| p.clone()));
                let connector = builder
                    .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
                    .tls_context(self.tls.clone())
                    .build();
                SharedHttpConnector::new(connector)
            })
            .clone()
    }
}
