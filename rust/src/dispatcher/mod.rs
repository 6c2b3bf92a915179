//! The dispatcher (Kamailio `dispatcher`): sets of destinations, the order
//! in which a request tries them (round-robin, hashes, weight, priority),
//! and their state (active, inactive after failed OPTIONS probes, or
//! disabled by the operator). Selection runs in Rust on the request itself;
//! the result is a serial target list the proxy fails over through.

pub mod probe;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::dns::target::Draw;
use crate::sip::Message;

/// One destination as configured (a line of the list file, a store row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub set: u32,
    pub uri: String,
    pub flags: u32,
    /// Higher first with the `priority` algorithm (Kamailio's order).
    pub priority: i32,
    pub weight: u32,
    pub attrs: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active = 0,
    /// Failed its probes; selected again once probes succeed.
    Inactive = 1,
    /// Taken out by the operator (`dispatcher.set_state`); not probed.
    Disabled = 2,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Active,
            1 => State::Inactive,
            _ => State::Disabled,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Inactive => "inactive",
            State::Disabled => "disabled",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        Some(match s.to_ascii_lowercase().as_str() {
            "active" | "a" => State::Active,
            "inactive" | "i" => State::Inactive,
            "disabled" | "d" => State::Disabled,
            _ => return None,
        })
    }
}

pub struct Dest {
    pub entry: Entry,
    state: AtomicU8,
    /// Consecutive failed / successful probes.
    pub fails: AtomicU32,
    pub oks: AtomicU32,
    pub last_code: AtomicU32,
    pub probes: AtomicU64,
    /// Requests that picked this destination first.
    pub selected: AtomicU64,
}

impl Dest {
    fn new(entry: Entry) -> Dest {
        Dest {
            entry,
            state: AtomicU8::new(State::Active as u8),
            fails: AtomicU32::new(0),
            oks: AtomicU32::new(0),
            last_code: AtomicU32::new(0),
            probes: AtomicU64::new(0),
            selected: AtomicU64::new(0),
        }
    }
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }
    pub fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Relaxed);
    }
}

pub struct Set {
    pub id: u32,
    pub dests: Vec<Arc<Dest>>,
    rr: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    RoundRobin,
    HashCallId,
    HashFrom,
    HashRuri,
    Weight,
    Priority,
    Random,
    /// Fewest calls in progress: needs dialog tracking (not built yet).
    LeastCalls,
}

impl Algo {
    pub fn parse(s: &str) -> Option<Algo> {
        Some(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "round-robin" | "rr" | "4" => Algo::RoundRobin,
            "hash-callid" | "hash-call-id" | "0" => Algo::HashCallId,
            "hash-from" | "hash-from-user" | "1" => Algo::HashFrom,
            "hash-ruri" | "hash-r-uri" | "3" => Algo::HashRuri,
            "weight" | "9" => Algo::Weight,
            "priority" | "8" => Algo::Priority,
            "random" | "6" => Algo::Random,
            "least-calls" | "10" => Algo::LeastCalls,
            _ => return None,
        })
    }
}

pub const ALGOS: &str =
    "round-robin, hash-callid, hash-from, hash-ruri, weight, priority, random, least-calls";

#[derive(Default)]
pub struct Dispatcher {
    sets: RwLock<Arc<BTreeMap<u32, Set>>>,
    draw: parking_lot::Mutex<Option<Draw>>,
    pub reloads: AtomicU64,
    pub no_destination: AtomicU64,
}

