//! Where topology hiding meets the proxy core: which relays are hidden, the
//! bytes of a hidden request and of the response sent back upstream (with
//! the dialog record kept up to date), and the routing of in-dialog
//! requests addressed to our Contacts.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use bytes::Bytes;

use super::rewrite::{hidden_request, hidden_response, RequestEdits};
use super::{parse_token, token, unix_now, Hidden, HiddenDialog, Reach, Side};
use crate::core::{Core, Event};
use crate::proxy::context::ProxyCtx;
use crate::proxy::route::{creates_dialog, loop_hash};
use crate::proxy::stateful::{relay, RelayOptions, Target};
use crate::proxy::{fmt_hostport, resolve, Hop};
use crate::sip::write::HeaderEdit;
use crate::sip::{HeaderId, Message, Method, NameAddr, Uri};
use crate::transaction::{server, Layer, TxnId};
use crate::transport::{Destination, Source, Transport};

/// Our Contact for one side, at `addr` over `transport`.
fn our_contact(user: Option<&str>, addr: SocketAddr, transport: Transport) -> String {
    let user = user.map_or_else(String::new, |u| format!("{u}@"));
    let t = match transport {
        Transport::Udp => String::new(),
        t => format!(";transport={}", t.as_str().to_ascii_lowercase()),
    };
    format!("<sip:{user}{}{t}>", fmt_hostport(addr))
}

/// The address the requester of `source` reached us at.
fn facing(core: &Core, source: &Source) -> SocketAddr {
    if source.local.ip().is_unspecified() {
        core.advertised(source.transport, source.addr)
    } else {
        source.local
    }
}

/// The first Contact URI of `msg`, without `<>`.
fn contact_uri(msg: &Message) -> Option<String> {
    let value = msg.header(HeaderId::Contact)?;
    NameAddr::parse_list(value)
        .ok()?
        .first()
        .map(|na| na.uri.raw.to_string())
}

/// Every element of the headers `id` of `msg`, in order, as written.
fn elements(msg: &Message, id: HeaderId) -> Vec<String> {
    let mut out = Vec::new();
    for h in msg.headers().iter().filter(|h| h.id == id) {
        let v = msg.header_value(h);
        if let Some(parts) = crate::sip::scan::split_commas(v.as_bytes(), 0, v.len()) {
            out.extend(parts.into_iter().map(|(a, b)| v[a..b].trim().to_string()));
        }
    }
    out
}

/// A Call-ID for side B of a request outside dialogs: the same for the same
/// request (retransmissions), unrelated to the caller's.
fn plain_call_id(core: &Core, msg: &Message) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    core.branch_key().hash(&mut h);
    msg.call_id().hash(&mut h);
    let x = h.finish();
    format!(
        "{:016x}{:016x}",
        crate::core::mix64(x),
        crate::core::mix64(x ^ 0x7470_6873)
    )
}

/// How a relay the application starts for `msg` is hidden (None: not at
/// all). A dialog-creating request gets a dialog record at once.
pub fn hidden_for_relay(core: &Core, msg: &Message) -> Option<Hidden> {
    let topology = &core.security.topology;
    if !topology.enabled() || msg.method() == Method::Register {
        return None;
    }
    if msg.to_tag().is_some() {
        // In a dialog that is not hidden (ours are routed by their token).
        return None;
    }
    if !creates_dialog(msg) {
        return Some(Hidden::Plain);
    }
    let id = core.new_tag();
    let now = unix_now();
    topology.put(HiddenDialog {
        id: id.clone(),
        a_call_id: msg.call_id().to_string(),
        b_call_id: format!("{}{}", core.new_tag(), core.new_tag()),
        a: Reach {
            tag: msg.from_tag().unwrap_or_default().to_string(),
            contact: contact_uri(msg).unwrap_or_default(),
            routes: elements(msg, HeaderId::RecordRoute),
        },
        b: Vec::new(),
        confirmed: false,
        created: now,
        expires: now + topology.config().early_ttl,
    });
    Some(Hidden::Dialog {
        id,
        towards: Side::B,
    })
}

/// Which side sent an in-dialog request towards `towards`, and its tag.
fn peer_tag(msg: &Message, towards: Side) -> Option<&str> {
    // Towards B the request is the caller's: its To tag is B's. Towards A it
    // is the callee's: its From tag is B's.
    match towards {
        Side::B => msg.to_tag(),
        Side::A => msg.from_tag(),
    }
}

/// What the proxy core chose for a forwarded request.
pub struct Outgoing<'a> {
    /// Our Via value.
    pub via: &'a str,
    /// Leading Route values naming us.
    pub pop_routes: usize,
    pub request_uri: Option<&'a str>,
    pub header_edits: &'a [HeaderEdit],
}

