//! Terminal sizes as the resize channel carries them (`client-go` `remotecommand.TerminalSize`).

use serde::{Deserialize, Serialize};

/// A terminal size. client-go's struct has no JSON tags, so the fields are `Width` and `Height`
/// on the wire (`{"Width":100,"Height":30}`); Go decodes field names case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}
