//! The grammar pieces on arbitrary strings: Uri, NameAddr (single and list),
//! Via (single and list), host:port and parameter lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipr::sip::{find_param, param_lookup, split_hostport, NameAddr, Uri, Via};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    if let Ok(u) = Uri::parse(s) {
        common::touch_uri(&u);
        assert_eq!(u.raw, s);
        if u.is_sip() {
            // A URI that parses alone parses inside <> too, to the same parts.
            let wrapped = format!("\"x\" <{s}>;tag=1");
            let n = NameAddr::parse(&wrapped).expect("a valid SIP URI inside <>");
            assert_eq!(n.uri.host, u.host);
            assert_eq!(n.uri.user, u.user);
            assert_eq!(n.uri.port, u.port);
            assert_eq!(n.uri.params, u.params);
            assert_eq!(n.tag(), Some("1"));
        }
    }
    if let Ok(n) = NameAddr::parse(s) {
        common::touch_nameaddr(&n);
    }
    if let Ok(list) = NameAddr::parse_list(s) {
        assert!(!list.is_empty());
        list.iter().for_each(common::touch_nameaddr);
    }
    if let Ok(v) = Via::parse(s) {
        common::touch_via(&v);
    }
    if let Ok(all) = Via::parse_all(s) {
        assert!(!all.is_empty());
        all.iter().for_each(common::touch_via);
    }
    if let Some((host, _port)) = split_hostport(s) {
        assert!(!host.is_empty());
    }
    for name in ["tag", "branch", "rport", "lr", ""] {
        std::hint::black_box((find_param(s, name), param_lookup(s, name)));
    }
});
