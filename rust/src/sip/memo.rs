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

use std::cell::RefCell;

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
/// `top` where the first one's fields are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Facts {
    pub first: Within,
    pub second: Within,
    pub param: Within,
    pub count: u16,
    pub top: ViaFields,
}

/// The range of `part` (a slice of `whole`) inside `whole`.
/// An empty `part` not pointing into `whole` (a valueless `;tag` reads as
/// `""`) is the empty range at its end.
pub(super) fn within(whole: &str, part: &str) -> Within {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    let start = match p.checked_sub(w) {
        Some(start) if start + part.len() <= whole.len() => start,
        _ if part.is_empty() => whole.len(),
        _ => return None,
    };
    let end = start + part.len();
    Some((u16::try_from(start).ok()?, u16::try_from(end).ok()?))
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
        let at = |part: &str| within(raw, part).unwrap_or_default();
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
    value: [u8; MAX_VALUE],
    facts: Facts,
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
    let id = id as u8;
    let (hash, hit) = MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        let memo = memo.get_or_insert_with(Memo::new);
        let hash = memo.hasher.hash_one((id, bytes));
        let slot = &memo.slots[hash as usize % SLOTS];
        let hit = slot.hash == hash
            && slot.id == id
            && usize::from(slot.len) == bytes.len()
            && &slot.value[..bytes.len()] == bytes;
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
        counted(HeaderId::From, &v.replace('1', "2"), &runs, true).unwrap();
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
    fn within_gives_the_offsets_of_a_slice() {
        let s = "abc;tag=xyz";
        assert_eq!(within(s, &s[8..]), Some((8, 11)));
        assert_eq!(within(s, "elsewhere"), None);
        assert_eq!(within(s, ""), Some((11, 11)));
    }
}
