//! Digest building blocks (RFC 7616 with the RFC 8760 algorithms MD5 and
//! SHA-256, qop=auth): hashes, stateless nonces (hex milliseconds, a random
//! part, an HMAC-SHA256 of both and the realm, so any instance sharing the
//! secret verifies them), nonce-count replay tracking and the credentials
//! reader. `auth.rs` puts them together into the one digest check.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use md5::Md5;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Lower-case hex digest of the concatenated parts.
    pub fn hex(self, parts: &[&[u8]]) -> String {
        match self {
            Algorithm::Md5 => {
                let mut h = Md5::new();
                parts.iter().for_each(|p| h.update(p));
                to_hex(&h.finalize())
            }
            Algorithm::Sha256 => {
                let mut h = Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                to_hex(&h.finalize())
            }
        }
    }
}

/// SplitMix64's finaliser: spreads a counter over all 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Equality without an early exit (the MAC and the response are secrets).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    Ok,
    /// Ours but older than the lifetime: challenge again with stale=true.
    Stale,
    Bad,
}

/// Issues and checks stateless nonces for one realm.
pub struct Nonces {
    pub realm: String,
    pub ttl_seconds: f64,
    /// HMAC state with the secret already absorbed (cloned per nonce).
    keyed: Hmac<Sha256>,
    /// Unique part of each nonce: a keyed mix of a counter (as unpredictable
    /// as `os.urandom(6)` for this purpose, without a syscall per challenge).
    seed: u64,
    issued: AtomicU64,
}

impl Nonces {
    pub fn new(secret: &[u8], realm: &str, ttl_seconds: f64) -> Nonces {
        let mut seed = [0u8; 8];
        seed[..6].copy_from_slice(&random6());
        seed[6..].copy_from_slice(&random6()[..2]);
        Nonces {
            realm: realm.to_string(),
            ttl_seconds,
            keyed: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key"),
            seed: u64::from_le_bytes(seed),
            issued: AtomicU64::new(0),
        }
    }

    fn mac(&self, stamp: &str) -> String {
        let mut m = self.keyed.clone();
        m.update(stamp.as_bytes());
        m.update(b":");
        m.update(self.realm.as_bytes());
        let mut hex = to_hex(&m.finalize().into_bytes());
        hex.truncate(32);
        hex
    }

    /// `<ms hex>-<12 random hex>.<mac>`; `now_ms` is Unix time in ms.
    pub fn issue(&self, now_ms: u64) -> String {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let unique = mix64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let stamp = format!("{now_ms:x}-{}", to_hex(&unique.to_le_bytes()[..6]));
        let mac = self.mac(&stamp);
        format!("{stamp}.{mac}")
    }

    pub fn state(&self, nonce: &str, now: f64) -> NonceState {
        let (stamp, mac) = nonce.split_once('.').unwrap_or((nonce, ""));
        if stamp.is_empty() || !same_secret(mac.as_bytes(), self.mac(stamp).as_bytes()) {
            return NonceState::Bad;
        }
        let ts = stamp.split_once('-').map_or(stamp, |(t, _)| t);
        let Ok(ms) = u64::from_str_radix(ts, 16) else {
            return NonceState::Bad;
        };
        let age = now - ms as f64 / 1000.0;
        if -5.0 < age && age <= self.ttl_seconds {
            NonceState::Ok
        } else {
            NonceState::Stale
        }
    }
}

fn random6() -> [u8; 6] {
    let mut buf = [0u8; 6];
    // SAFETY: getrandom writes at most buf.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // The kernel's pool is always available after boot; fall back to the
        // clock rather than fail a challenge.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        buf.copy_from_slice(&mix64(t).to_le_bytes()[..6]);
    }
    buf
}

/// Refuses a nonce-count not higher than one already seen for its nonce
/// (a replayed Authorization). In-process (`NonceCounts`) by default; a
/// store shared by several processes may provide its own
/// (`Store::shared_nonce_counts`).
pub trait ReplayGuard: Send + Sync {
    /// Records `nc` for `nonce` if it is higher than any seen; false is a replay.
    fn fresh(&self, nonce: &str, nc: u64) -> bool;
}

impl ReplayGuard for NonceCounts {
    fn fresh(&self, nonce: &str, nc: u64) -> bool {
        NonceCounts::fresh(self, nonce, nc)
    }
}

/// No check here: the application checks the nonce-count itself, against
/// a store only Python reaches (`redis://`, decision 0051).
pub struct CheckedByCaller;

impl ReplayGuard for CheckedByCaller {
    fn fresh(&self, _nonce: &str, _nc: u64) -> bool {
        true
    }
}

/// The highest nonce-count seen per nonce (bounded, least recently used
/// dropped first), so a replayed Authorization is refused.
pub struct NonceCounts {
    inner: Mutex<CountsInner>,
    max: usize,
}

/// Nonces are keyed by a 64-bit keyed hash (random per process): no string
/// kept per nonce; two nonces colliding (odds ~n²/2⁶⁴) would only share
/// replay state, refusing a valid nonce-count once.
#[derive(Default)]
struct CountsInner {
    hasher: ahash::RandomState,
    last: HashMap<u64, (u64, u64), ahash::RandomState>,
    /// (nonce key, use number) in use order; entries whose number is no
    /// longer the nonce's latest are skipped when evicting.
    order: VecDeque<(u64, u64)>,
    uses: u64,
}

impl NonceCounts {
    pub fn new(max: usize) -> NonceCounts {
        NonceCounts {
            inner: Mutex::new(CountsInner::default()),
            max: max.max(1),
        }
    }

