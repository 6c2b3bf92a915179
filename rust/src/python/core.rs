//! `sipr._core.Core`: the running core as the Python server drives it. The
//! server registers the UDP sockets and the stream wake-up fd with its event
//! loop and calls `poll_udp` / `drain_streams` when they are readable.

use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use super::request::PyRequest;
use crate::core::{Config, Core, Incoming};
use crate::transport::ListenSpec;

#[pyclass(module = "sipr._core", name = "Core")]
pub struct PyCore {
    core: Arc<Core>,
    scratch: Vec<Incoming>,
}

impl PyCore {
    fn wrap(&mut self, py: Python<'_>) -> PyResult<Vec<Py<PyRequest>>> {
        self.scratch
            .drain(..)
            .map(|inc| Py::new(py, PyRequest::new(self.core.clone(), inc)))
            .collect()
    }
}

#[pymethods]
impl PyCore {
    #[new]
    #[pyo3(signature = (listen, *, max_pending=10_000, retry_after=5, max_message_size=65_535, aliases=Vec::new()))]
    fn new(listen: Vec<String>, max_pending: usize, retry_after: u32, max_message_size: usize, aliases: Vec<String>) -> PyResult<PyCore> {
        let mut config = Config::default();
        config.listen = listen.iter().map(|l| ListenSpec::parse(l)).collect::<Result<_, _>>().map_err(PyValueError::new_err)?;
        if config.listen.is_empty() {
            return Err(PyValueError::new_err("at least one listen address is needed"));
        }
        config.max_pending = max_pending.max(1);
        config.retry_after = retry_after;
        config.limits.max_message_size = max_message_size;
        config.aliases = aliases;
        let core = Core::start(config).map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(PyCore { core, scratch: Vec::with_capacity(64) })
    }

    fn udp_fds(&self) -> Vec<i32> {
        self.core.udp_fds()
    }

    fn wake_fd(&self) -> i32 {
        self.core.wake_fd()
    }

    /// Reads UDP listener `index` and returns the requests for the application.
    fn poll_udp(&mut self, py: Python<'_>, index: usize) -> PyResult<Vec<Py<PyRequest>>> {
        let core = self.core.clone();
        let mut scratch = std::mem::take(&mut self.scratch);
        core.poll_udp(index, &mut scratch);
        self.scratch = scratch;
        self.wrap(py)
    }

    /// Returns the requests read from stream connections since the last call.
    fn drain_streams(&mut self, py: Python<'_>) -> PyResult<Vec<Py<PyRequest>>> {
        let core = self.core.clone();
        let mut scratch = std::mem::take(&mut self.scratch);
        core.drain_streams(&mut scratch);
        self.scratch = scratch;
        self.wrap(py)
    }

    /// `[(transport, host, port)]` actually bound (port 0 resolved).
    fn local_addrs(&self) -> Vec<(String, String, u16)> {
        self.core
            .local_addrs()
            .into_iter()
            .map(|(t, a)| (t.as_str().to_ascii_lowercase(), a.ip().to_string(), a.port()))
            .collect()
    }

    /// Requests handed to the application and not yet acted on.
    #[getter]
    fn pending(&self) -> usize {
        self.core.pending()
    }

    fn stats(&self) -> Vec<(String, u64)> {
        let mut s = self.core.stats.snapshot();
        s.push(("pending".into(), self.core.pending() as u64));
        s.push(("connections".into(), self.core.connection_count() as u64));
        s
    }

    fn stop(&self) {
        self.core.stop();
    }
}

/// Validates a listen URI; returns (transport, host, port).
#[pyfunction]
pub fn parse_listen(spec: &str) -> PyResult<(String, String, u16)> {
    let l = ListenSpec::parse(spec).map_err(PyValueError::new_err)?;
    Ok((l.transport.as_str().to_ascii_lowercase(), l.addr.ip().to_string(), l.addr.port()))
}
