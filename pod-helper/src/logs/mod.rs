//! Container logs: the pod's containers' stdio FIFOs (`container_io`),
//! drained (`drain`) into CRI log files (`sink`) in the CRI format (`format`),
//! and fanned out to attach clients (`tap`).

pub mod container_io;
pub mod drain;
pub mod format;
pub mod sink;
pub mod source;
pub mod tap;
pub mod timestamp;

#[cfg(test)]
mod tests;