    /// Records `nc` for `nonce` if it is higher than any seen; false is a replay.
    pub fn fresh(&self, nonce: &str, nc: u64) -> bool {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let key = inner.hasher.hash_one(nonce);
        if inner.last.get(&key).is_some_and(|(last, _)| nc <= *last) {
            return false;
        }
        inner.uses += 1;
        let use_no = inner.uses;
        inner.last.insert(key, (nc, use_no));
        inner.order.push_back((key, use_no));
        while inner.last.len() > self.max {
            let Some((old, n)) = inner.order.pop_front() else {
                break;
            };
            if inner.last.get(&old).is_some_and(|(_, latest)| *latest == n) {
                inner.last.remove(&old);
            }
        }
        if inner.order.len() > 2 * self.max + 64 {
            let last = &inner.last;
            inner
                .order
                .retain(|(k, n)| last.get(k).is_some_and(|(_, latest)| latest == n));
        }
        true
    }

    pub fn len(&self) -> usize {
        self.inner.lock().last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `Digest k=v, k="v", ...` → lower-cased keys, unquoted values. None when
/// the scheme is not Digest or the list is not well formed (the Python path
/// then decides, with its more lenient reading).
/// The answer to an attempt of a user locked by failed authentications.
pub const LOCKED_REASON: &str = "Forbidden (too many failed attempts, try later)";

/// `user@realm` of the digest credentials for `realm` in `msg` (in
/// Authorization or Proxy-Authorization), if any: the key of the
/// authentication-failure bans (`Service::on_digest_attempt`).
pub fn digest_user(msg: &crate::sip::Message, realm: &str) -> Option<String> {
    use crate::sip::HeaderId;
    msg.headers()
        .iter()
        .filter(|h| matches!(h.id, HeaderId::Authorization | HeaderId::ProxyAuthorization))
        .filter_map(|h| parse_credentials(msg.header_value(h)))
        .find(|c| c.iter().any(|(k, v)| k == "realm" && v == realm))
        .and_then(|c| {
            c.into_iter()
                .rev()
                .find(|(k, _)| k == "username")
                .map(|(_, u)| format!("{u}@{realm}"))
        })
}

pub fn parse_credentials(value: &str) -> Option<Vec<(String, String)>> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let b = rest.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= b.len() {
            return Some(out);
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-') {
            i += 1;
        }
        if i == start {
            return None;
        }
        let key = rest[start..i].to_ascii_lowercase();
        i = skip_ws(i);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_ws(i + 1);
        let val = if b.get(i) == Some(&b'"') {
            let mut v = String::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => return None,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let c = rest[i + 1..].chars().next()?;
                        v.push(c);
                        i += 1 + c.len_utf8();
                    }
                    Some(_) => {
                        let c = rest[i..].chars().next()?;
                        v.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            v
        } else {
            let s = i;
            while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            rest[s..i].to_string()
        };
        out.push((key, val));
        i = skip_ws(i);
        match b.get(i) {
            None => return Some(out),
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonces() -> Nonces {
        Nonces::new(b"k", "sipr", 300.0)
    }

    #[test]
    fn nonce_lifecycle() {
        let n = nonces();
        let nonce = n.issue(1_000_000);
        assert_eq!(n.state(&nonce, 1_000.0), NonceState::Ok);
        assert_eq!(n.state(&nonce, 1_301.0), NonceState::Stale);
        assert_eq!(n.state(&nonce, 990.0), NonceState::Stale);
        let mut forged = nonce.clone();
        forged.replace_range(0..1, "e");
        assert_eq!(n.state(&forged, 1_000.0), NonceState::Bad);
        assert_eq!(n.state("garbage", 1_000.0), NonceState::Bad);
        assert_ne!(n.issue(1_000_000), nonce, "the random part differs");
    }

    #[test]
    fn mac_matches_python() {
        // hmac.new(b"k", b"1-aa:sipr", hashlib.sha256).hexdigest()[:32]
        assert_eq!(nonces().mac("1-aa"), "549bca520789f215f29d2be354cc7d54");
        assert_eq!(
            Algorithm::Md5.hex(&[b""]),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            Algorithm::Sha256.hex(&[b"abc"]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn nonce_counts_refuse_replays_and_stay_bounded() {
        let c = NonceCounts::new(2);
        assert!(c.fresh("a", 1));
        assert!(!c.fresh("a", 1));
        assert!(c.fresh("a", 2));
        assert!(c.fresh("b", 1));
        assert!(c.fresh("c", 1)); // evicts "a", the least recently used
        assert_eq!(c.len(), 2);
        assert!(c.fresh("a", 1));
        for i in 0..1000 {
            assert!(c.fresh("d", i + 1));
        }
        assert!(c.inner.lock().order.len() <= 2 * 2 + 64 + 1);
    }

    #[test]
    fn credentials_parse() {
        let c = parse_credentials(
            r#"Digest username="al\"ice", realm="sipr", nonce="n", uri="sip:h", nc=00000001, qop=auth, response="r", cnonce="x y""#,
        )
        .unwrap();
        let get = |k: &str| c.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("username"), Some("al\"ice"));
        assert_eq!(get("nc"), Some("00000001"));
        assert_eq!(get("qop"), Some("auth"));
        assert_eq!(get("cnonce"), Some("x y"));
        assert!(parse_credentials("Basic abc").is_none());
        assert!(parse_credentials(r#"Digest username="unterminated"#).is_none());
        assert_eq!(parse_credentials("Digest").unwrap(), vec![]);
    }
}
