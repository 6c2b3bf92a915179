//! Byte-level scanners shared by the SIP grammar parsers (RFC 3261 §25.1).
//!
//! Every scanner works on a byte slice and an index and returns the index where it
//! stopped, so callers keep zero-copy spans into the received datagram.

/// A byte class as a table: the classifiers run once per byte of every header,
/// and a lookup inlines where the chain of comparisons did not (callgrind).
pub(crate) const fn byte_class(marks: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < marks.len() {
        t[marks[i] as usize] = true;
        i += 1;
    }
    t
}

static TOKEN: [bool; 256] = byte_class(b"-.!%*_+`'~");
static UNRESERVED: [bool; 256] = byte_class(b"-_.!~*'()");

/// `token` characters: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
#[inline]
pub fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// `unreserved` (alphanum / mark) from RFC 3261 / RFC 2396.
#[inline]
pub fn is_unreserved(b: u8) -> bool {
    UNRESERVED[b as usize]
}

/// Where `part` (a slice of `whole`, or any empty string) lies in `whole`,
/// narrowed to `T` (u8, u16 offsets), for parts kept as offsets and sliced
/// out again later. An empty part is `(0, 0)`: every empty range reads as "".
pub fn range_within<T: TryFrom<usize>>(whole: &str, part: &str) -> Option<(T, T)> {
    if part.is_empty() {
        return Some((T::try_from(0).ok()?, T::try_from(0).ok()?));
    }
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start + part.len();
    if end > whole.len() {
        return None;
    }
    Some((T::try_from(start).ok()?, T::try_from(end).ok()?))
}

/// Where the ASCII byte `c` first occurs in `s`. SIP fields are a few dozen
/// bytes: a plain loop costs less than `str::find`'s searcher set-up.
#[inline]
pub fn find_byte(s: &str, c: u8) -> Option<usize> {
    debug_assert!(c.is_ascii());
    s.bytes().position(|b| b == c)
}

/// `str::split_once` at an ASCII byte, through `find_byte`.
#[inline]
pub fn split_once_byte(s: &str, c: u8) -> Option<(&str, &str)> {
    let i = find_byte(s, c)?;
    Some((&s[..i], &s[i + 1..]))
}

/// `str::split` at an ASCII byte, through `find_byte`: the same pieces
/// (an empty `s` gives one empty piece).
pub fn split_byte(s: &str, c: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match find_byte(r, c) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

#[inline]
pub fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Skips linear white space, including a line fold (CRLF or LF followed by SP/HT).
pub fn skip_lws(s: &[u8], mut i: usize) -> usize {
    loop {
        while i < s.len() && is_wsp(s[i]) {
            i += 1;
        }
        let fold = if s[i..].starts_with(b"\r\n") {
            2
        } else if s[i..].starts_with(b"\n") {
            1
        } else {
            return i;
        };
        if i + fold < s.len() && is_wsp(s[i + fold]) {
            i += fold;
        } else {
            return i;
        }
    }
}

/// Scans back over trailing white space (and folds) so spans never end in LWS.
pub fn trim_end(s: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(s[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    end
}

pub fn skip_token(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_token(s[i]) {
        i += 1;
    }
    i
}

/// Given `s[i] == b'"'`, returns the index just past the closing quote, honouring
/// quoted-pair escapes; `None` when the string is unterminated.
pub fn skip_quoted(s: &[u8], i: usize) -> Option<usize> {
    debug_assert_eq!(s.get(i), Some(&b'"'));
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Some(j + 1),
            b'\\' => {
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                match s.get(j + 1) {
                    Some(b'\r') | Some(b'\n') | None => return None,
                    Some(_) => j += 2,
                }
            }
            b'\r' | b'\n' => {
                // A fold inside a quoted string is LWS; a bare line end is not.
                let next = skip_lws(s, j);
                if next == j {
                    return None;
                }
                j = next;
            }
            _ => j += 1,
        }
    }
    None
}

/// Splits a header value at top-level commas (outside quotes and `<...>`),
/// returning the element spans trimmed of LWS. An empty element is an error
/// (`None`): RFC 3261's `#element` lists in SIP never allow empty members.
pub fn split_commas(s: &[u8], start: usize, end: usize) -> Option<Parts> {
    let mut out = Parts::default();
    let mut i = start;
    let mut elem_start = start;
    // Jumps between the bytes that matter (most values have none of them).
    while let Some(off) = memchr::memchr3(b'"', b'<', b',', &s[i..end]) {
        let j = i + off;
        i = match s[j] {
            b'"' => skip_quoted(&s[..end], j)?,
            // Inside <...> neither quotes nor commas count, up to the first '>'.
            b'<' => j + 1 + memchr::memchr(b'>', &s[j + 1..end])? + 1,
            _ => {
                out.push(trimmed(s, elem_start, j)?);
                elem_start = j + 1;
                j + 1
            }
        };
    }
    out.push(trimmed(s, elem_start, end)?);
    Some(out)
}

/// The elements `split_commas` found, as (start, end) offsets: up to four
/// kept inline (nearly every header value), more in a `Vec`. Splitting is on
/// every routed message's path; a `Vec` each time was its allocation.
#[derive(Debug, Default, Clone)]
pub struct Parts {
    inline: [(usize, usize); 4],
    len: usize,
    more: Vec<(usize, usize)>,
}

impl Parts {
    fn push(&mut self, part: (usize, usize)) {
        if self.more.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = part;
            self.len += 1;
            return;
        }
        if self.more.is_empty() {
            self.more.extend_from_slice(&self.inline[..self.len]);
        }
        self.more.push(part);
    }
}

