//! Hidden-dialog records (topology hiding) to and from Python dicts, the
//! form `sipr.topology` stores them in (JSON in SQLite or Redis).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::topology::{Change, HiddenDialog, Reach};

fn reach_dict<'py>(py: Python<'py>, r: &Reach) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("tag", &r.tag)?;
    d.set_item("contact", &r.contact)?;
    d.set_item("routes", PyList::new(py, &r.routes)?)?;
    Ok(d)
}

pub fn to_dict<'py>(py: Python<'py>, h: &HiddenDialog) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &h.id)?;
    d.set_item("a_call_id", &h.a_call_id)?;
    d.set_item("b_call_id", &h.b_call_id)?;
    d.set_item("a", reach_dict(py, &h.a)?)?;
    let b = PyList::empty(py);
    for r in &h.b {
        b.append(reach_dict(py, r)?)?;
    }
    d.set_item("b", b)?;
    d.set_item("confirmed", h.confirmed)?;
    d.set_item("created", h.created)?;
    d.set_item("expires", h.expires)?;
    Ok(d)
}

fn get<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    d.get_item(key)?
        .ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!("dialog record without {key:?}"))
        })?
        .extract()
        .map_err(Into::into)
}

fn reach_from(d: &Bound<'_, PyDict>) -> PyResult<Reach> {
    Ok(Reach {
        tag: get(d, "tag")?,
        contact: get(d, "contact")?,
        routes: get(d, "routes")?,
    })
}

pub fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<HiddenDialog> {
    let b: Vec<Bound<'_, PyDict>> = get(d, "b")?;
    Ok(HiddenDialog {
        id: get(d, "id")?,
        a_call_id: get(d, "a_call_id")?,
        b_call_id: get(d, "b_call_id")?,
        a: reach_from(&get::<Bound<'_, PyDict>>(d, "a")?)?,
        b: b.iter().map(reach_from).collect::<PyResult<_>>()?,
        confirmed: get(d, "confirmed")?,
        created: get(d, "created")?,
        expires: get(d, "expires")?,
    })
}

/// ("upsert", record) or ("delete", {"id": ID}).
pub fn change<'py>(py: Python<'py>, c: &Change) -> PyResult<(&'static str, Bound<'py, PyDict>)> {
    Ok(match c {
        Change::Upsert(h) => ("upsert", to_dict(py, h)?),
        Change::Delete(id) => {
            let d = PyDict::new(py);
            d.set_item("id", id)?;
            ("delete", d)
        }
    })
}