/// FNV-1a: stable within and across runs, so a key keeps its destination.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Dispatcher {
    /// Replaces every set; destinations present before keep their state
    /// (a reload does not undo probing or the operator's choices). Calls in
    /// progress keep the targets they were given.
    pub fn load(&self, entries: Vec<Entry>) {
        let old = self.sets.read().clone();
        let mut sets: BTreeMap<u32, Set> = BTreeMap::new();
        for e in entries {
            let dest = Dest::new(e.clone());
            if let Some(prev) = old
                .get(&e.set)
                .and_then(|s| s.dests.iter().find(|d| d.entry.uri == e.uri))
            {
                dest.set_state(prev.state());
                dest.fails
                    .store(prev.fails.load(Ordering::Relaxed), Ordering::Relaxed);
                dest.oks
                    .store(prev.oks.load(Ordering::Relaxed), Ordering::Relaxed);
                dest.last_code
                    .store(prev.last_code.load(Ordering::Relaxed), Ordering::Relaxed);
                dest.probes
                    .store(prev.probes.load(Ordering::Relaxed), Ordering::Relaxed);
                dest.selected
                    .store(prev.selected.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            let set = sets.entry(e.set).or_insert_with(|| Set {
                id: e.set,
                dests: Vec::new(),
                rr: AtomicUsize::new(0),
            });
            set.dests.push(Arc::new(dest));
        }
        *self.sets.write() = Arc::new(sets);
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sets(&self) -> Arc<BTreeMap<u32, Set>> {
        self.sets.read().clone()
    }

    /// Every destination (for probing and listing).
    pub fn all(&self) -> Vec<Arc<Dest>> {
        self.sets()
            .values()
            .flat_map(|s| s.dests.iter().cloned())
            .collect()
    }

    /// Sets the state of destinations whose URI is `uri` (in `set`, or all
    /// sets); returns how many changed.
    pub fn set_state(&self, set: Option<u32>, uri: &str, state: State) -> usize {
        let mut n = 0;
        for s in self.sets().values() {
            if set.is_some_and(|id| id != s.id) {
                continue;
            }
            for d in s.dests.iter().filter(|d| d.entry.uri == uri) {
                d.set_state(state);
                d.fails.store(0, Ordering::Relaxed);
                d.oks.store(0, Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }

    /// The destinations of `set` in the order `msg` should try them; only
    /// active ones.
    pub fn select(&self, set: u32, algo: Algo, msg: &Message) -> Result<Vec<Arc<Dest>>, String> {
        let sets = self.sets();
        let Some(s) = sets.get(&set) else {
            return Err(format!("dispatcher set {set} does not exist"));
        };
        let active: Vec<&Arc<Dest>> = s
            .dests
            .iter()
            .filter(|d| d.state() == State::Active)
            .collect();
        let order: Vec<Arc<Dest>> = match algo {
            Algo::RoundRobin => {
                if active.is_empty() {
                    Vec::new()
                } else {
                    let start = s.rr.fetch_add(1, Ordering::Relaxed) % active.len();
                    (0..active.len())
                        .map(|i| active[(start + i) % active.len()].clone())
                        .collect()
                }
            }
            Algo::HashCallId | Algo::HashFrom | Algo::HashRuri => {
                let key = hash_key(algo, msg);
                // Over every destination, so a key keeps its destination
                // while others come and go; an inactive pick falls through
                // to the next active one.
                let n = s.dests.len();
                let start = (stable_hash(key.as_bytes()) % n.max(1) as u64) as usize;
                (0..n)
                    .map(|i| &s.dests[(start + i) % n])
                    .filter(|d| d.state() == State::Active)
                    .cloned()
                    .collect()
            }
            Algo::Weight => self.weighted(&active),
            Algo::Priority => {
                let mut v: Vec<Arc<Dest>> = active.into_iter().cloned().collect();
                v.sort_by_key(|d| std::cmp::Reverse(d.entry.priority));
                v
            }
            Algo::Random => {
                let mut v: Vec<Arc<Dest>> = active.into_iter().cloned().collect();
                let mut guard = self.draw.lock();
                let d = guard.get_or_insert_with(seeded);
                for i in (1..v.len()).rev() {
                    let j = (d.next_u32() as usize) % (i + 1);
                    v.swap(i, j);
                }
                v
            }
            Algo::LeastCalls => {
                return Err(
                    "least-calls needs dialog tracking, which this build does not have yet".into(),
                )
            }
        };
        match order.first() {
            Some(d) => {
                d.selected.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.no_destination.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(order)
    }

    /// Weighted draw without replacement (each pick proportional to weight).
    fn weighted(&self, active: &[&Arc<Dest>]) -> Vec<Arc<Dest>> {
        let mut left: Vec<&Arc<Dest>> = active.to_vec();
        let mut out = Vec::with_capacity(left.len());
        let mut guard = self.draw.lock();
        let d = guard.get_or_insert_with(seeded);
        while !left.is_empty() {
            let total: u64 = left.iter().map(|x| u64::from(x.entry.weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                let r = u64::from(d.next_u32()) % total;
                let mut running = 0;
                left.iter()
                    .position(|x| {
                        running += u64::from(x.entry.weight);
                        running > r
                    })
                    .unwrap_or(0)
            };
            out.push(left.remove(pick).clone());
        }
        out
    }
}

fn seeded() -> Draw {
    Draw::seeded(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(11, |d| d.as_nanos() as u64),
    )
}

fn hash_key(algo: Algo, msg: &Message) -> String {
    match algo {
        Algo::HashCallId => msg.call_id().to_string(),
        Algo::HashFrom => {
            let from = msg.from();
            from.uri.user.unwrap_or(from.uri.host).to_string()
        }
        _ => msg
            .request_uri()
            .map(|u| format!("{}@{}", u.user.unwrap_or_default(), u.host))
            .unwrap_or_default(),
    }
}

/// Parses a Kamailio-style list file: `setid destination [flags [priority
/// [attrs]]]` per line, `#` comments. `weight=N` in attrs sets the weight.
pub fn parse_list(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}: {raw:?}", n + 1);
        let mut f = line.split_whitespace();
        let set = f
            .next()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| bad("the set id must be a number"))?;
        let uri = f.next().ok_or_else(|| bad("no destination URI"))?;
        if crate::sip::Uri::parse(uri).map_or(true, |u| !u.is_sip()) {
            return Err(bad("the destination must be a sip: or sips: URI"));
        }
        let flags = match f.next() {
            Some(x) => x.parse().map_err(|_| bad("flags must be a number"))?,
            None => 0,
        };
        let priority = match f.next() {
            Some(x) => x.parse().map_err(|_| bad("priority must be a number"))?,
            None => 0,
        };
        let attrs = f.collect::<Vec<_>>().join(" ");
        out.push(Entry {
            set,
            uri: uri.to_string(),
            flags,
            priority,
            weight: weight_of(&attrs).map_err(|e| bad(&e))?,
            attrs,
        });
    }
    Ok(out)
}

/// The `weight=N` attribute (default 1).
pub fn weight_of(attrs: &str) -> Result<u32, String> {
    for kv in attrs.split(';') {
        if let Some(v) = kv.trim().strip_prefix("weight=") {
            return v
                .parse()
                .map_err(|_| format!("weight must be a whole number, got {v:?}"));
        }
    }
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};

    fn invite(call_id: &str) -> Message {
        let raw = format!(
            "INVITE sip:bob@example.net SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:alice@h>;tag=1\r\nTo: <sip:bob@h>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(
            bytes::Bytes::from(raw),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap()
    }

    fn ds() -> Dispatcher {
        let d = Dispatcher::default();
        d.load(
            parse_list(
                "# media servers\n1 sip:127.0.0.1:5071 0 10 weight=1\n1 sip:127.0.0.1:5072 0 30 weight=3\n1 sip:127.0.0.1:5073 0 20\n2 sip:gw.example.net\n",
            )
            .unwrap(),
        );
        d
    }

    fn uris(v: &[Arc<Dest>]) -> Vec<&str> {
        v.iter().map(|d| d.entry.uri.as_str()).collect()
    }

    #[test]
    fn list_file_errors_name_the_line() {
        assert!(parse_list("x sip:a").unwrap_err().contains("line 1"));
        assert!(parse_list("1 http://a").unwrap_err().contains("sip:"));
        assert!(parse_list("\n1 sip:a 0 0 weight=heavy")
            .unwrap_err()
            .contains("line 2"));
        assert_eq!(
            parse_list("1 sip:a 0 0 duid=x;weight=7").unwrap()[0].weight,
            7
        );
    }

    #[test]
    fn round_robin_rotates_and_skips_inactive() {
        let d = ds();
        let m = invite("a");
        let firsts: Vec<String> = (0..3)
            .map(|_| {
                d.select(1, Algo::RoundRobin, &m).unwrap()[0]
                    .entry
                    .uri
                    .clone()
            })
            .collect();
        assert_eq!(firsts.len(), 3);
        assert_ne!(firsts[0], firsts[1]);
        d.set_state(Some(1), "sip:127.0.0.1:5072", State::Inactive);
        for _ in 0..6 {
            let order = d.select(1, Algo::RoundRobin, &m).unwrap();
            assert_eq!(order.len(), 2);
            assert!(!uris(&order).contains(&"sip:127.0.0.1:5072"));
        }
    }

    #[test]
    fn hash_keeps_a_call_on_its_destination() {
        let d = ds();
        let first = |cid: &str| {
            d.select(1, Algo::HashCallId, &invite(cid)).unwrap()[0]
                .entry
                .uri
                .clone()
        };
        let picks: Vec<String> = (0..30).map(|i| first(&format!("call-{i}"))).collect();
        for (i, p) in picks.iter().enumerate() {
            assert_eq!(&first(&format!("call-{i}")), p);
        }
        // Another destination going inactive moves only the calls it had.
        let gone = "sip:127.0.0.1:5073";
        d.set_state(None, gone, State::Inactive);
        for (i, p) in picks.iter().enumerate() {
            if p != gone {
                assert_eq!(&first(&format!("call-{i}")), p);
            }
        }
    }

    #[test]
    fn priority_and_weight_orders() {
        let d = ds();
        let m = invite("p");
        assert_eq!(
            uris(&d.select(1, Algo::Priority, &m).unwrap()),
            [
                "sip:127.0.0.1:5072",
                "sip:127.0.0.1:5073",
                "sip:127.0.0.1:5071"
            ]
        );
        let mut heavy = 0;
        for _ in 0..5000 {
            if d.select(1, Algo::Weight, &m).unwrap()[0].entry.uri == "sip:127.0.0.1:5072" {
                heavy += 1;
            }
        }
        // Weights 1, 3, 1 (the default): 60 % for the heavy one.
        assert!((2700..3300).contains(&heavy), "{heavy}");
        assert!(d.select(1, Algo::LeastCalls, &m).is_err());
        assert!(d.select(9, Algo::RoundRobin, &m).is_err());
    }

    #[test]
    fn reload_keeps_state_of_known_destinations() {
        let d = ds();
        d.set_state(Some(1), "sip:127.0.0.1:5071", State::Disabled);
        d.load(parse_list("1 sip:127.0.0.1:5071\n1 sip:127.0.0.1:5074\n").unwrap());
        let all = d.all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].state(), State::Disabled);
        assert_eq!(all[1].state(), State::Active);
    }
}
