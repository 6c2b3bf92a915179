//! Address groups (Kamailio `permissions`, address table): rules of
//! network + port + transport → group, for trunks and gateways that are
//! trusted by address rather than by password. The whole rule set is
//! replaced at once on reload; lookups read a snapshot.

use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::RwLock;

use super::net::Cidr;
use crate::transport::Transport;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub group: String,
    pub net: Cidr,
    /// None: any port.
    pub port: Option<u16>,
    /// None: any transport.
    pub transport: Option<Transport>,
    /// Free text for the route (Kamailio's tag), e.g. a carrier's name.
    pub tag: String,
}

impl Rule {
    pub fn matches(&self, ip: IpAddr, port: u16, transport: Transport) -> bool {
        self.port.is_none_or(|p| p == port)
            && self.transport.is_none_or(|t| t == transport)
            && self.net.contains(ip)
    }

    /// A rule from its fields; `*` or empty means any port / transport.
    pub fn new(
        group: &str,
        net: &str,
        port: &str,
        transport: &str,
        tag: &str,
    ) -> Result<Rule, String> {
        let group = group.trim();
        if group.is_empty() || group.contains(char::is_whitespace) {
            return Err(format!("group name {group:?} must be one word"));
        }
        let port = match port.trim() {
            "" | "*" | "0" => None,
            p => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("port {p:?} is not 1-65535 or *"))?,
            ),
        };
        let transport = match transport.trim() {
            "" | "*" | "any" => None,
            t => Some(
                Transport::parse(t)
                    .ok_or_else(|| format!("transport {t:?} is not udp, tcp, tls, ws, wss or *"))?,
            ),
        };
        Ok(Rule {
            group: group.to_string(),
            net: net.parse()?,
            port,
            transport,
            tag: tag.trim().to_string(),
        })
    }
}

/// Parses the rules file: one rule per line, `GROUP NETWORK [PORT] [TRANSPORT]
/// [TAG...]` separated by blanks; `#` starts a comment. An error names its line.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(group), Some(net)) = (fields.next(), fields.next()) else {
            return Err(format!(
                "line {}: expected GROUP NETWORK [PORT] [TRANSPORT] [TAG]",
                n + 1
            ));
        };
        let port = fields.next().unwrap_or("*");
        let transport = fields.next().unwrap_or("*");
        let tag = fields.collect::<Vec<_>>().join(" ");
        rules.push(
            Rule::new(group, net, port, transport, &tag)
                .map_err(|e| format!("line {}: {e}", n + 1))?,
        );
    }
    Ok(rules)
}

#[derive(Default)]
pub struct AddressGroups {
    rules: RwLock<Arc<Vec<Rule>>>,
}

impl AddressGroups {
    pub fn replace(&self, rules: Vec<Rule>) {
        *self.rules.write() = Arc::new(rules);
    }

    pub fn rules(&self) -> Arc<Vec<Rule>> {
        self.rules.read().clone()
    }

    /// The first rule of `group` matching the address (Kamailio `allow_address`).
    pub fn find(&self, group: &str, ip: IpAddr, port: u16, transport: Transport) -> Option<Rule> {
        self.rules
            .read()
            .iter()
            .find(|r| r.group == group && r.matches(ip, port, transport))
            .cloned()
    }

    /// The groups whose rules match the address, in rule order, each once.
    pub fn groups_of(&self, ip: IpAddr, port: u16, transport: Transport) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.rules.read().iter() {
            if r.matches(ip, port, transport) && !out.contains(&r.group) {
                out.push(r.group.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_file() {
        let rules = parse_rules(
            "# trunks\ncarriers 192.0.2.0/24 5060 udp Carrier A\ncarriers 198.51.100.7\n\
             pbx 2001:db8::/32 * tcp\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].tag, "Carrier A");
        assert_eq!(rules[1].port, None);
        let g = AddressGroups::default();
        g.replace(rules);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(g
            .find("carriers", ip("192.0.2.44"), 5060, Transport::Udp)
            .is_some());
        assert!(g
            .find("carriers", ip("192.0.2.44"), 5062, Transport::Udp)
            .is_none());
        assert!(g
            .find("carriers", ip("192.0.2.44"), 5060, Transport::Tcp)
            .is_none());
        assert!(g
            .find("carriers", ip("198.51.100.7"), 1, Transport::Tls)
            .is_some());
        assert!(g
            .find("pbx", ip("198.51.100.7"), 1, Transport::Tcp)
            .is_none());
        assert_eq!(
            g.groups_of(ip("2001:db8::5"), 5060, Transport::Tcp),
            vec!["pbx".to_string()]
        );
        let err = parse_rules("ok 10.0.0.0/8\nbad 10.0.0.0/40\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_rules("carriers 10.0.0.1 5060 sctp").is_err());
        assert!(parse_rules("lonely").is_err());
    }
}
