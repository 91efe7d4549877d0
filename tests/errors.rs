//! Errors a person can read: each transport failure, met for real through the AWS SDK on
//! 127.0.0.1, reads as one sentence naming the endpoint and the cause, with the SDK's error
//! kept as the `source()`.

use std::error::Error as _;
use std::time::Duration;

use kinesis_producer::sink::aws::AwsSink;
use kinesis_producer::sink::{PutEntry, Sink, SinkError};
use kinesis_producer::{Config, Producer, PutErrorKind, UserRecord};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn entry() -> Vec<PutEntry> {
    vec![PutEntry {
        partition_key: "k".into(),
        explicit_hash_key: None,
        data: "v".into(),
    }]
}

fn config(endpoint: &str) -> Config {
    Config::builder()
        .endpoint(endpoint)
        .region("us-east-1")
        .credentials("local", "local")
        .request_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .record_ttl(Duration::from_millis(1_000))
        .build()
        .unwrap()
}

async fn put_error(endpoint: &str) -> SinkError {
    let sink = AwsSink::new(&config(endpoint)).await;
    sink.put_records("s", entry()).await.unwrap_err()
}

/// The message is one line without the SDK's layers, and the cause chain is kept.
fn assert_readable(e: &SinkError) {
    for noise in [
        "DispatchFailure",
        "ConnectorError",
        "hyper",
        "Some(",
        "source:",
    ] {
        assert!(!e.message.contains(noise), "{noise} in {:?}", e.message);
    }
    assert!(!e.message.contains('\n'), "{:?}", e.message);
    assert!(
        e.source().is_some(),
        "the SDK's error is kept as the source"
    );
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_refused_connection_names_the_endpoint() {
    let port = closed_port().await;
    let e = put_error(&format!("http://127.0.0.1:{port}")).await;
    assert_eq!(e.code, "ConnectionError");
    assert_eq!(
        e.message,
        format!("cannot connect to 127.0.0.1:{port}: connection refused")
    );
    assert_readable(&e);
}

/// The same through the producer: the future's error is one sentence, its source the cause.
#[tokio::test]
async fn a_records_future_says_why_in_one_sentence() {
    let port = closed_port().await;
    let producer = Producer::new(config(&format!("http://127.0.0.1:{port}"))).await;
    let err = producer
        .send("events", UserRecord::new("k", "v").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err.kind, PutErrorKind::Expired { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.ends_with(&format!(
            "the last attempt failed with ConnectionError: cannot connect to 127.0.0.1:{port}: \
             connection refused"
        )),
        "{text}"
    );
    assert!(!text.contains("dispatch failure"), "{text}");
    // The chain: the last attempt's error, then the SDK's.
    let last = err.source().expect("the last attempt's error");
    assert!(last.source().is_some(), "the SDK's error under it");
    producer.shutdown().await;
}

#[tokio::test]
async fn no_answer_within_request_timeout_names_the_endpoint_and_the_limit() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..16 {
            let Ok((socket, _)) = listener.accept().await else {
                break;
            };
            held.push(socket);
        }
    });
    let e = put_error(&format!("http://127.0.0.1:{port}")).await;
    assert_eq!(e.code, "RequestTimeout");
    assert_eq!(
        e.message,
        format!("no answer from 127.0.0.1:{port} to PutRecords within RequestTimeout (500 ms)")
    );
    assert!(e.source().is_some());
    server.abort();
}

/// A connection closed without an answer (a proxy or load balancer dropping it).
#[tokio::test]
async fn a_connection_closed_without_an_answer_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.shutdown().await;
        }
    });
    let e = put_error(&format!("http://127.0.0.1:{port}")).await;
    assert_eq!(e.code, "ConnectionError");
    assert_eq!(
        e.message,
        format!("the connection to 127.0.0.1:{port} was closed before PutRecords was answered")
    );
    assert_readable(&e);
    server.abort();
}

/// TLS to a server that speaks plain HTTP: the handshake fails.
#[tokio::test]
async fn a_failed_tls_handshake_names_the_endpoint() {
    let kinesis = kinesis_producer::local::LocalKinesis::start(Default::default())
        .await
        .unwrap();
    let addr = kinesis.addr();
    let e = put_error(&format!("https://{addr}")).await;
    assert_eq!(e.code, "TlsError", "{e}");
    assert!(
        e.message.starts_with(&format!("TLS with {addr} failed: ")),
        "{}",
        e.message
    );
    assert_readable(&e);
}

