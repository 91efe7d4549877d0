//! How the producer reaches Kinesis over the network: the HTTP proxy (`ProxyHost`, `ProxyPort`,
//! `ProxyUserName`, `ProxyPassword`) and the certificates it trusts (`CaCertFile`,
//! `CaCertPath`), checked when the configuration is built so that a mistake is an error there,
//! not a failure of every call.

use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// The HTTP proxy every call goes through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    url: String,
    credentials: Option<(String, String)>,
}

impl Proxy {
    /// The proxy's URL, e.g. `http://proxy.example.com:3128` (without credentials).
    pub fn url(&self) -> &str {
        &self.url
    }
    /// `ProxyUserName`, if the proxy asks for basic authentication.
    pub fn user_name(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(user, _)| user.as_str())
    }
    /// The user name and password for the proxy's basic authentication.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    pub(crate) fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Proxy")
            .field("url", &self.url)
            .field("user_name", &self.user_name())
            .finish_non_exhaustive()
    }
}

/// What was given for the proxy, as the properties give it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxySettings {
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) user_name: Option<String>,
    pub(crate) password: Option<String>,
}

/// The KPL's default `ProxyPort`.
const DEFAULT_PROXY_PORT: u16 = 443;

impl ProxySettings {
    /// The proxy these settings describe, if any.
    ///
    /// `ProxyHost` is a host name or address (spoken to over plain HTTP, as the KPL's HTTP
    /// client does), or a URL whose scheme (`http` or `https`) says how to speak to the proxy;
    /// `ProxyPort` is its port unless the URL has one.
    pub(crate) fn build(self) -> Result<Option<Proxy>, ConfigError> {
        let credentials = match (self.user_name, self.password) {
            (Some(user), Some(password)) => Some((user, password)),
            (Some(_), None) => {
                return Err(ConfigError::Incomplete {
                    property: "ProxyUserName",
                    needs: "ProxyPassword",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Incomplete {
                    property: "ProxyPassword",
                    needs: "ProxyUserName",
                });
            }
            (None, None) => None,
        };
        let Some(host) = self.host else {
            if credentials.is_some() {
                return Err(ConfigError::Incomplete {
                    property: "ProxyUserName",
                    needs: "ProxyHost",
                });
            }
            return Ok(None);
        };
        let bad = |value: &str| ConfigError::NotOneOf {
            property: "ProxyHost",
            value: value.to_owned(),
            allowed: "a host name or address, or an http:// or https:// URL of one \
                      (user and password go in ProxyUserName and ProxyPassword)"
                .into(),
        };
        let (scheme, rest) = match host.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), host.as_str()),
        };
        if scheme != "http" && scheme != "https" {
            return Err(bad(&host));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        let (name, port) = split_port(authority);
        if !valid_host(name) {
            return Err(bad(&host));
        }
        let port = port.or(self.port).unwrap_or(DEFAULT_PROXY_PORT);
        Ok(Some(Proxy {
            url: format!("{scheme}://{name}:{port}"),
            credentials,
        }))
    }
}

/// `host:port` into the host and the port, when there is a valid one.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((host, port)) if !port.contains(']') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// A DNS name, an IPv4 address or a bracketed IPv6 address.
fn valid_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// The certificates trusted instead of the system's roots.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedCertificates {
    /// The files they were read from.
    files: Vec<PathBuf>,
    /// Each file's PEM text (every certificate in it checked).
    pem: Vec<Vec<u8>>,
    count: usize,
}

impl TrustedCertificates {
    /// The files the certificates were read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
    /// How many certificates are trusted.
    pub fn len(&self) -> usize {
        self.count
    }
    /// Never true: a configuration with no certificate to trust is refused.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Each file's PEM text.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    pub(crate) fn pem(&self) -> &[Vec<u8>] {
        &self.pem
    }
    fn add(&mut self, path: &Path, pem: Vec<u8>, count: usize) {
        self.files.push(path.to_owned());
        self.pem.push(pem);
        self.count += count;
    }
}

impl std::fmt::Debug for TrustedCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedCertificates")
            .field("files", &self.files)
            .field("certificates", &self.count)
            .finish()
    }
}

