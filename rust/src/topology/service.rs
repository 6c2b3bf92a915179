//! Topology hiding as a `service::Service` (registered when the app turns
//! it on): which requests are hidden, the bytes of a hidden branch, the
//! response sent back upstream (with the dialog record kept up to date),
//! and the routing of in-dialog requests addressed to our Contacts.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::rewrite::{hidden_request, hidden_response, RequestEdits};
use super::{parse_token, token, unix_now, Hidden, HiddenDialog, Reach, Side, Topology};
use crate::proxy::route::creates_dialog;
use crate::service::{
    BranchPlan, BranchWriter, Ctx, InDialog, Node, Outgoing, ResponseAt, Service, Verdict,
};
use crate::sip::write::hostport as fmt_hostport;
use crate::sip::{HeaderId, Message, Method, NameAddr};
use crate::transport::{Source, Transport};

/// The owner name of topology hiding.
pub const NAME: &str = "topology";

pub struct TopologyService(pub Arc<Topology>);

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
fn facing(node: &Node, source: &Source) -> SocketAddr {
    if source.local.ip().is_unspecified() {
        node.wire.advertised(source.transport, source.addr)
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

fn keyed_hash(node: &Node, parts: &[&str]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.branch_key().hash(&mut h);
    parts.hash(&mut h);
    h.finish()
}

/// A Call-ID for the callee's side of a request outside dialogs: the same
/// for the same request (retransmissions), unrelated to the caller's.
fn plain_call_id(node: &Node, msg: &Message) -> String {
    let x = keyed_hash(node, &[msg.call_id()]);
    format!(
        "{:016x}{:016x}",
        crate::service::mix64(x),
        crate::service::mix64(x ^ 0x7470_6873)
    )
}

/// The dialog a dialog-creating request starts: the same id for every
/// branch and every relay round of that request, unguessable.
fn dialog_id(node: &Node, msg: &Message) -> String {
    let from_tag = msg.from_tag().unwrap_or_default();
    format!("{:016x}", keyed_hash(node, &[msg.call_id(), from_tag]))
}

/// Which side sent an in-dialog request going `towards`, by its tag.
fn peer_tag(msg: &Message, towards: Side) -> Option<&str> {
    // Towards B the request is the caller's: its To tag is B's. Towards A it
    // is the callee's: its From tag is B's.
    match towards {
        Side::B => msg.to_tag(),
        Side::A => msg.from_tag(),
    }
}

/// How `msg` is hidden: never a REGISTER; a dialog-creating request starts
/// a hidden dialog; one addressed to our token belongs to that dialog; any
/// other request outside dialogs is hidden without a record; other
/// in-dialog requests (dialogs that are not hidden) are left alone.
fn hidden_kind(node: &Node, msg: &Message) -> Option<Hidden> {
    if msg.method() == Method::Register {
        return None;
    }
    if msg.to_tag().is_none() {
        return Some(if creates_dialog(msg) {
            Hidden::Dialog {
                id: dialog_id(node, msg),
                towards: Side::B,
            }
        } else {
            Hidden::Plain
        });
    }
    let uri = msg.request_uri()?;
    let (towards, id) = uri.user.and_then(parse_token)?;
    let transport = uri.param("transport").and_then(Transport::parse);
    node.wire
        .is_local(uri.host, uri.port, transport)
        .then(|| Hidden::Dialog {
            id: id.to_string(),
            towards,
        })
}

/// Writes the hidden bytes of one branch.
struct HiddenWriter {
    topology: Arc<Topology>,
    hidden: Hidden,
}

impl BranchWriter for HiddenWriter {
    fn write(&self, node: &Node, msg: &Message, out: &Outgoing<'_>) -> Vec<u8> {
        let local = node.wire.advertised(out.hop.transport, out.hop.addr);
        let dialog = match &self.hidden {
            Hidden::Dialog { id, towards } => self.topology.get(id).map(|d| (d, *towards)),
            Hidden::Plain => None,
        };
        let Some((d, towards)) = dialog else {
            let contact = our_contact(None, local, out.hop.transport);
            return hidden_request(
                msg,
                &RequestEdits {
                    request_uri: out.request_uri,
                    via: out.via,
                    pop_routes: out.pop_routes,
                    routes: None,
                    contact: Some(&contact),
                    call_id: &plain_call_id(node, msg),
                    header_edits: out.edits,
                },
            );
        };
        // Our Contact names the sender's side: requests to it go back there.
        let contact = our_contact(
            Some(&token(towards.other(), &d.id)),
            local,
            out.hop.transport,
        );
        let in_dialog = msg.to_tag().is_some();
        let routes = match towards {
            Side::A => Some(d.a.routes.clone()),
            Side::B => d.b_side(peer_tag(msg, towards)).map(|r| r.routes.clone()),
        };
        let call_id = match towards {
            Side::A => &d.a_call_id,
            Side::B => &d.b_call_id,
        };
        hidden_request(
            msg,
            &RequestEdits {
                request_uri: out.request_uri,
                via: out.via,
                pop_routes: out.pop_routes,
                routes: if in_dialog { routes.as_deref() } else { None },
                contact: Some(&contact),
                call_id,
                header_edits: out.edits,
            },
        )
    }
}

impl TopologyService {
    /// A new hidden dialog for a dialog-creating request (once: later
    /// branches and rounds of the same request find it).
    fn open_dialog(&self, node: &Node, msg: &Message, id: &str) {
        let topology = &self.0;
        if topology.get(id).is_some() {
            return;
        }
        let now = unix_now();
        topology.put(HiddenDialog {
            id: id.to_string(),
            a_call_id: msg.call_id().to_string(),
            b_call_id: format!("{}{}", node.new_tag(), node.new_tag()),
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
    }

    /// Dialog `id` learns from a response of side `towards` to `original`:
    /// the callee's Contact, route set and tag; target refreshes; its end.
    fn learn(&self, original: &Message, resp: &Message, id: &str, towards: Side) {
        let status = resp.status().unwrap_or(0);
        let initial = original.to_tag().is_none();
        let now = unix_now();
        self.0.update(id, |d, config| {
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
            if original.method() == Method::Bye && status >= 200 {
                d.expires = now + config.linger;
                return true;
            }
            if !(200..300).contains(&status) {
                return false;
            }
            d.expires = now + config.dialog_ttl;
            if let Some(contact) = contact_uri(resp) {
                // A target refresh (re-INVITE, UPDATE): the responder's new Contact.
                let tag = peer_tag(original, towards).unwrap_or_default();
                let reach = match towards {
                    Side::A => Some(&mut d.a),
                    Side::B => d.b.iter_mut().find(|r| r.tag == tag),
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
    fn learn_sender_contact(&self, msg: &Message, id: &str, towards: Side) {
        let Some(contact) = contact_uri(msg) else {
            return;
        };
        let refreshes = matches!(
            msg.method(),
            Method::Invite | Method::Update | Method::Subscribe | Method::Notify
        );
        if !refreshes {
            return;
        }
        self.0.update(id, |d, _| {
            let tag = peer_tag(msg, towards).unwrap_or_default();
            let sender = match towards.other() {
                Side::A => Some(&mut d.a),
                Side::B => d.b.iter_mut().find(|r| r.tag == tag),
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
}

impl Service for TopologyService {
    fn name(&self) -> &'static str {
        NAME
    }

    /// A retransmitted 2xx is rewritten like the first (`on_upstream`), from
    /// the request of its completed server transaction.
    fn reads_completed_requests(&self) -> bool {
        true
    }

    /// A request addressed to one of our Contacts (`sr-a-ID`, `sr-b-ID`)
    /// goes to the other side's Contact, by its route set; 481 when the
    /// dialog is unknown.
    fn route_in_dialog(&self, node: &Node, msg: &Message) -> InDialog {
        if msg.to_tag().is_none() {
            return InDialog::Pass;
        }
        let Some(Hidden::Dialog { id, towards }) = hidden_kind(node, msg) else {
            return InDialog::Pass;
        };
        let topology = &self.0;
        let reach = topology.get(&id).and_then(|d| {
            let reach = match towards {
                Side::A => Some(&d.a),
                Side::B => d.b_side(peer_tag(msg, towards)),
            };
            reach.cloned()
        });
        let Some(reach) = reach.filter(|r| !r.contact.is_empty()) else {
            topology.unknown.fetch_add(1, Ordering::Relaxed);
            return InDialog::Answer(481);
        };
        topology.routed.fetch_add(1, Ordering::Relaxed);
        self.learn_sender_contact(msg, &id, towards);
        let hop = match reach.routes.first() {
            Some(r) => r
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or(r)
                .to_string(),
            None => reach.contact.clone(),
        };
        InDialog::Route {
            hop,
            request_uri: reach.contact,
        }
    }

    /// Every hidden branch of a stateful relay (and the ACK of a hidden
    /// dialog) is written by `HiddenWriter`; a dialog-creating request opens
    /// its dialog record first.
    fn on_relay(&self, node: &Node, plan: &mut BranchPlan<'_>) {
        let Some(hidden) = hidden_kind(node, plan.request) else {
            return;
        };
        let our_ack = plan.request.method() == Method::Ack && plan.request.to_tag().is_some();
        if plan.stateless && !our_ack {
            // `req.forward()`: its responses find their way back by the Vias
            // it carries, so those cannot be hidden.
            return;
        }
        if let Hidden::Dialog { id, .. } = &hidden {
            if plan.request.to_tag().is_none() {
                self.open_dialog(node, plan.request, id);
            }
        }
        plan.writer = Some(Arc::new(HiddenWriter {
            topology: self.0.clone(),
            hidden,
        }));
    }

    fn on_response(&self, cx: &mut Ctx<'_>, at: ResponseAt, msg: &Message) -> Verdict {
        let Some(t) = cx.txns.servers.get(&at.server) else {
            return Verdict::Continue;
        };
        if let Some(Hidden::Dialog { id, towards }) = hidden_kind(cx.node, &t.request) {
            self.learn(&t.request, msg, &id, towards);
        }
        Verdict::Continue
    }

    /// The response with the requester's own Vias, Call-ID and (answering a
    /// dialog-creating request) Record-Route, and our Contact.
    fn on_upstream(&self, cx: &Ctx<'_>, at: ResponseAt, msg: &Message) -> Option<Vec<u8>> {
        let t = cx.txns.servers.get(&at.server)?;
        let original = &t.request;
        let hidden = hidden_kind(cx.node, original)?;
        let status = msg.status().unwrap_or(0);
        let here = facing(cx.node, &t.source);
        let record_route = original.to_tag().is_none() && (101..300).contains(&status);
        let contact = match &hidden {
            Hidden::Plain => our_contact(None, here, t.source.transport),
            Hidden::Dialog { id, towards } => {
                our_contact(Some(&token(*towards, id)), here, t.source.transport)
            }
        };
        Some(hidden_response(msg, original, Some(&contact), record_route))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};
    use crate::transport::Hop;
    use bytes::Bytes;

    fn node() -> Node {
        crate::service::testkit::node()
    }

    fn parse(s: &str) -> Message {
        Message::parse(
            Bytes::from(s.to_string()),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap()
    }

    fn request(method: &str, ruri: &str, from_tag: &str, to_tag: Option<&str>) -> Message {
        let to_tag = to_tag.map_or_else(String::new, |t| format!(";tag={t}"));
        parse(&format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:5062;branch=z9hG4bK{from_tag}\r\n\
             From: <sip:alice@example.com>;tag={from_tag}\r\nTo: <sip:bob@example.com>{to_tag}\r\n\
             Call-ID: call-1@192.0.2.2\r\nCSeq: 1 {method}\r\n\
             Contact: <sip:alice@192.0.2.2:5062>\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn a_hidden_dialog_from_invite_to_bye() {
        let node = node();
        let service = TopologyService(Arc::new(Topology::default()));
        let us = node.wire.local_addrs()[0].1;
        let invite = request("INVITE", "sip:bob@example.com", "at", None);
        assert_eq!(service.route_in_dialog(&node, &invite), InDialog::Pass);
        let hop = Hop {
            transport: Transport::Udp,
            addr: "198.51.100.9:5060".parse().unwrap(),
        };
        let mut edits = Vec::new();
        let mut plan = BranchPlan {
            request: &invite,
            hop,
            edits: &mut edits,
            stateless: false,
            writer: None,
        };
        service.on_relay(&node, &mut plan);
        let writer = plan.writer.take().expect("an INVITE is hidden");
        let out = Outgoing {
            hop,
            via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsr1",
            pop_routes: 0,
            request_uri: None,
            edits: &[],
        };
        let sent = parse(&String::from_utf8(writer.write(&node, &invite, &out)).unwrap());
        assert_eq!(sent.vias().len(), 1);
        assert_ne!(sent.call_id(), invite.call_id());
        let contact = sent.header(HeaderId::Contact).unwrap();
        assert!(contact.contains("sip:sr-a-") && !contact.contains("192.0.2.2"));
        // The callee's BYE to that Contact goes to the caller's Contact.
        let token_uri = contact.trim_matches(|c| c == '<' || c == '>');
        let bye = parse(&format!(
            "BYE {token_uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9;branch=z9hG4bKb\r\n\
             From: <sip:bob@example.com>;tag=bt\r\nTo: <sip:alice@example.com>;tag=at\r\n\
             Call-ID: {}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
            sent.call_id()
        ));
        assert!(token_uri.contains(&us.port().to_string()));
        assert_eq!(
            service.route_in_dialog(&node, &bye),
            InDialog::Route {
                hop: "sip:alice@192.0.2.2:5062".into(),
                request_uri: "sip:alice@192.0.2.2:5062".into(),
            }
        );
        let stale = parse(
            &String::from_utf8(bye.as_bytes().to_vec())
                .unwrap()
                .replace("sr-a-", "sr-a-0"),
        );
        assert_eq!(
            service.route_in_dialog(&node, &stale),
            InDialog::Answer(481)
        );
        // `req.forward()` is never hidden: its responses need its Vias.
        let mut edits = Vec::new();
        let mut plan = BranchPlan {
            request: &invite,
            hop,
            edits: &mut edits,
            stateless: true,
            writer: None,
        };
        service.on_relay(&node, &mut plan);
        assert!(plan.writer.is_none());
        let register = request("REGISTER", "sip:example.com", "r", None);
        assert!(hidden_kind(&node, &register).is_none());
    }
}
