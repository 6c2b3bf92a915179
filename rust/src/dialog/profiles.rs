//! Dialog profiles (Kamailio `dlg_profile`): named sets of dialogs, with an
//! optional value (`user`=`alice`, `trunk`=`gw1`), counted live for limits
//! and for least-active-calls load balancing.
//!
//! The counts are local to this process. Sharing them between workers and
//! hosts (issue 20) goes through this one type: `add` / `remove` are the
//! only writes, so a shared backend mirrors them (decision 0037).

use std::collections::HashMap;

/// One membership of a dialog: a profile name and its value ("" for none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    pub name: Box<str>,
    pub value: Box<str>,
}

impl Profile {
    pub fn new(name: &str, value: &str) -> Profile {
        Profile {
            name: name.into(),
            value: value.into(),
        }
    }

    /// `name` or `name:value` (the value may itself contain ':').
    pub fn parse(s: &str) -> Profile {
        match s.split_once(':') {
            Some((n, v)) => Profile::new(n, v),
            None => Profile::new(s, ""),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.name.len() + self.value.len()
    }
}

#[derive(Debug, Default)]
struct Named {
    total: usize,
    values: HashMap<Box<str>, usize>,
}

#[derive(Debug, Default)]
pub struct Profiles {
    names: HashMap<Box<str>, Named>,
}

impl Profiles {
    pub fn add(&mut self, p: &Profile) {
        let named = self.names.entry(p.name.clone()).or_default();
        named.total += 1;
        *named.values.entry(p.value.clone()).or_default() += 1;
    }

    pub fn remove(&mut self, p: &Profile) {
        let Some(named) = self.names.get_mut(p.name.as_ref()) else {
            return;
        };
        named.total = named.total.saturating_sub(1);
        if let Some(n) = named.values.get_mut(p.value.as_ref()) {
            *n -= 1;
            if *n == 0 {
                named.values.remove(p.value.as_ref());
            }
        }
        if named.total == 0 {
            self.names.remove(p.name.as_ref());
        }
    }

    /// Dialogs in `name` with `value`, or with any value when None.
    pub fn count(&self, name: &str, value: Option<&str>) -> usize {
        let Some(named) = self.names.get(name) else {
            return 0;
        };
        match value {
            None => named.total,
            Some(v) => named.values.get(v).copied().unwrap_or(0),
        }
    }

    /// (name, value, count) for every value in use, sorted.
    pub fn entries(&self) -> Vec<(String, String, usize)> {
        let mut out: Vec<_> = self
            .names
            .iter()
            .flat_map(|(n, named)| {
                named
                    .values
                    .iter()
                    .map(move |(v, c)| (n.to_string(), v.to_string(), *c))
            })
            .collect();
        out.sort();
        out
    }
}
