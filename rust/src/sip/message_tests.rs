//! Tests of `Message::parse` and its accessors.

use super::message::*;
use super::*;
use bytes::Bytes;

mod accessors {
    use super::*;

    fn parse(text: &str) -> Result<Message, ParseError> {
        Message::parse(
            Bytes::from(text.replace('\n', "\r\n")),
            Framing::Datagram,
            &Limits::default(),
        )
    }

    fn request(method: &str, cseq: &str, extra: &str) -> String {
        format!(
            "{method} sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\n\
             From: <sip:alice@example.com>;tag=1\nTo: <sip:bob@example.com>\nCall-ID: c1\n\
             CSeq: {cseq}\n{extra}Content-Length: 0\n\n"
        )
    }

    #[test]
    fn the_second_via_and_the_count_agree_with_every_via() {
        let one = parse(&request("INVITE", "1 INVITE", "")).unwrap();
        assert_eq!((one.via_count(), one.second_via()), (1, None));
        for extra in [
            "Via: SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2\n",
            "Via: SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2 , SIP/2.0/UDP c;rport=1\n",
            "Via: SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2\nVia: SIP/2.0/UDP c;rport=1\n",
        ] {
            // The second parse answers from the memo of checked values.
            for _ in 0..2 {
                let m = parse(&request("INVITE", "1 INVITE", extra)).unwrap();
                let all = m.vias();
                assert_eq!(m.via_count(), all.len(), "{extra}");
                assert_eq!(m.second_via(), Some(all[1]), "{extra}");
                assert_eq!(m.top_via(), all[0]);
                assert_eq!(m.branch(), Some("z9hG4bK1"));
                assert_eq!(m.from_tag(), Some("1"));
            }
        }
        // Top Via line holding two via-parms: the second is on the same line.
        let text = request("INVITE", "1 INVITE", "").replace(
            ";branch=z9hG4bK1",
            ";branch=z9hG4bK1, SIP/2.0/UDP d:9;branch=z9hG4bK9",
        );
        let m = parse(&text).unwrap();
        assert_eq!(m.via_count(), 2);
        assert_eq!(m.second_via().unwrap().host, "d");
        assert_eq!(m.branch(), Some("z9hG4bK1"));
    }

    /// The header memo is blind to a Via's branch value: a message whose
    /// Vias differ only there reads its own branch and the same fields.
    #[test]
    fn vias_differing_only_in_their_branch_read_as_their_own() {
        let text = |a: &str, b: &str| {
            request("INVITE", "1 INVITE", "")
                .replace(
                    ";branch=z9hG4bK1",
                    &format!(";branch=z9hG4bK-{a};rport, SIP/2.0/TCP e:7;branch=z9hG4bK-{b}"),
                )
                .replace(
                    "Content-Length",
                    &format!("Via: SIP/2.0/UDP f;branch={b}\nContent-Length"),
                )
        };
        for (a, b) in [("blind-aa", "blind-bb"), ("blind-cc", "blind-dd")] {
            let m = parse(&text(a, b)).unwrap();
            let all = m.vias();
            assert_eq!(m.branch(), Some(format!("z9hG4bK-{a}").as_str()));
            assert_eq!((m.top_via(), m.second_via()), (all[0], Some(all[1])));
            assert_eq!(all[1].branch(), Some(format!("z9hG4bK-{b}").as_str()));
            assert_eq!(m.via_count(), 3);
        }
    }

    /// Likewise for tags: each message reads its own.
    #[test]
    fn tags_differing_only_in_value_read_as_their_own() {
        for (from, to) in [("tag-aa.1", "tag-bb.2"), ("tag-cc.3", "tag-dd.4")] {
            let text = request("BYE", "2 BYE", "")
                .replace("tag=1", &format!("tag={from}"))
                .replace(
                    "To: <sip:bob@example.com>",
                    &format!("To: <sip:bob@example.com>;tag={to}"),
                );
            let m = parse(&text).unwrap();
            assert_eq!((m.from_tag(), m.to_tag()), (Some(from), Some(to)));
        }
    }