impl std::ops::Deref for Parts {
    type Target = [(usize, usize)];
    fn deref(&self) -> &[(usize, usize)] {
        if self.more.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.more
        }
    }
}

impl IntoIterator for Parts {
    type Item = (usize, usize);
    type IntoIter = PartsIter;
    fn into_iter(self) -> PartsIter {
        PartsIter { parts: self, at: 0 }
    }
}

pub struct PartsIter {
    parts: Parts,
    at: usize,
}

impl Iterator for PartsIter {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        let part = self.parts.get(self.at).copied()?;
        self.at += 1;
        Some(part)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.parts.len() - self.at;
        (left, Some(left))
    }
}

fn trimmed(s: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    let a = skip_lws(s, start);
    let b = trim_end(s, a, end);
    (a < b).then_some((a, b))
}

/// Parses an ASCII decimal with an upper bound; rejects empty input and overflow.
pub fn parse_decimal(s: &[u8], max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (v <= max).then_some(v)
}

pub fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lws_skips_folds_but_not_line_ends() {
        assert_eq!(skip_lws(b"  \r\n\tx", 0), 5);
        assert_eq!(skip_lws(b" \r\nx", 0), 1);
        assert_eq!(skip_lws(b"x", 0), 0);
    }

    #[test]
    fn quoted_strings_honour_escapes() {
        assert_eq!(skip_quoted(br#""a\"b" c"#, 0), Some(6));
        assert_eq!(skip_quoted(br#""unterminated"#, 0), None);
        assert_eq!(skip_quoted(b"\"a\\\r\n\"", 0), None);
    }

    #[test]
    fn commas_split_outside_quotes_and_angles() {
        let s = br#""a,b" <sip:x;a=1,2>, sip:y"#;
        let parts = split_commas(s, 0, s.len()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&s[parts[1].0..parts[1].1], b"sip:y");
        assert!(split_commas(b"a,,b", 0, 4).is_none());
        assert!(split_commas(b"<sip:a, b", 0, 9).is_none(), "unclosed <");
        assert!(split_commas(b"\"a, b", 0, 5).is_none(), "unclosed quote");
        let s = br#"<sip:"x,y">, a>b, "<,>" c"#;
        let parts = split_commas(s, 0, s.len()).unwrap();
        let texts: Vec<&[u8]> = parts.iter().map(|&(a, b)| &s[a..b]).collect();
        assert_eq!(texts, [&br#"<sip:"x,y">"#[..], b"a>b", br#""<,>" c"#]);
        // Past four elements they move to the heap, in order.
        let s = b"a, b, c, d, e, f";
        let parts = split_commas(s, 0, s.len()).unwrap();
        let texts: Vec<&[u8]> = parts.into_iter().map(|(a, b)| &s[a..b]).collect();
        assert_eq!(texts, [b"a", b"b", b"c", b"d", b"e", b"f"]);
    }

    /// The byte-at-a-time splitter `split_commas` replaced: both must agree.
    fn split_commas_reference(s: &[u8], start: usize, end: usize) -> Option<Vec<(usize, usize)>> {
        let mut out = Vec::new();
        let (mut i, mut elem_start, mut angle) = (start, start, false);
        while i < end {
            match s[i] {
                b'"' if !angle => {
                    i = skip_quoted(&s[..end], i)?;
                    continue;
                }
                b'<' => angle = true,
                b'>' => angle = false,
                b',' if !angle => {
                    out.push(trimmed(s, elem_start, i)?);
                    elem_start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        if angle {
            return None;
        }
        out.push(trimmed(s, elem_start, end)?);
        Some(out)
    }

    #[test]
    fn comma_split_matches_the_reference_on_generated_values() {
        let alphabet: [&[u8]; 9] = [
            b"a", b",", b"<", b">", b"\"", b" ", b"\\", b"\r\n ", b"\r\n",
        ];
        let mut seed = 0x2545_f491_u32;
        for _ in 0..20_000 {
            let mut v = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let mut r = seed;
            for _ in 0..(r % 12) {
                r = r.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                v.extend_from_slice(alphabet[(r >> 16) as usize % alphabet.len()]);
            }
            for start in 0..=v.len().min(2) {
                assert_eq!(
                    split_commas(&v, start, v.len()).map(|p| p.to_vec()),
                    split_commas_reference(&v, start, v.len()),
                    "{:?} from {start}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }

    #[test]
    fn byte_classes_match_the_grammar() {
        for b in 0..=255u8 {
            let token = b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
            let unreserved = b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b);
            assert_eq!(is_token(b), token, "{b}");
            assert_eq!(is_unreserved(b), unreserved, "{b}");
        }
    }

    #[test]
    fn byte_splits_match_str_splits() {
        for s in ["", ";", "a", "a;b", ";a;;b;", "é;x=1;y"] {
            let ours: Vec<&str> = split_byte(s, b';').collect();
            let std: Vec<&str> = s.split(';').collect();
            assert_eq!(ours, std, "{s:?}");
            assert_eq!(split_once_byte(s, b';'), s.split_once(';'), "{s:?}");
            assert_eq!(find_byte(s, b'x'), s.find('x'), "{s:?}");
        }
    }

    #[test]
    fn decimals_are_bounded() {
        assert_eq!(parse_decimal(b"255", 255), Some(255));
        assert_eq!(parse_decimal(b"256", 255), None);
        assert_eq!(
            parse_decimal(b"36893488147419103232", u64::from(u32::MAX)),
            None
        );
        assert_eq!(parse_decimal(b"", 10), None);
        assert_eq!(parse_decimal(b"-1", 10), None);
    }

    #[test]
    fn range_within_gives_the_offsets_of_a_slice() {
        let s = "abc;tag=xyz";
        assert_eq!(range_within::<u16>(s, &s[8..]), Some((8, 11)));
        assert_eq!(range_within::<u16>(s, "elsewhere"), None);
        assert_eq!(range_within::<u16>(s, ""), Some((0, 0)));
        let long = "x".repeat(300);
        assert_eq!(range_within::<u8>(&long, &long[250..]), None); // not in a u8
    }
}
