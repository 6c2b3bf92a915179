//! TLS (rustls) for the stream transports: the server and client
//! configurations built from PEM files, SNI certificate choice, optional
//! client-certificate verification, and reloading without touching open
//! connections (each keeps the configuration it was opened with).

pub mod certs;
pub mod sni;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use certs::CertInfo;
use sni::SniResolver;

/// TLS 1.2 and 1.3 only (rustls has nothing older).
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    fn file(path: &Path, e: impl std::fmt::Display) -> TlsError {
        TlsError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        }
    }
}

/// Where the certificates come from (re-read on every reload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Default server certificate chain and key (PEM).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Per-domain certificates chosen by SNI: (domain, cert, key).
    pub sni: Vec<(String, PathBuf, PathBuf)>,
    /// CAs that client certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Refuse TLS clients without a valid certificate (needs `client_ca`).
    pub verify_client: bool,
    /// CAs trusted for outgoing connections; None: the system's roots.
    pub ca: Option<PathBuf>,
}

impl TlsSettings {
    pub fn is_empty(&self) -> bool {
        *self == TlsSettings::default()
    }
}

struct Built {
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
    certs: Vec<CertInfo>,
}

/// The live TLS configuration, swapped whole by [`TlsContext::reload`].
pub struct TlsContext {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    built: RwLock<Built>,
}

impl TlsContext {
    pub fn new(settings: TlsSettings) -> Result<TlsContext, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let built = build(&settings, &provider)?;
        Ok(TlsContext {
            settings,
            provider,
            built: RwLock::new(built),
        })
    }

    /// Re-reads every certificate, key and CA file. On any error the running
    /// configuration stays as it was; open connections are never affected.
    pub fn reload(&self) -> Result<(), TlsError> {
        let built = build(&self.settings, &self.provider)?;
        *self.built.write() = built;
        Ok(())
    }

    pub fn has_server_cert(&self) -> bool {
        self.built.read().server.is_some()
    }

    /// The acceptor for a new incoming connection, or None without a
    /// server certificate.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.built.read().server.clone().map(TlsAcceptor::from)
    }

    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.built.read().client.clone())
    }

    pub fn cert_info(&self) -> Vec<CertInfo> {
        self.built.read().certs.clone()
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// The name an outgoing connection verifies the peer certificate against:
/// the destination's IP address (its certificate needs an IP SAN), as only
/// the resolved address reaches the transport.
pub fn server_name_for(addr: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

fn build(settings: &TlsSettings, provider: &Arc<CryptoProvider>) -> Result<Built, TlsError> {
    let mut infos = Vec::new();
    let default_key = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let k = certs::load_certified_key(cert, key, provider)?;
            infos.push(certs::describe(&k, None, cert));
            Some(k)
        }
        (None, None) => None,
        _ => {
            return Err(TlsError::Config(
                "a TLS certificate needs both --tls-cert and --tls-key".into(),
            ))
        }
    };
    let mut resolver = SniResolver::new(default_key.clone());
    for (domain, cert, key) in &settings.sni {
        let k = certs::load_certified_key(cert, key, provider)?;
        infos.push(certs::describe(&k, Some(domain), cert));
        resolver.add(domain, k);
    }
    let server = if default_key.is_some() || !settings.sni.is_empty() {
        Some(Arc::new(server_config(settings, provider, resolver)?))
    } else {
        None
    };
    let client = client_config(settings, provider, default_key)?;
    Ok(Built {
        server,
        client: Arc::new(client),
        certs: infos,
    })
}

fn server_config(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
    resolver: SniResolver,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let roots = root_store(ca)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if settings.verify_client {
                verifier
            } else {
                // A certificate is asked for and checked when sent, not required.
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        }
        None if settings.verify_client => {
            return Err(TlsError::Config(
                "--tls-verify-client needs --tls-client-ca".into(),
            ))
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(Arc::new(resolver)))
}

fn client_config(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
    own: Option<Arc<rustls::sign::CertifiedKey>>,
) -> Result<ClientConfig, TlsError> {
    let roots = match &settings.ca {
        Some(ca) => root_store(ca)?,
        None => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    // Our own certificate doubles as the client certificate, for peers that
    // verify clients (mutual TLS between proxies).
    Ok(match own {
        Some(key) => builder.with_client_cert_resolver(Arc::new(OwnClientCert(key))),
        None => builder.with_no_client_auth(),
    })
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs::load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::file(path, e))?;
    }
    Ok(roots)
}

/// Presents our default certificate when a server asks for one.
#[derive(Debug)]
struct OwnClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for OwnClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(settings: TlsSettings) -> String {
        match TlsContext::new(settings) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let e = error_of(TlsSettings {
            cert: Some("/nonexistent/cert.pem".into()),
            ..TlsSettings::default()
        });
        assert!(e.contains("--tls-cert and --tls-key"), "{e}");
        let e = error_of(TlsSettings {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            ..TlsSettings::default()
        });
        assert!(e.starts_with("/nonexistent/cert.pem: "), "{e}");
        let e = error_of(TlsSettings {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        });
        assert!(e.starts_with("/nonexistent/ca.pem: "), "{e}");
    }

    #[test]
    fn a_pem_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("sipr-empty-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = error_of(TlsSettings {
            ca: Some(path.clone()),
            ..TlsSettings::default()
        });
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn client_only_context_has_no_acceptor() {
        let ctx = TlsContext::new(TlsSettings::default()).expect("system roots");
        assert!(!ctx.has_server_cert());
        assert!(ctx.acceptor().is_none());
        assert!(ctx.cert_info().is_empty());
    }
}