    #[test]
    fn cseq_method_mismatch_status() {
        // RFC 4475 §3.1.2.17: a known method gets 400; §3.1.2.18: an unknown
        // one 501, which stays right once the method is implemented.
        assert_eq!(
            parse(&request("OPTIONS", "1 INVITE", ""))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse(&request("NEWMETHOD", "1 INVITE", ""))
                .unwrap_err()
                .status,
            501
        );
        assert!(parse(&request("NEWMETHOD", "1 NEWMETHOD", "")).is_ok());
    }

    #[test]
    fn cseq_numbers_up_to_32_bits() {
        // RFC 4475 §3.1.2.4: only values above 2**32-1 are invalid.
        assert_eq!(
            parse(&request("INVITE", "4294967295 INVITE", ""))
                .unwrap()
                .cseq(),
            u32::MAX
        );
        assert!(parse(&request("INVITE", "4294967296 INVITE", "")).is_err());
        assert!(parse(&request("INVITE", "36893488147419103232 INVITE", "")).is_err());
    }

    #[test]
    fn every_via_is_checked() {
        let lower = "Via: SIP/2.0/UDP b.example.com;branch=z9hG4bK2, SIP/2.0/UDP c.example.com\n";
        assert_eq!(
            parse(&request("INVITE", "1 INVITE", lower))
                .unwrap()
                .vias()
                .len(),
            3
        );
        let broken = "Via: SIP/2.0/UDP b.example.com;;,;,,\n";
        assert_eq!(
            parse(&request("INVITE", "1 INVITE", broken))
                .unwrap_err()
                .reason,
            "malformed Via header"
        );
    }

    #[test]
    fn datagram_without_the_empty_line() {
        // RFC 4475 §3.1.2.15's archive file: the datagram ends after `l: 0`.
        let text = request("OPTIONS", "1 OPTIONS", "");
        let m = parse(text.strip_suffix('\n').unwrap()).unwrap();
        assert!(m.body().is_empty());
        assert_eq!(m.call_id(), "c1");
    }

    #[test]
    fn transaction_branch_needs_more_than_the_cookie() {
        let with = |branch: &str| {
            let text = request("OPTIONS", "1 OPTIONS", "").replace("branch=z9hG4bK1", branch);
            parse(&text).unwrap().rfc3261_branch().map(str::to_string)
        };
        assert_eq!(with("branch=z9hG4bKabc").as_deref(), Some("z9hG4bKabc"));
        assert_eq!(with("branch=z9hG4bK"), None);
        assert_eq!(with("branch=390skdjuw"), None);
        assert_eq!(with("rport"), None);
    }
}

mod fuzz_regressions {
    use super::*;

    /// cargo-fuzz `parse_message` crash: a valueless `;tag` / `;branch` made
    /// the offset of the tag (now `memo::within`) subtract unrelated pointers (overflow panic in debug, an
    /// out-of-bounds span and a slice panic in `str_at` in release).
    #[test]
    fn valueless_tag_and_branch() {
        let text = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch\r\n\
                    From: <sip:a@b>;tag\r\nTo: <sip:b@c>;tag\r\nCall-ID: x\r\n\
                    CSeq: 1 INVITE\r\n\r\n";
        let m = Message::parse(
            Bytes::from_static(text.as_bytes()),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(m.from_tag(), Some(""));
        assert_eq!(m.to_tag(), Some(""));
        assert_eq!(m.branch(), Some(""));
    }
}

mod top_via_fields {
    use super::*;

