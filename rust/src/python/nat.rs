//! The NAT tests (`nat::detect`) by name for `Request.nat_test`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::nat::{nat_test, NatTest};
use crate::sip::Message;
use crate::transport::Source;

/// The names of the tests in `names` (all when None) that fire.
pub fn run_tests(
    msg: &Message,
    source: &Source,
    names: Option<Vec<String>>,
) -> PyResult<Vec<&'static str>> {
    let mut bits = 0;
    match names {
        None => bits = u32::MAX,
        Some(list) => {
            for n in list {
                let t = NatTest::from_name(&n).ok_or_else(|| {
                    let known: Vec<_> = NatTest::ALL.iter().map(|t| t.name()).collect();
                    PyValueError::new_err(format!(
                        "unknown NAT test {n:?}: use {}",
                        known.join(", ")
                    ))
                })?;
                bits |= t.bit();
            }
        }
    }
    let fired = nat_test(msg, source, bits);
    Ok(NatTest::ALL
        .into_iter()
        .filter(|t| fired & t.bit() != 0)
        .map(NatTest::name)
        .collect())
}
