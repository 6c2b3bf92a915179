//! Server certificate choice by SNI (RFC 6066 §3): the certificate of the
//! requested domain, else the default one.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, Default)]
pub struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    /// Lower-case domain → certificate.
    by_domain: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    pub fn new(default: Option<Arc<CertifiedKey>>) -> SniResolver {
        SniResolver {
            default,
            by_domain: HashMap::new(),
        }
    }

    pub fn add(&mut self, domain: &str, key: Arc<CertifiedKey>) {
        self.by_domain.insert(domain.to_ascii_lowercase(), key);
    }

    /// The certificate for `server_name`: exact match, then a `*.` wildcard
    /// entry for its parent domain, then the default.
    pub fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.by_domain.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.by_domain.get(&format!("*.{parent}")) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(client_hello.server_name())
    }
}
