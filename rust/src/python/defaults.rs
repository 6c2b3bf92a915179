//! `sipr._core.core_defaults()`: the core's default settings as Python reads
//! them, so python/sipr/settings.py (and through it `sipr run --help`, the
//! docs table and `App(...)`) shows the values the core really uses instead
//! of a copy that can drift.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::core::Config;
use crate::transaction::Timing;

#[pyfunction]
pub fn core_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let config = Config::default();
    let timing = Timing::default();
    let out = PyDict::new(py);
    out.set_item("max_pending", config.max_pending)?;
    out.set_item("retry_after", config.retry_after)?;
    out.set_item("max_message_size", config.limits.max_message_size)?;
    out.set_item(
        "connect_timeout",
        config.stream.connect_timeout.as_secs_f64(),
    )?;
    out.set_item(
        "connect_backoff",
        config.stream.connect_backoff.as_secs_f64(),
    )?;
    out.set_item(
        "connection_lifetime",
        config.stream.idle_lifetime.as_secs_f64(),
    )?;
    out.set_item("max_connections", config.stream.max_connections)?;
    out.set_item("t1", timing.t1.as_secs_f64())?;
    out.set_item("t2", timing.t2.as_secs_f64())?;
    out.set_item("t4", timing.t4.as_secs_f64())?;
    out.set_item("timer_c", timing.timer_c.as_secs_f64())?;
    Ok(out)
}
