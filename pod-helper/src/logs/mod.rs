//! Container log writing in the CRI format. `format` turns a container's byte
//! stream into log entries; the file handling and draining arrive with the
//! container log issue.

pub mod format;
pub mod timestamp;
