//! A memo of header values already found well-formed, so the same From, To,
//! Via or Contact text seen again (a call's responses and in-dialog requests
//! repeat most of them byte for byte) is not parsed again to be checked.
//!
//! Exact: a value counts as seen only when its bytes equal the remembered
//! ones (the hash only picks the slot), so an answer from the memo is the
//! answer the parser gave for those bytes. Only successes are remembered:
//! a malformed value is parsed every time, and its error says what is wrong.
//! Bounded: a fixed table per parsing thread (`SLOTS` × `MAX_VALUE` bytes,
//! ~420 KB), a newer value replacing an older one in its slot.
//!
//! Blind to branches and tags: every new transaction brings a new branch and
//! every new call new tags, so an exact memo would miss on each request and
//! response (a Via line may carry several via-parms, each with its branch). A
//! Via value matches a remembered one when it differs only inside branch
//! values (after each `;branch=`, up to `MAX_BLIND` of them), a From or To
//! value when it differs only inside its tag (after `;tag=`), and each such
//! part has the same place and length and is made of `blindable` characters
//! in both: those for each other change nothing the parser decides (the `;`
//! `,` `=` `"` `<` `>` `@` `%` `\` that give a value its structure are not
//! among them), and the same length keeps every remembered offset.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hash, Hasher};

use super::scan::range_within;
use super::via::Via;
use super::{HeaderId, ParseError};

const SLOTS: usize = 2048;
/// Longer values are checked each time (rare: a Via or From is ~60-120 bytes).
const MAX_VALUE: usize = 176;

/// A range inside the value (offsets from its first byte).
pub(super) type Within = Option<(u16, u16)>;

/// What checking a value found out, for the parts the message keeps.
/// From/To: `first` is the tag. Via: `first` and `second` the first two
/// via-parms, `param` the first one's branch, `count` how many via-parms,
/// `top` and `next` where the first two's fields are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Facts {
    pub first: Within,
    pub second: Within,
    pub param: Within,
    pub count: u16,
    pub top: ViaFields,
    pub next: ViaFields,
}

/// Where the top via-parm's fields are, as offsets from its start (a header
/// line is at most 8 KB); `params: None`: none written. Small: a held
/// transaction keeps its request's `Message`, and the header memo keeps one
/// per remembered Via value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ViaFields {
    pub protocol: (u16, u16),
    pub transport: (u16, u16),
    pub host: (u16, u16),
    pub params: Option<(u16, u16)>,
    pub port: Option<u16>,
}

impl ViaFields {
    /// Where `via`'s fields are inside `via.raw`: read while the Via is
    /// checked, so the message's accessors never parse it again.
    pub(super) fn of(via: &Via<'_>) -> ViaFields {
        let raw = via.raw;
        let at = |part: &str| range_within(raw, part).unwrap_or_default();
        let inside = |part: &str| {
            let (r, p) = (raw.as_ptr() as usize, part.as_ptr() as usize);
            p >= r && p + part.len() <= r + raw.len()
        };
        ViaFields {
            protocol: at(via.protocol),
            transport: at(via.transport),
            host: at(via.host),
            params: inside(via.params).then(|| at(via.params)),
            port: via.port,
        }
    }
}

struct Slot {
    hash: u64,
    id: u8,
    len: u8,
    /// The parts of `value` a match may differ in (a Via's branch values).
    blind: Blind,
    value: [u8; MAX_VALUE],
    facts: Facts,
}

/// Branch values a Via value's match may differ in; more are compared exactly.
const MAX_BLIND: usize = 4;

/// Characters a blind part is made of: both token characters (RFC 3261
/// §25.1) and characters a URI parameter, user part or quoted string takes
/// unescaped, so swapping them for each other is the same to the parser
/// wherever `;tag=` or `;branch=` appears (no `%`, which starts an escape).
fn blindable(c: u8) -> bool {
    BLINDABLE[usize::from(c)]
}

static BLINDABLE: [bool; 256] = super::scan::byte_class(b"-.!*_+'~");

/// Where a Via value's branch values, or a From or To value's tag, are (the
/// run of `blindable` characters after each `;branch=` or `;tag=`), as
/// `[start, end)` offsets; none for other headers.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
struct Blind {
    spans: [(u8, u8); MAX_BLIND],
    count: u8,
}

