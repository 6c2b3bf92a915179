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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::sign::{Signer, SigningKey};
    use rustls::{SignatureAlgorithm, SignatureScheme};
    use rustls_pki_types::CertificateDer;

    #[derive(Debug)]
    struct NoKey;

    impl SigningKey for NoKey {
        fn choose_scheme(&self, _offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
            None
        }
        fn algorithm(&self) -> SignatureAlgorithm {
            SignatureAlgorithm::ECDSA
        }
    }

    /// A certificate told apart by its one-byte "DER".
    fn cert(tag: u8) -> Arc<CertifiedKey> {
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(vec![tag])],
            Arc::new(NoKey),
        ))
    }

    fn tag(k: Option<Arc<CertifiedKey>>) -> Option<u8> {
        k.map(|k| k.cert[0].as_ref()[0])
    }

    #[test]
    fn picks_exact_then_wildcard_then_default() {
        let mut r = SniResolver::new(Some(cert(0)));
        r.add("sip.example.org", cert(1));
        r.add("*.example.net", cert(2));
        assert_eq!(tag(r.pick(Some("SIP.Example.ORG"))), Some(1));
        assert_eq!(tag(r.pick(Some("a.example.net"))), Some(2));
        // A wildcard covers one label only.
        assert_eq!(tag(r.pick(Some("a.b.example.net"))), Some(0));
        assert_eq!(tag(r.pick(Some("other.org"))), Some(0));
        assert_eq!(tag(r.pick(None)), Some(0));
    }

    #[test]
    fn without_default_an_unknown_name_gets_nothing() {
        let mut r = SniResolver::new(None);
        r.add("sip.example.org", cert(1));
        assert_eq!(tag(r.pick(Some("sip.example.org"))), Some(1));
        assert!(r.pick(Some("x.example.org")).is_none());
        assert!(r.pick(None).is_none());
    }
}
