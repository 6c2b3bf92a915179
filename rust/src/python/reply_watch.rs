//! Registering the `onreply` service and watching one relay's responses
//! (`relay(..., on_reply=fn)`), apart from `RelayReply` (python/onreply.rs)
//! so that the request module reaches it without a cycle.

use std::sync::Arc;

use pyo3::prelude::*;

use super::shared::Shared;
use crate::onreply::OnReply;

/// The `onreply` service of this core, registered on first use.
pub fn service(shared: &Shared) -> &Arc<OnReply> {
    shared.onreply.get_or_init(|| {
        let s = Arc::new(OnReply::default());
        // The only registration of this name: `get_or_init` runs once.
        let _ = shared.core.node.hooks.add(s.clone());
        s
    })
}

/// `relay(..., on_reply=handler)`: the replies of `txn` go to `handler`.
pub fn watch(shared: &Arc<Shared>, py: Python<'_>, txn: u64, handler: Py<PyAny>) -> PyResult<()> {
    if !handler.bind(py).is_callable() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "on_reply must be a function taking the reply",
        ));
    }
    if service(shared).watch(txn) {
        shared.reply_handlers.lock().insert(txn, handler);
    } else {
        tracing::warn!(
            txn,
            "on_reply: too many relays watched; this one's replies pass unseen"
        );
    }
    Ok(())
}