impl Blind {
    fn of(id: HeaderId, bytes: &[u8]) -> Blind {
        let mut blind = Blind::default();
        let needle: &[u8] = match id {
            HeaderId::Via => b";branch=",
            HeaderId::From | HeaderId::To => b";tag=",
            _ => return blind,
        };
        let mut from = 0;
        while let Some(at) = memchr::memchr(b';', &bytes[from..]) {
            let at = from + at;
            if !bytes[at..].starts_with(needle) {
                from = at + 1;
                continue;
            }
            let start = at + needle.len();
            let mut end = start;
            while end < bytes.len() && blindable(bytes[end]) {
                end += 1;
            }
            if end > start {
                // Values are at most MAX_VALUE (< 256) bytes long.
                blind.spans[usize::from(blind.count)] = (start as u8, end as u8);
                blind.count += 1;
                if usize::from(blind.count) == MAX_BLIND {
                    break;
                }
            }
            from = end;
        }
        blind
    }

    /// The parts of `bytes` outside the blind spans, in order.
    fn seen<'b>(&self, bytes: &'b [u8]) -> impl Iterator<Item = &'b [u8]> + use<'b, '_> {
        let spans = &self.spans[..usize::from(self.count)];
        let starts = std::iter::once(0).chain(spans.iter().map(|&(_, e)| usize::from(e)));
        let ends = spans
            .iter()
            .map(|&(s, _)| usize::from(s))
            .chain(std::iter::once(bytes.len()));
        starts.zip(ends).map(move |(a, b)| &bytes[a..b])
    }
}

struct Memo {
    hasher: ahash::RandomState,
    slots: Vec<Slot>,
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

/// The facts of `value` (a header `id`'s value): from the memo when these
/// exact bytes were checked before on this thread, else from `check`, whose
/// success is remembered.
pub(super) fn checked(
    id: HeaderId,
    value: &str,
    check: impl FnOnce() -> Result<Facts, ParseError>,
) -> Result<Facts, ParseError> {
    let bytes = value.as_bytes();
    if bytes.len() > MAX_VALUE {
        return check();
    }
    let blind = Blind::of(id, bytes);
    let id = id as u8;
    let (hash, hit) = MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        let memo = memo.get_or_insert_with(Memo::new);
        let mut hasher = memo.hasher.build_hasher();
        (id, bytes.len(), blind).hash(&mut hasher);
        for part in blind.seen(bytes) {
            hasher.write(part);
        }
        let hash = hasher.finish();
        let slot = &memo.slots[hash as usize % SLOTS];
        let hit = slot.hash == hash
            && slot.id == id
            && usize::from(slot.len) == bytes.len()
            && slot.blind == blind
            && blind
                .seen(&slot.value[..bytes.len()])
                .zip(blind.seen(bytes))
                .all(|(a, b)| a == b);
        (hash, hit.then_some(slot.facts))
    });
    if let Some(facts) = hit {
        return Ok(facts);
    }
    let facts = check()?;
    MEMO.with(|memo| {
        if let Some(memo) = memo.borrow_mut().as_mut() {
            let slot = &mut memo.slots[hash as usize % SLOTS];
            slot.hash = hash;
            slot.id = id;
            slot.len = bytes.len() as u8;
            slot.blind = blind;
            slot.value[..bytes.len()].copy_from_slice(bytes);
            slot.facts = facts;
        }
    });
    Ok(facts)
}

