//! custody-web: the HTTP API over session recordings (list, search, download, verify, live).

pub mod model;
