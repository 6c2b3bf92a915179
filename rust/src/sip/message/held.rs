//! The held form of a request whose server transaction has answered finally
//! (issue 14 point 4, decision 0062): for the rest of Timer L/J/H it is only
//! matched and answered, so it keeps the start line and the lines that
//! matching and answering read (the first Via line, From, To, Call-ID, CSeq)
//! in a buffer of its own, and lets the received datagram go.

use bytes::Bytes;

use super::{HeaderField, HeaderId, Message, Span};

/// At most the start line and five header lines are kept: From, To, Call-ID
/// and CSeq may appear once only (`parse` refuses repeats), and of the Via
/// lines only the first is kept.
const MAX_KEPT: usize = 6;

/// The byte ranges of the old buffer kept, in order, with where each starts
/// in the new one. Fixed-size: this runs twice per call (~1.5 k instructions
/// with `Vec`s; the held form exists to save memory, not to spend CPU).
#[derive(Default)]
struct Kept {
    ranges: [(u32, u32, u32); MAX_KEPT],
    len: usize,
}

impl Kept {
    /// Where `offset` of the old buffer is in the new one, if it was kept
    /// (a range's end offset counts as inside: spans end there).
    fn map(&self, offset: u32) -> Option<u32> {
        self.ranges[..self.len]
            .iter()
            .find(|(start, end, _)| *start <= offset && offset <= *end)
            .map(|(start, _, to)| to + (offset - start))
    }
    fn span(&self, s: Span) -> Option<Span> {
        let start = self.map(s.start)?;
        // A span lies within one line, so both ends map through one range.
        (self.map(s.end)? - start == s.end - s.start).then_some(Span {
            start,
            end: start + (s.end - s.start),
        })
    }
}

impl Message {
    /// Replaces the message by its held form (see the module's doc). What
    /// stays readable: the start line, Call-ID, CSeq, tags, the top Via and
    /// its branch, and the From and To headers (`header()` and `headers()`
    /// see no other header). Everything else, the body included, is gone.
    pub fn compact_for_hold(&mut self) {
        let mut lines = [Span::default(); MAX_KEPT];
        lines[0] = Span {
            start: 0,
            end: self.headers_start,
        };
        let mut n = 1;
        let mut from_to: [Option<HeaderField>; 2] = [None, None];
        let mut first_via = true;
        for h in &self.headers {
            let keep = match h.id {
                HeaderId::Via => std::mem::replace(&mut first_via, false),
                HeaderId::From => from_to[0].replace(*h).is_none(),
                HeaderId::To => from_to[1].replace(*h).is_none(),
                HeaderId::CallId | HeaderId::CSeq => true,
                _ => false,
            };
            if keep {
                if n == MAX_KEPT {
                    // Not a message `parse` accepted: keep it whole.
                    self.drop_header_index();
                    return;
                }
                lines[n] = h.line;
                n += 1;
            }
        }
        let lines = &lines[..n];
        let size = lines
            .iter()
            .map(|l| (l.end - l.start) as usize)
            .sum::<usize>()
            + 2;
        if size >= self.buf.len() {
            self.drop_header_index();
            return;
        }
        let mut out = Vec::with_capacity(size);
        let mut kept = Kept::default();
        for l in lines {
            kept.ranges[kept.len] = (l.start, l.end, out.len() as u32);
            kept.len += 1;
            out.extend_from_slice(&self.buf[l.range()]);
        }
        let headers_end = out.len() as u32;
        out.extend_from_slice(b"\r\n");
        let remap = |s: Span| kept.span(s);
        let (Some(call_id), Some(cseq_method), Some(top_via)) = (
            remap(self.call_id),
            remap(self.cseq_method),
            remap(self.top_via),
        ) else {
            // Cannot happen for a parsed message (these lines are kept);
            // keep the whole message rather than a wrong one.
            self.drop_header_index();
            return;
        };
        let mut fields = Vec::with_capacity(2);
        for h in from_to.into_iter().flatten() {
            let (Some(name), Some(value), Some(line)) =
                (remap(h.name), remap(h.value), remap(h.line))
            else {
                self.drop_header_index();
                return;
            };
            fields.push(HeaderField {
                id: h.id,
                name,
                value,
                line,
            });
        }
        // The start line is the first range, at the same offsets: `start`
        // and `headers_start` stay as they are.
        self.call_id = call_id;
        self.cseq_method = cseq_method;
        self.top_via = top_via;
        self.from_tag = self.from_tag.and_then(remap);
        self.to_tag = self.to_tag.and_then(remap);
        self.branch = self.branch.and_then(remap);
        self.second_via = self.second_via.and_then(remap);
        self.headers = fields;
        self.headers_end = headers_end;
        self.body = Span {
            start: out.len() as u32,
            end: out.len() as u32,
        };
        self.buf = Bytes::from(out);
    }
}

#[cfg(test)]
mod tests {
    use crate::sip::{Framing, HeaderId, Limits, Message};

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;rport, SIP/2.0/TCP 10.0.0.9\r\n\
        Via: SIP/2.0/UDP 10.0.0.2\r\n\
        Max-Forwards: 70\r\n\
        From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
        To: <sip:bob@example.com>;tag=b2\r\n\
        Call-ID: c1@10.0.0.1\r\n\
        CSeq: 7 INVITE\r\n\
        Contact: <sip:alice@10.0.0.1:5070>\r\n\
        Subject: Performance Test\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 17\r\n\r\n\
        v=0\r\ns=-\r\nt=0 0\r\n";

    fn parse(text: &str) -> Message {
        Message::parse(
            bytes::Bytes::copy_from_slice(text.as_bytes()),
            Framing::Datagram,
            &Limits::default(),
        )
        .expect("valid")
    }

    #[test]
    fn held_form_keeps_what_matching_and_answering_read() {
        let full = parse(INVITE);
        let mut held = full.clone();
        held.compact_for_hold();
        assert!(held.as_bytes().len() < full.as_bytes().len() / 2 + 100);
        assert_eq!(held.request_uri_str(), full.request_uri_str());
        assert_eq!(held.method(), full.method());
        assert_eq!(held.call_id(), "c1@10.0.0.1");
        assert_eq!(held.cseq(), 7);
        assert_eq!(held.method_str(), "INVITE");
        assert_eq!(held.from_tag(), Some("a1"));
        assert_eq!(held.to_tag(), Some("b2"));
        assert_eq!(held.branch(), Some("z9hG4bK-1"));
        assert_eq!(held.top_via().host, full.top_via().host);
        assert_eq!(held.top_via().port, Some(5070));
        assert!(held.top_via().rport().is_some());
        assert_eq!(
            held.second_via().map(|v| v.host.to_string()),
            Some("10.0.0.9".to_string())
        );
        assert_eq!(held.header(HeaderId::From), full.header(HeaderId::From));
        assert_eq!(held.header(HeaderId::To), full.header(HeaderId::To));
        assert_eq!(held.header(HeaderId::Contact), None);
        assert!(held.body().is_empty());
        // What is left is itself a well-formed message.
        let again = parse(std::str::from_utf8(held.as_bytes()).unwrap());
        assert_eq!(again.call_id(), held.call_id());
    }

    #[test]
    fn second_via_on_a_line_of_its_own_is_dropped() {
        let text = INVITE.replace(", SIP/2.0/TCP 10.0.0.9", "");
        let mut held = parse(&text);
        held.compact_for_hold();
        assert!(held.second_via().is_none());
        assert_eq!(held.branch(), Some("z9hG4bK-1"));
    }
}
