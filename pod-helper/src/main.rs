//! crid-pod-helper: the per-pod process crid starts at RunPodSandbox.
//!
//! Its sandbox duties (namespaces, CNI, logs, streams) arrive with the pod
//! sandbox issue; until then it only reports the protocol it speaks, so that
//! crid and packaging can already find and version-check it.

use std::process::ExitCode;

#[allow(dead_code)] // the helper's stream server wires this in (issue 7)
mod streaming;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") => {
            println!(
                "crid-pod-helper {} (control protocol v{})",
                env!("CARGO_PKG_VERSION"),
                crid_common::protocol::PROTOCOL_VERSION
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "crid-pod-helper is started by crid for each pod sandbox; it is not run by hand"
            );
            ExitCode::from(2)
        }
    }
}