/// The bytes of a hidden request for `hop`.
pub fn request_bytes(
    core: &Core,
    msg: &Message,
    hidden: &Hidden,
    hop: &Hop,
    out: &Outgoing<'_>,
) -> Vec<u8> {
    let Outgoing {
        via,
        pop_routes,
        request_uri,
        header_edits,
    } = *out;
    let local = core.advertised(hop.transport, hop.addr);
    let dialog = match hidden {
        Hidden::Dialog { id, towards } => core.security.topology.get(id).map(|d| (d, *towards)),
        Hidden::Plain => None,
    };
    let Some((d, towards)) = dialog else {
        let contact = our_contact(None, local, hop.transport);
        return hidden_request(
            msg,
            &RequestEdits {
                request_uri,
                via,
                pop_routes,
                routes: None,
                contact: Some(&contact),
                call_id: &plain_call_id(core, msg),
                header_edits,
            },
        );
    };
    let contact = our_contact(Some(&token(towards.other(), &d.id)), local, hop.transport);
    let in_dialog = msg.to_tag().is_some();
    let routes = match towards {
        Side::A => Some(d.a.routes.clone()),
        Side::B if in_dialog => d.b_side(peer_tag(msg, towards)).map(|r| r.routes.clone()),
        Side::B => None,
    };
    let call_id = match towards {
        Side::A => &d.a_call_id,
        Side::B => &d.b_call_id,
    };
    hidden_request(
        msg,
        &RequestEdits {
            request_uri,
            via,
            pop_routes,
            routes: if in_dialog { routes.as_deref() } else { None },
            contact: Some(&contact),
            call_id,
            header_edits,
        },
    )
}

/// A response received for a hidden request, as it goes upstream; the
/// dialog record learns the responder's Contact and route set.
pub fn upstream_response(
    core: &Core,
    layer: &Layer,
    server_id: TxnId,
    hidden: &Hidden,
    resp: &Message,
) -> Bytes {
    let Some(t) = layer.servers.get(&server_id) else {
        return Bytes::from(crate::sip::write::strip_top_via(resp));
    };
    let original = &t.request;
    let status = resp.status().unwrap_or(0);
    let here = facing(core, &t.source);
    let record_route = original.to_tag().is_none() && (101..300).contains(&status);
    let contact = match hidden {
        Hidden::Plain => our_contact(None, here, t.source.transport),
        Hidden::Dialog { id, towards } => {
            learn(core, original, resp, id, *towards);
            our_contact(Some(&token(*towards, id)), here, t.source.transport)
        }
    };
    Bytes::from(hidden_response(
        resp,
        original,
        Some(&contact),
        record_route,
    ))
}

/// Updates dialog `id` from a response of side `towards` to `original`.
fn learn(core: &Core, original: &Message, resp: &Message, id: &str, towards: Side) {
    let status = resp.status().unwrap_or(0);
    let initial = original.to_tag().is_none();
    let now = unix_now();
    core.security.topology.update(id, |d, config| {
        if initial {
            let tag = resp.to_tag().unwrap_or_default();
            if (101..300).contains(&status) && !tag.is_empty() {
                let mut routes = elements(resp, HeaderId::RecordRoute);
                routes.reverse();
                let reach = Reach {
                    tag: tag.to_string(),
                    contact: contact_uri(resp).unwrap_or_default(),
                    routes,
                };
                match d.b.iter_mut().find(|r| r.tag == tag) {
                    Some(r) if reach.contact.is_empty() => r.routes = reach.routes,
                    Some(r) => *r = reach,
                    None => d.b.push(reach),
                }
                if status >= 200 {
                    d.confirmed = true;
                    d.expires = now + config.dialog_ttl;
                }
                return true;
            }
            if status >= 300 && !d.confirmed {
                d.expires = now + config.linger;
                return true;
            }
            return false;
        }
        if !(200..300).contains(&status) {
            if original.method() == Method::Bye && status >= 200 {
                d.expires = now + config.linger;
                return true;
            }
            return false;
        }
        if original.method() == Method::Bye {
            d.expires = now + config.linger;
            return true;
        }
        d.expires = now + config.dialog_ttl;
        if let Some(contact) = contact_uri(resp) {
            // A target refresh (re-INVITE, UPDATE): the responder's new Contact.
            let reach = match towards {
                Side::A => Some(&mut d.a),
                Side::B => {
                    let tag = peer_tag(original, towards).unwrap_or_default().to_string();
                    d.b.iter_mut().find(|r| r.tag == tag)
                }
            };
            if let Some(r) = reach {
                r.contact = contact;
            }
        }
        true
    });
}

