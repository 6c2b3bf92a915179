//! `name-addr` / `addr-spec` with header parameters: From, To, Contact, Route,
//! Record-Route, Path (RFC 3261 §20.10, §25.1).

use super::scan::{find_byte, is_token, skip_lws, skip_quoted, skip_token, split_commas, trim_end};
use super::uri::Uri;
use super::via::{param_lookup, validate_params};
use super::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name as written (quotes kept), if any.
    pub display: Option<&'a str>,
    pub uri: Uri<'a>,
    /// Whether the URI was enclosed in `<>`.
    pub angle: bool,
    /// Raw header parameters after the URI, without the leading `;`.
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    pub fn parse(s: &'a str) -> Result<NameAddr<'a>, ParseError> {
        let bad = |why| ParseError::bad(why);
        let b = s.as_bytes();
        let mut i = skip_lws(b, 0);
        let mut display = None;
        let angle;
        let uri_text;
        if b.get(i) == Some(&b'"') {
            let end = skip_quoted(b, i).ok_or(bad("unterminated quoted string"))?;
            display = Some(&s[i..end]);
            i = skip_lws(b, end);
            if b.get(i) != Some(&b'<') {
                return Err(bad("quoted display name not followed by <URI>"));
            }
        }
        if b.get(i) == Some(&b'<') || has_angle_later(b, i) {
            if display.is_none() && b.get(i) != Some(&b'<') {
                // *(token LWS) display name before '<'
                let start = i;
                while i < b.len() && b[i] != b'<' {
                    let t = skip_token(b, i);
                    if t == i {
                        return Err(bad("invalid characters in display name"));
                    }
                    i = skip_lws(b, t);
                }
                display = Some(&s[start..trim_end(b, start, i)]);
            }
            let close = find_byte(&s[i..], b'>')
                .map(|c| c + i)
                .ok_or(bad("missing '>'"))?;
            uri_text = &s[i + 1..close];
            angle = true;
            i = close + 1;
        } else {
            // addr-spec: the URI ends at the first ';' (then header params) or LWS.
            let start = i;
            while i < b.len() && b[i] != b';' && !matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
                i += 1;
            }
            uri_text = &s[start..i];
            angle = false;
            if uri_text.contains('?') {
                return Err(bad("URI with headers must be enclosed in <>"));
            }
        }
        let uri = Uri::parse(uri_text)?;
        i = skip_lws(b, i);
        let params = if i < b.len() {
            if b[i] != b';' {
                return Err(bad("unexpected text after URI"));
            }
            validate_params(b, i)?;
            &s[i + 1..]
        } else {
            ""
        };
        Ok(NameAddr {
            display,
            uri,
            angle,
            params,
        })
    }

    /// Parses every element of a comma-separated header value (Contact, Route...).
    pub fn parse_list(value: &'a str) -> Result<Vec<NameAddr<'a>>, ParseError> {
        let parts = split_commas(value.as_bytes(), 0, value.len())
            .ok_or(ParseError::bad("malformed address list"))?;
        parts
            .into_iter()
            .map(|(a, b)| NameAddr::parse(&value[a..b]))
            .collect()
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        param_lookup(self.params, name)
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag")
    }

    /// The display name with quotes and quoted-pair escapes removed.
    pub fn display_unquoted(&self) -> Option<String> {
        let d = self.display?;
        let Some(inner) = d.strip_prefix('"').and_then(|d| d.strip_suffix('"')) else {
            return Some(d.to_string());
        };
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        Some(out)
    }
}

/// True when a `<` follows a run of display-name tokens, i.e. the value is a
/// name-addr with an unquoted display name.
fn has_angle_later(b: &[u8], mut i: usize) -> bool {
    while i < b.len() {
        match b[i] {
            b'<' => return true,
            c if is_token(c) || matches!(c, b' ' | b'\t' | b'\r' | b'\n') => i += 1,
            // A ':' before any '<' means an addr-spec; other octets (e.g. ',')
            // are a malformed display name, which the caller reports.
            b':' => return false,
            _ => return b[i..].contains(&b'<'),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let n = NameAddr::parse("\"Bob \\\"B\\\"\" <sip:bob@example.com>;tag=abc").unwrap();
        assert_eq!(n.display_unquoted().as_deref(), Some("Bob \"B\""));
        assert_eq!(n.uri.user, Some("bob"));
        assert_eq!(n.tag(), Some("abc"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some("caller"));
        let n = NameAddr::parse("sip:carol@example.com;tag=x").unwrap();
        assert!(!n.angle);
        assert_eq!(n.uri.params, "");
        assert_eq!(n.tag(), Some("x"));
        let n = NameAddr::parse("<sip:ss2.example.com;lr>").unwrap();
        assert_eq!(n.uri.param("lr"), Some(""));
    }

    #[test]
    fn rejects() {
        assert!(NameAddr::parse("\"Unterminated <sip:a@b>").is_err());
        assert!(NameAddr::parse("Bell, Alexander <sip:a.g.bell@bell-tel.com>;tag=43").is_err());
        assert!(NameAddr::parse("<sip:a.g.bell@ bell-tel.com>").is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:x%3E").is_err());
    }
}