/// Reads and checks the certificates of `CaCertFile` (a PEM file) and of `CaCertPath` (a
/// directory: every file in it that holds PEM certificates, as OpenSSL's `-CApath` takes
/// them); `None` when neither is given.
pub(crate) fn trusted_certificates(
    file: Option<&Path>,
    dir: Option<&Path>,
) -> Result<Option<TrustedCertificates>, ConfigError> {
    let mut trusted = TrustedCertificates {
        files: Vec::new(),
        pem: Vec::new(),
        count: 0,
    };
    if let Some(file) = file {
        let error = |reason: String| ConfigError::Certificates {
            property: "CaCertFile",
            path: file.to_owned(),
            reason,
        };
        let text = std::fs::read(file).map_err(|e| error(e.to_string()))?;
        let n = check_pem(&text).map_err(error)?;
        if n == 0 {
            return Err(error(NO_CERTIFICATE.into()));
        }
        trusted.add(file, text, n);
    }
    if let Some(dir) = dir {
        let error = |path: &Path, reason: String| ConfigError::Certificates {
            property: "CaCertPath",
            path: path.to_owned(),
            reason,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| error(dir, e.to_string()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            // Following links: OpenSSL's hashed names are links to the certificates.
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let before = trusted.count;
        for path in files {
            let text = std::fs::read(&path).map_err(|e| error(&path, e.to_string()))?;
            let n = check_pem(&text).map_err(|reason| error(&path, reason))?;
            if n > 0 {
                trusted.add(&path, text, n);
            }
        }
        if trusted.count == before {
            return Err(error(
                dir,
                "no file in it holds a PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
    }
    Ok((trusted.count > 0).then_some(trusted))
}

const NO_CERTIFICATE: &str = "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)";

/// How many certificates `pem` holds, each parsed as the HTTP client will parse it (so that it
/// cannot fail there); why not, if one is malformed.
#[cfg(feature = "aws")]
fn check_pem(pem: &[u8]) -> Result<usize, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for der in CertificateDer::pem_slice_iter(pem) {
        let der = der.map_err(|e| format!("its PEM text is malformed ({e:?})"))?;
        roots
            .add(der)
            .map_err(|e| format!("certificate {} in it cannot be used: {e}", n + 1))?;
        n += 1;
    }
    Ok(n)
}

/// Without the AWS sink nothing uses the certificates: only their presence is checked.
#[cfg(not(feature = "aws"))]
fn check_pem(pem: &[u8]) -> Result<usize, String> {
    let text = String::from_utf8_lossy(pem);
    Ok(text.matches("-----BEGIN CERTIFICATE-----").count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(host: &str, port: Option<u16>) -> Result<Option<Proxy>, ConfigError> {
        ProxySettings {
            host: Some(host.to_owned()),
            port,
            ..ProxySettings::default()
        }
        .build()
    }

    #[test]
    fn proxy_host_and_port_make_the_proxy_url_as_the_kpl_reads_them() {
        let url = |host, port| proxy(host, port).unwrap().unwrap().url().to_owned();
        // The KPL's ProxyPort defaults to 443; a bare host is spoken to over HTTP.
        assert_eq!(
            url("proxy.example.com", None),
            "http://proxy.example.com:443"
        );
        assert_eq!(url("192.168.0.1", Some(3128)), "http://192.168.0.1:3128");
        assert_eq!(url("[::1]", Some(3128)), "http://[::1]:3128");
        assert_eq!(
            url("https://proxy.example.com", Some(8443)),
            "https://proxy.example.com:8443"
        );
        // A URL's own port wins; a path is dropped.
        assert_eq!(
            url("http://proxy.example.com:8080/", Some(3128)),
            "http://proxy.example.com:8080"
        );
        assert_eq!(ProxySettings::default().build().unwrap(), None);
    }

    #[test]
    fn a_malformed_proxy_or_half_its_credentials_is_an_error_naming_the_property() {
        let err = |r: Result<Option<Proxy>, ConfigError>| r.unwrap_err().to_string();
        assert_eq!(
            err(proxy("socks5://proxy", None)),
            "ProxyHost is \"socks5://proxy\"; it must be one of a host name or address, or an \
             http:// or https:// URL of one (user and password go in ProxyUserName and \
             ProxyPassword)"
        );
        assert!(err(proxy("http://user:pw@proxy", None)).starts_with("ProxyHost is"));
        assert!(err(proxy("", None)).starts_with("ProxyHost is"));
        let half = |user: Option<&str>, password: Option<&str>, host: Option<&str>| {
            ProxySettings {
                host: host.map(str::to_owned),
                port: None,
                user_name: user.map(str::to_owned),
                password: password.map(str::to_owned),
            }
            .build()
        };
        assert_eq!(
            err(half(Some("u"), None, Some("p"))),
            "ProxyUserName is set but ProxyPassword is not; set both"
        );
        assert_eq!(
            err(half(None, Some("pw"), Some("p"))),
            "ProxyPassword is set but ProxyUserName is not; set both"
        );
        assert_eq!(
            err(half(Some("u"), Some("pw"), None)),
            "ProxyUserName is set but ProxyHost is not; set both"
        );
    }

    #[test]
    fn the_proxy_password_is_never_printed() {
        let p = ProxySettings {
            host: Some("proxy".into()),
            port: Some(3128),
            user_name: Some("kpl".into()),
            password: Some("sentinel-proxy-secret".into()),
        }
        .build()
        .unwrap()
        .unwrap();
        assert_eq!(p.user_name(), Some("kpl"));
        assert_eq!(p.credentials(), Some(("kpl", "sentinel-proxy-secret")));
        let shown = format!("{p:?}");
        assert!(!shown.contains("sentinel-proxy-secret"), "{shown}");
        assert!(shown.contains("http://proxy:3128"), "{shown}");
    }

    /// Writes `text` to `name` in `dir`.
    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const CA: &str = include_str!("../../tests/data/test-ca.pem");

    #[test]
    fn a_ca_file_and_a_directory_of_them_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = file(&dir, "ca.pem", CA);
        let t = trusted_certificates(Some(&file), None).unwrap().unwrap();
        assert_eq!((t.len(), t.files()), (1, &[file.clone()][..]));
        // In a directory, files without certificates (an index, a README) are passed over.
        self::file(&dir, "README", "certificates for the tests\n");
        let t = trusted_certificates(None, Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!((t.len(), t.files()), (1, &[file.clone()][..]));
        let both = trusted_certificates(Some(&file), Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!(both.len(), 2);
        // OpenSSL's -CApath layout: the subject hash, a link to the certificate.
        let hashed = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&file, hashed.path().join("5f1c3a2b.0")).unwrap();
        let t = trusted_certificates(None, Some(hashed.path()))
            .unwrap()
            .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(trusted_certificates(None, None).unwrap(), None);
        assert!(
            !format!("{both:?}").contains("BEGIN"),
            "Debug names files, not PEM text"
        );
    }

    #[test]
    fn an_unusable_ca_file_or_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = |file: Option<&Path>, dir: Option<&Path>| {
            trusted_certificates(file, dir).unwrap_err().to_string()
        };
        let missing = dir.path().join("missing.pem");
        assert_eq!(
            err(Some(&missing), None),
            format!(
                "CaCertFile {} cannot be used: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let key = file(
            &dir,
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        assert_eq!(
            err(Some(&key), None),
            format!(
                "CaCertFile {} cannot be used: it holds no PEM certificate \
                 (-----BEGIN CERTIFICATE-----)",
                key.display()
            )
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            err(None, Some(empty.path())),
            format!(
                "CaCertPath {} cannot be used: no file in it holds a PEM certificate \
                 (-----BEGIN CERTIFICATE-----)",
                empty.path().display()
            )
        );
        // Base64 that is not a certificate: refused here, where the HTTP client would panic.
        let junk = file(
            &dir,
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = err(Some(&junk), None);
        assert!(
            e.starts_with(&format!("CaCertFile {} cannot be used: ", junk.display())),
            "{e}"
        );
        let e = err(None, Some(dir.path()));
        assert!(e.starts_with("CaCertPath "), "{e}");
        assert!(e.contains("junk.pem cannot be used"), "{e}");
    }
}