    /// The top Via read at parse time is the one `Via::parse` reads now.
    #[test]
    fn top_via_is_the_parsed_via() {
        for via in [
            "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
            "SIP/2.0/TCP 10.0.0.1:5070;rport;branch=z9hG4bK2;received=10.1.1.1",
            "SIP / 2.0 / TLS [2001:db8::1]:5061 ;branch=z9hG4bK3",
            "SIP/2.0/UDP h",
            "SIP/2.0/UDP h:1;branch=z9hG4bK4 , SIP/2.0/UDP g;branch=z9hG4bK5",
        ] {
            let text = format!(
                "OPTIONS sip:b@c SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\n\
                 To: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
            );
            let first = via.split(" , ").next().unwrap();
            // The second parse takes the Via's fields from the header memo.
            for _ in 0..2 {
                let m = Message::parse(
                    Bytes::from(text.clone()),
                    Framing::Datagram,
                    &Limits::default(),
                )
                .unwrap();
                assert_eq!(m.top_via(), Via::parse(first).unwrap(), "{via}");
            }
        }
    }
}

/// The header memo is blind to branch and tag values: a message that
/// differs from a remembered one only there must parse exactly as it does
/// with nothing remembered (a new thread's memo is empty).
mod blind_memo {
    use super::*;

    const VALUES: &[&str] = &[
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-aa.1;rport, SIP/2.0/TCP h;branch=z9hG4bKb",
        "Via: SIP/2.0/UDP h;x=\"q;branch=ab\";branch=z9hG4bK7",
        "Via: SIP/2.0/UDP [2001:db8::1]:5070;received=192.0.2.9;branch=z9hG4bK~*'+_!",
        "From: \"A;tag=x\" <sip:a;tag=uu@example.com;tag=pp>;tag=f-1",
        "To: <sip:b@example.com>;tag=t.2;x=y",
        "To: sip:b@example.com;tag=t3",
    ];

    fn message(header: &str) -> String {
        let mut text = String::from("OPTIONS sip:b@example.com SIP/2.0\r\n");
        for (name, default) in [
            ("Via:", "Via: SIP/2.0/UDP a;branch=z9hG4bK1"),
            ("From:", "From: <sip:a@example.com>;tag=1"),
            ("To:", "To: <sip:b@example.com>"),
        ] {
            text.push_str(if header.starts_with(name) {
                header
            } else {
                default
            });
            text.push_str("\r\n");
        }
        text.push_str("Call-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n");
        text
    }

    /// What a parse gave, in a form two threads can compare.
    fn outcome(text: &str) -> String {
        match Message::parse(
            Bytes::from(text.to_string()),
            Framing::Datagram,
            &Limits::default(),
        ) {
            Ok(m) => format!(
                "{:?} {:?} {:?} {:?} {:?} {}",
                m.top_via(),
                m.second_via(),
                m.branch(),
                m.from_tag(),
                m.to_tag(),
                m.via_count()
            ),
            Err(e) => format!("error {e:?}"),
        }
    }

    #[test]
    fn a_message_differing_only_in_branches_and_tags_parses_as_if_fresh() {
        const SWAPS: &[u8] = b"az09-.!*_+'~%\";,=<>@ \\";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for header in VALUES {
            let original = message(header);
            assert!(!outcome(&original).starts_with("error"), "{original}");
            for _ in 0..200 {
                // Swap a few characters after a `=`: inside branch and tag
                // values mostly, now and then for one that breaks the value.
                let mut bytes = original.clone().into_bytes();
                let eqs: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b'=').collect();
                for _ in 0..1 + next() % 3 {
                    let at = eqs[next() as usize % eqs.len()] + 1 + next() as usize % 4;
                    if at < bytes.len() - 4 {
                        bytes[at] = SWAPS[next() as usize % SWAPS.len()];
                    }
                }
                let Ok(mutated) = String::from_utf8(bytes) else {
                    continue;
                };
                outcome(&original); // remembered on this thread
                let remembered = outcome(&mutated);
                let fresh = std::thread::spawn({
                    let mutated = mutated.clone();
                    move || outcome(&mutated)
                })
                .join()
                .unwrap();
                assert_eq!(remembered, fresh, "{mutated}");
            }
        }
    }
}
