//! PEM loading and what `tls.list` shows about a certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Reads every certificate of a PEM file (a chain, or a CA bundle).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::file(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.display().to_string(),
            why: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::file(key, e))?;
    let certified =
        CertifiedKey::from_der(chain, key_der, provider).map_err(|e| TlsError::File {
            path: format!("{} + {}", cert.display(), key.display()),
            why: format!("unusable certificate/key pair: {e}"),
        })?;
    Ok(Arc::new(certified))
}

/// What an operator wants to know about a loaded certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The SNI name it serves (None: the default certificate).
    pub domain: Option<String>,
    pub subject: String,
    pub issuer: String,
    /// Subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
    pub path: String,
}

/// Describes the end-entity certificate of `key`.
pub fn describe(key: &CertifiedKey, domain: Option<&str>, path: &Path) -> CertInfo {
    let mut info = CertInfo {
        domain: domain.map(str::to_string),
        subject: String::new(),
        issuer: String::new(),
        names: Vec::new(),
        not_after: 0,
        path: path.display().to_string(),
    };
    let Some(der) = key.cert.first() else {
        return info;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return info;
    };
    info.subject = cert.subject().to_string();
    info.issuer = cert.issuer().to_string();
    info.not_after = cert.validity().not_after.timestamp();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        use x509_parser::extensions::GeneralName;
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => info.names.push((*d).to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => info.names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).expect("4 bytes"))
                            .to_string(),
                    ),
                    16 => info.names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).expect("16 bytes"))
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    info
}