/// The sender of a target-refreshing in-dialog request gives its new
/// Contact in the request itself.
fn learn_sender_contact(core: &Core, msg: &Message, id: &str, towards: Side) {
    let Some(contact) = contact_uri(msg) else {
        return;
    };
    if !matches!(
        msg.method(),
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify
    ) {
        return;
    }
    core.security.topology.update(id, |d, _| {
        let sender = match towards.other() {
            Side::A => Some(&mut d.a),
            Side::B => {
                let tag = peer_tag(msg, towards).unwrap_or_default().to_string();
                d.b.iter_mut().find(|r| r.tag == tag)
            }
        };
        match sender {
            Some(r) if r.contact != contact => {
                r.contact = contact;
                true
            }
            _ => false,
        }
    });
}

/// An in-dialog request addressed to one of our Contacts (`sr-a-ID`,
/// `sr-b-ID`): routed to the other side here, or answered 481 when the
/// dialog is unknown. False: not ours, the caller goes on.
pub fn route_in_dialog(
    core: &Core,
    layer: &mut Layer,
    msg: &Message,
    source: Source,
    events: &mut Vec<Event>,
) -> bool {
    let topology = &core.security.topology;
    if !topology.enabled() || msg.to_tag().is_none() {
        return false;
    }
    let Some(uri) = msg.request_uri() else {
        return false;
    };
    let Some((towards, id)) = uri.user.and_then(parse_token) else {
        return false;
    };
    if !core.is_local(
        uri.host,
        uri.port,
        uri.param("transport").and_then(Transport::parse),
    ) {
        return false;
    }
    let target = topology.get(id).and_then(|d| {
        let reach = match towards {
            Side::A => Some(&d.a),
            Side::B => d.b_side(peer_tag(msg, towards)),
        };
        reach.cloned()
    });
    let Some(reach) = target.filter(|r| !r.contact.is_empty()) else {
        topology
            .unknown
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if msg.method() != Method::Ack {
            core.reply_to(msg, source, 481, None, &[]);
        }
        return true;
    };
    topology
        .routed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    learn_sender_contact(core, msg, id, towards);
    let hop_uri = reach
        .routes
        .first()
        .map_or(reach.contact.as_str(), |r| {
            r.trim_start_matches('<').split('>').next().unwrap_or(r)
        })
        .to_string();
    let hidden = Hidden::Dialog {
        id: id.to_string(),
        towards,
    };
    if msg.method() == Method::Ack {
        forward_ack(core, msg, &hidden, &hop_uri, &reach.contact);
        return true;
    }
    let txn = server::create(layer, msg.clone(), source);
    let ctx_id = layer.next_id();
    let lh = loop_hash(core, msg);
    let mut ctx = ProxyCtx::new(ctx_id, txn, lh, false);
    ctx.hidden = Some(hidden);
    layer.ctxs.insert(ctx_id, ctx);
    if let Some(t) = layer.servers.get_mut(&txn) {
        t.ctx = Some(ctx_id);
    }
    let opts = RelayOptions {
        targets: vec![Target {
            hop: Some(hop_uri),
            request_uri: Some(reach.contact.clone()),
            routes: Vec::new(),
        }],
        request_uri: None,
        header_edits: &[],
        record_route: false,
        timeout: None,
    };
    let relay_id = layer.next_id();
    // Errors (an unresolvable hop) are answered inside `relay`.
    let _ = relay(core, layer, txn, &opts, relay_id, events);
    events.retain(|e| !matches!(e, Event::RelayDone { relay, .. } if *relay == relay_id));
    true
}

/// The ACK for a 2xx: no transaction, relayed at once.
fn forward_ack(core: &Core, msg: &Message, hidden: &Hidden, hop_uri: &str, ruri: &str) {
    let Some(hop) = Uri::parse(hop_uri)
        .ok()
        .and_then(|u| resolve(core, &u).ok())
    else {
        return;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    core.branch_key().hash(&mut h);
    msg.branch().hash(&mut h);
    msg.call_id().hash(&mut h);
    msg.cseq().hash(&mut h);
    hop.addr.hash(&mut h);
    let local = core.advertised(hop.transport, hop.addr);
    let via = format!(
        "SIP/2.0/{} {};branch=z9hG4bKsrt{:016x}{}",
        hop.transport,
        fmt_hostport(local),
        h.finish(),
        crate::proxy::via_alias(hop.transport)
    );
    let out = Outgoing {
        via: &via,
        pop_routes: 0,
        request_uri: Some(ruri),
        header_edits: &[],
    };
    let bytes = request_bytes(core, msg, hidden, &hop, &out);
    core.stats
        .requests_forwarded
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    core.send(
        Destination {
            transport: hop.transport,
            addr: hop.addr,
            conn: None,
        },
        Bytes::from(bytes),
    );
}
