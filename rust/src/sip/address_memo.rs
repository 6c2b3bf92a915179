//! One-address lists already parsed, by their exact text: a dialog's Route
//! set (our own Record-Route, most often) arrives unchanged on every
//! in-dialog request and is read twice per request (whether it names us, then
//! where it goes next), so its `NameAddr` is rebuilt from offsets instead of
//! parsed each time.
//!
//! Exact, like the header memo (`memo.rs`): a value counts as seen only when
//! its bytes equal the remembered ones, so the `NameAddr` rebuilt is the one
//! `NameAddr::parse` gave for those bytes. Only single-address values that
//! parsed are remembered. Bounded: `SLOTS` × `MAX_VALUE` bytes per parsing
//! thread.

use std::cell::RefCell;

use super::nameaddr::NameAddr;
use super::scan::range_within;
use super::uri::UriSpans;
use super::ParseError;

const SLOTS: usize = 64;
const MAX_VALUE: usize = 128;

type Range = (u8, u8);

/// Where a `NameAddr`'s parts are in the value it was parsed from.
#[derive(Clone, Copy)]
struct Spans {
    display: Option<Range>,
    uri_text: Range,
    uri: UriSpans,
    angle: bool,
    params: Range,
}

impl Spans {
    fn of(value: &str, na: &NameAddr<'_>) -> Option<Spans> {
        let at = |part: &str| range_within::<u8>(value, part);
        Some(Spans {
            display: match na.display {
                Some(d) => Some(at(d)?),
                None => None,
            },
            uri_text: at(na.uri.raw)?,
            uri: UriSpans::of(&na.uri)?,
            angle: na.angle,
            params: at(na.params)?,
        })
    }

    fn rebuild<'a>(&self, value: &'a str) -> NameAddr<'a> {
        let at = |(a, b): Range| value.get(usize::from(a)..usize::from(b)).unwrap_or("");
        NameAddr {
            display: self.display.map(at),
            uri: self.uri.rebuild(at(self.uri_text)),
            angle: self.angle,
            params: at(self.params),
        }
    }
}

struct Slot {
    len: u8,
    value: [u8; MAX_VALUE],
    spans: Option<Spans>,
}

thread_local! {
    static SEEN: RefCell<Option<(ahash::RandomState, Vec<Slot>)>> = const { RefCell::new(None) };
}

impl<'a> NameAddr<'a> {
    /// `parse_list`, answered from what this thread remembers when `value`
    /// is a single address seen before (see the module's doc).
    pub fn parse_list_remembered(value: &'a str) -> Result<Vec<NameAddr<'a>>, ParseError> {
        let bytes = value.as_bytes();
        if bytes.len() > MAX_VALUE {
            return NameAddr::parse_list(value);
        }
        let (slot, hit) = SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            let (hasher, slots) = seen.get_or_insert_with(|| {
                let empty = || Slot {
                    len: 0,
                    value: [0; MAX_VALUE],
                    spans: None,
                };
                (
                    ahash::RandomState::new(),
                    (0..SLOTS).map(|_| empty()).collect(),
                )
            });
            let slot = hasher.hash_one(bytes) as usize % SLOTS;
            let s = &slots[slot];
            let hit = if usize::from(s.len) == bytes.len() && &s.value[..bytes.len()] == bytes {
                s.spans
            } else {
                None
            };
            (slot, hit)
        });
        if let Some(spans) = hit {
            return Ok(vec![spans.rebuild(value)]);
        }
        let list = NameAddr::parse_list(value)?;
        if let [only] = list.as_slice() {
            if let Some(spans) = Spans::of(value, only) {
                SEEN.with(|seen| {
                    if let Some((_, slots)) = seen.borrow_mut().as_mut() {
                        let s = &mut slots[slot];
                        s.len = bytes.len() as u8;
                        s.value[..bytes.len()].copy_from_slice(bytes);
                        s.spans = Some(spans);
                    }
                });
            }
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_address_is_the_parsed_one() {
        for v in [
            "<sip:127.0.0.1:5060;lr>",
            "<sip:proxy.example.com;transport=tcp;lr>;x=1",
            "\"Edge\" <sips:edge.example.com:5061;lr>",
            "sip:p1.example.com;lr",
            "<sip:a.example.com;lr>, <sip:b.example.com;lr>",
        ] {
            let parsed = NameAddr::parse_list(v).unwrap();
            for _ in 0..3 {
                assert_eq!(NameAddr::parse_list_remembered(v).unwrap(), parsed, "{v}");
            }
        }
    }

    #[test]
    fn bad_values_still_fail_with_their_error() {
        let v = "<sip:memo-bad.example.com;lr";
        for _ in 0..2 {
            assert_eq!(
                NameAddr::parse_list_remembered(v).unwrap_err(),
                NameAddr::parse_list(v).unwrap_err()
            );
        }
    }
}
