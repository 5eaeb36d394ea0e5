//! crid-pod-helper: the per-pod process crid starts at RunPodSandbox.
//!
//! Its sandbox duties (namespaces, CNI, logs, streams) arrive with the pod
//! sandbox issue; until then it only reports the protocol it speaks, so that
//! crid and packaging can already find and version-check it.

// The CRI log writer; the helper's log draining (container log issue) uses it.
#[allow(dead_code)]
mod logs;

use std::process::ExitCode;

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