/// A DNS failure, from a resolver that fails every name (no query leaves the machine).
#[tokio::test]
async fn a_name_that_does_not_resolve_is_named() {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};

    #[derive(Debug, Clone)]
    struct NoSuchHost;
    impl ResolveDns for NoSuchHost {
        fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
            DnsFuture::ready(Err(ResolveDnsError::new(format!("no address for {name}"))))
        }
    }
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_with_resolver(NoSuchHost);
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .endpoint_url("http://kinesis.example.invalid:4567")
        .http_client(http)
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    let sink = AwsSink::from_client(aws_sdk_kinesis::Client::from_conf(conf))
        .with_endpoint_name("kinesis.example.invalid:4567");
    let e = sink.put_records("s", entry()).await.unwrap_err();
    assert_eq!(e.code, "DnsError", "{e}");
    assert_eq!(
        e.message,
        "cannot resolve kinesis.example.invalid: no address for kinesis.example.invalid"
    );
    assert_readable(&e);
}

/// HTTP errors without a Kinesis error code (a proxy's 502 page, a bare 500).
#[tokio::test]
async fn an_http_error_without_a_code_gives_the_status() {
    use axum::http::StatusCode;
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::BAD_GATEWAY,
            "<html><body>502 Bad Gateway</body></html>",
        )
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let e = put_error(&format!("http://{addr}")).await;
    assert_eq!(e.code, "HTTP 502");
    assert_eq!(
        e.message,
        format!("{addr} answered PutRecords with HTTP 502 Bad Gateway")
    );
    assert_readable(&e);
    server.abort();
}

/// A credentials provider that fails as `fail` says.
#[derive(Debug)]
struct FailingCredentials(fn() -> aws_credential_types::provider::error::CredentialsError);

impl aws_credential_types::provider::ProvideCredentials for FailingCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err((self.0)()))
    }
}

/// A producer whose AWS configuration's credentials come from `provider`, against an endpoint
/// on 127.0.0.1 (a port nothing listens on: the call fails before it would connect).
async fn producer_with_credentials(provider: FailingCredentials, ttl: Duration) -> Producer {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build();
    let config = Config::builder()
        .endpoint(format!("http://127.0.0.1:{}", closed_port().await))
        .record_ttl(ttl)
        .build()
        .unwrap();
    Producer::from_sdk_config(&sdk, config)
}

/// No credentials: the SDK reports it as a dispatch failure, which read as "cannot reach the
/// endpoint" and was retried until RecordTtl. Now it is its own kind, failed at once, in one
/// sentence that names the problem.
#[tokio::test]
async fn missing_credentials_fail_at_once_and_say_so() {
    use aws_credential_types::provider::error::CredentialsError;
    let producer = producer_with_credentials(
        FailingCredentials(|| {
            CredentialsError::not_loaded("no providers in chain provided credentials")
        }),
        Duration::from_secs(30),
    )
    .await;
    let err = producer
        .send("s", UserRecord::new("k", "v").unwrap())
        .await
        .unwrap_err();
    let PutErrorKind::NoCredentials { code, message } = &err.kind else {
        panic!("{err}");
    };
    assert_eq!(code, "CredentialsNotLoaded");
    assert!(
        message.starts_with(
            "no AWS credentials were found: no providers in chain provided credentials"
        ),
        "{message}"
    );
    assert!(!message.contains("cannot reach"), "{message}");
    // Failed at once: one attempt, not retried until RecordTtl.
    assert_eq!(err.attempts.len(), 1);
    producer.shutdown().await;
}

/// A provider that fails in a way that may heal (STS or SSO unreachable) is retried until
/// RecordTtl, and the expiry names the credentials, not the endpoint.
#[tokio::test]
async fn a_failing_credentials_provider_is_retried_until_record_ttl() {
    use aws_credential_types::provider::error::CredentialsError;
    let producer = producer_with_credentials(
        FailingCredentials(|| CredentialsError::provider_error("STS is unreachable")),
        Duration::from_millis(1_500),
    )
    .await;
    let err = producer
        .send("s", UserRecord::new("k", "v").unwrap())
        .await
        .unwrap_err();
    let PutErrorKind::Expired { last_error, .. } = &err.kind else {
        panic!("{err}");
    };
    assert_eq!(last_error.code, "CredentialsError");
    assert!(
        last_error
            .message
            .starts_with("the AWS credentials could not be loaded: STS is unreachable"),
        "{}",
        last_error.message
    );
    assert!(err.attempts.len() > 1, "retried");
    producer.shutdown().await;
}