impl Memo {
    fn new() -> Memo {
        let empty = || Slot {
            hash: 0,
            id: u8::MAX, // no header's: an empty slot matches nothing
            len: 0,
            blind: Blind::default(),
            value: [0; MAX_VALUE],
            facts: Facts::default(),
        };
        Memo {
            hasher: ahash::RandomState::new(),
            slots: (0..SLOTS).map(|_| empty()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn counted(id: HeaderId, value: &str, runs: &Cell<u32>, ok: bool) -> Result<Facts, ParseError> {
        checked(id, value, || {
            runs.set(runs.get() + 1);
            if ok {
                Ok(Facts {
                    count: value.len() as u16,
                    ..Facts::default()
                })
            } else {
                Err(ParseError::bad("no"))
            }
        })
    }

    #[test]
    fn a_value_is_checked_once_and_answered_alike_after() {
        let runs = Cell::new(0);
        let v = "<sip:alice@example.com>;tag=memo-test-1";
        let first = counted(HeaderId::From, v, &runs, true).unwrap();
        assert_eq!(counted(HeaderId::From, v, &runs, true).unwrap(), first);
        assert_eq!(runs.get(), 1);
        // Same bytes as another header, or one byte apart: checked again.
        counted(HeaderId::To, v, &runs, true).unwrap();
        counted(HeaderId::From, &v.replace("alice", "alica"), &runs, true).unwrap();
        assert_eq!(runs.get(), 3);
    }

    #[test]
    fn failures_and_long_values_are_never_remembered() {
        let runs = Cell::new(0);
        let bad = "<sip:memo-test-bad";
        assert!(counted(HeaderId::From, bad, &runs, false).is_err());
        assert!(counted(HeaderId::From, bad, &runs, false).is_err());
        let long = "x".repeat(MAX_VALUE + 1);
        counted(HeaderId::Via, &long, &runs, true).unwrap();
        counted(HeaderId::Via, &long, &runs, true).unwrap();
        assert_eq!(runs.get(), 4);
    }

    #[test]
    fn a_via_differing_only_in_its_branch_value_is_the_same_to_the_memo() {
        let runs = Cell::new(0);
        let via = |branch: &str| format!("SIP/2.0/UDP 192.0.2.7:5060;branch={branch};rport");
        let first = counted(HeaderId::Via, &via("z9hG4bK-memo-0001"), &runs, true).unwrap();
        let again = counted(HeaderId::Via, &via("z9hG4bK-memo-9999"), &runs, true).unwrap();
        assert_eq!((again, runs.get()), (first, 1));
        // A different length, a non-token character, or a difference
        // outside the branch value: checked again.
        counted(HeaderId::Via, &via("z9hG4bK-memo-00001"), &runs, true).unwrap();
        assert_eq!(runs.get(), 2);
        counted(HeaderId::Via, &via("z9hG4bK\"memo\"001"), &runs, true).unwrap();
        assert_eq!(runs.get(), 3);
        let moved = via("z9hG4bK-memo-0002").replace("5060", "5061");
        counted(HeaderId::Via, &moved, &runs, true).unwrap();
        assert_eq!(runs.get(), 4);
        // Every via-parm's branch on the line.
        let two = |a: &str, b: &str| format!("{}, SIP/2.0/TCP h;branch={b}", via(a));
        let pair = counted(
            HeaderId::Via,
            &two("z9hG4bK-two-01", "z9hG4bK-two-02"),
            &runs,
            true,
        );
        let same = counted(
            HeaderId::Via,
            &two("z9hG4bK-two-03", "z9hG4bK-two-04"),
            &runs,
            true,
        );
        assert_eq!((pair.unwrap(), runs.get()), (same.unwrap(), 5));
        // Only Via is branch-blind, only From and To tag-blind.
        let from = |tag: &str| format!("<sip:a@example.com>;branch={tag}");
        counted(HeaderId::From, &from("aaaa"), &runs, true).unwrap();
        counted(HeaderId::From, &from("bbbb"), &runs, true).unwrap();
        assert_eq!(runs.get(), 7);
        let to = |tag: &str| format!("<sip:b@example.com;tag=u{tag}@h>;tag={tag}");
        counted(HeaderId::To, &to("1a-2"), &runs, true).unwrap();
        counted(HeaderId::To, &to("3b.4"), &runs, true).unwrap();
        counted(HeaderId::Contact, &to("1a-2"), &runs, true).unwrap();
        counted(HeaderId::Contact, &to("3b.4"), &runs, true).unwrap();
        assert_eq!(runs.get(), 10);
        // `%` starts an escape inside a URI: never blind.
        counted(HeaderId::To, &to("1a%2"), &runs, true).unwrap();
        assert_eq!(runs.get(), 11);
    }

    #[test]
    fn a_branch_swapped_for_a_malformed_one_is_still_refused() {
        let good = "SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK-blind-1";
        let facts = via_facts_for_test(good).unwrap();
        assert_eq!(
            checked(HeaderId::Via, good, || via_facts_for_test(good)).unwrap(),
            facts
        );
        for bad in [
            "SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK-blind;,1",
            "SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK-blind\"-1",
            "SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK-blind=-1",
        ] {
            assert!(
                checked(HeaderId::Via, bad, || via_facts_for_test(bad)).is_err(),
                "{bad}"
            );
        }
    }

    fn via_facts_for_test(value: &str) -> Result<Facts, ParseError> {
        let vias = Via::parse_all(value)?;
        Ok(Facts {
            count: vias.len() as u16,
            first: range_within(value, vias[0].raw),
            ..Facts::default()
        })
    }
}
