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
    /// Refuse TLS clients without a valid certificate on every TLS
    /// listener (needs `client_ca`).
    pub verify_client: bool,
    /// The same, only on these TLS listeners (local addresses).
    pub verify_client_on: Vec<SocketAddr>,
    /// CAs trusted for outgoing connections; None: the system's roots.
    pub ca: Option<PathBuf>,
}

impl TlsSettings {
    pub fn is_empty(&self) -> bool {
        *self == TlsSettings::default()
    }
}

struct Built {
    /// Client certificates optional (checked when sent, if `client_ca`).
    server: Option<Arc<ServerConfig>>,
    /// Client certificates required (mTLS listeners).
    server_strict: Option<Arc<ServerConfig>>,
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

    /// The acceptor for a new connection on listener `local`, or None
    /// without a server certificate.
    pub fn acceptor(&self, local: SocketAddr) -> Option<TlsAcceptor> {
        let built = self.built.read();
        let strict = self.settings.verify_client || self.settings.verify_client_on.contains(&local);
        let config = if strict {
            built.server_strict.clone()
        } else {
            built.server.clone()
        };
        config.map(TlsAcceptor::from)
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
    let resolver: Arc<dyn rustls::server::ResolvesServerCert> = Arc::new(resolver);
    let has_cert = default_key.is_some() || !settings.sni.is_empty();
    let server = if has_cert {
        Some(Arc::new(server_config(
            settings,
            provider,
            resolver.clone(),
            false,
        )?))
    } else {
        None
    };
    let wants_strict = settings.verify_client || !settings.verify_client_on.is_empty();
    let server_strict = if has_cert && wants_strict {
        Some(Arc::new(server_config(settings, provider, resolver, true)?))
    } else {
        None
    };
    let client = client_config(settings, provider, default_key)?;
    Ok(Built {
        server,
        server_strict,
        client: Arc::new(client),
        certs: infos,
    })
}

fn server_config(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    require_client_cert: bool,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let roots = root_store(ca)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if require_client_cert {
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
        None if require_client_cert => {
            return Err(TlsError::Config(
                "--tls-verify-client needs --tls-client-ca".into(),
            ))
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(resolver))
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
        assert!(ctx.acceptor("127.0.0.1:5061".parse().unwrap()).is_none());
        assert!(ctx.cert_info().is_empty());
    }
}
