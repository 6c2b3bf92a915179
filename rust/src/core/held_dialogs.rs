//! What a held request may ask of the dialog service: track the dialog its
//! INVITE creates, or have its transaction accounted (`req.track_dialog()`,
//! `req.account()`). The rules themselves live in `crate::dialog::track`.

use super::{Core, HeldRequest};
use crate::dialog::{self, DialogId, TrackError, TrackSpec};

/// A custom record field: name and value.
pub type Field = (Box<str>, Box<str>);

impl HeldRequest {
    /// Tracks the dialog this initial INVITE creates.
    pub fn track_dialog(&self, core: &Core, spec: TrackSpec) -> Result<DialogId, TrackError> {
        let txn = self.inc.txn.ok_or(TrackError::NoTransaction)?;
        let (id, _) = core.with_services(|cx, _| dialog::track(&core.dialogs, cx, txn, spec));
        id
    }

    /// Writes a request record for this transaction when its final answer
    /// goes upstream (at once for an ACK, which has none).
    pub fn account(&self, core: &Core, extra: Vec<Field>) {
        let inc = &self.inc;
        core.with_services(|cx, _| {
            dialog::account(&core.dialogs, cx, inc.txn, &inc.msg, &inc.source, extra)
        });
    }
}
