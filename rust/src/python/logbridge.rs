//! Rust `tracing` events into Python `logging` (the `sipr.core.*` loggers,
//! see python/sipr/corelog.py): the PyO3 face of rust/src/corelog.rs.

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::corelog::{self, Bridge, Record, RECORDS_PER_SECOND};

fn bridge() -> PyResult<&'static Bridge> {
    corelog::bridge().map_err(|e| PyOSError::new_err(format!("eventfd: {e}")))
}

/// Installs the bridge (once per process) and returns the eventfd that
/// becomes readable when core log records wait in `drain_logs()`.
#[pyfunction]
pub fn log_fd() -> PyResult<i32> {
    Ok(bridge()?.wake_fd())
}

/// The waiting core log records as (level, logger, message, call_id), and
/// how many the rate limit (or a full queue) suppressed since the last call.
#[pyfunction]
pub fn drain_logs() -> PyResult<(Vec<Record>, u64)> {
    Ok(bridge()?.drain())
}

/// Records a second that pass the rate limit.
#[pyfunction]
pub fn log_rate_limit() -> u64 {
    RECORDS_PER_SECOND
}

/// Passes core events at Python `logging` level `level` and above.
#[pyfunction]
pub fn set_log_level(level: i64) -> PyResult<()> {
    bridge()?.set_max_rank(corelog::rank_for_python_level(level));
    Ok(())
}
