//! crid-pod-helper: the per-pod process crid starts at RunPodSandbox.
//!
//! `crid-pod-helper run <spec.json>` joins the pod's cgroup first, then
//! creates (or re-adopts) and pins the pod's namespaces, runs CNI ADD, starts
//! the PID-namespace reaper, reports one [`SetupReport`] line on stdout and
//! serves its control socket until told to shut down. Small on purpose: no
//! async runtime, a thread per control connection.

mod logs;

mod serve;
mod setup;
mod shim;
mod sys;
mod userns;

use crid_common::protocol::{HelperSpec, SetupReport, PROTOCOL_VERSION};
use std::io::Write;
use std::process::ExitCode;

mod streaming;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Run by containerd under the shim name (a link to this binary).
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name == shim::binary::BINARY_NAME {
        return shim::binary::main(&args[1..]);
    }
    match args.get(1).map(String::as_str) {
        Some("--version") => {
            println!(
                "crid-pod-helper {} (control protocol v{})",
                env!("CARGO_PKG_VERSION"),
                PROTOCOL_VERSION
            );
            ExitCode::SUCCESS
        }
        Some("run") if args.len() == 3 => run(&args[2]),
        _ => {
            eprintln!(
                "crid-pod-helper is started by crid for each pod sandbox; it is not run by hand"
            );
            ExitCode::from(2)
        }
    }
}

fn run(spec_path: &str) -> ExitCode {
    let arena_note = sys::limit_malloc_arenas();
    let spec: HelperSpec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            report(&SetupReport::Failed {
                message: format!("reading helper spec {spec_path}: {e}"),
            });
            return ExitCode::FAILURE;
        }
    };
    if spec.version != PROTOCOL_VERSION {
        report(&SetupReport::Failed {
            message: format!(
                "helper spec v{} but this helper speaks v{PROTOCOL_VERSION}",
                spec.version
            ),
        });
        return ExitCode::FAILURE;
    }
    match setup::set_up(&spec) {
        Ok(pod) => {
            let mut exec_runner = None;
            if let Some(shim) = &pod.spec.shim {
                // Before Ready: containerd may connect as soon as crid knows.
                match shim::start(shim) {
                    Ok(r) => exec_runner = Some(r),
                    Err(e) => {
                        report(&SetupReport::Failed {
                            message: format!("serving as the pod's shim: {e}"),
                        });
                        return ExitCode::FAILURE;
                    }
                }
            }
            log(&format!(
                "sandbox {} ready (helper pid {}, reaper {:?})",
                spec.sandbox_id,
                std::process::id(),
                pod.reaper_pid
            ));
            for n in arena_note.iter().chain(&pod.notes) {
                log(n);
            }
            report(&SetupReport::Ready {
                pid: std::process::id(),
                reaper_pid: pod.reaper_pid,
                cni_result: pod.cni_result.clone(),
                notes: pod.notes.clone(),
            });
            sys::detach_stdout();
            sys::trim_heap();
            serve::serve(pod, exec_runner);
            ExitCode::SUCCESS
        }
        Err(e) => {
            log(&format!(
                "set-up of sandbox {} failed: {e}",
                spec.sandbox_id
            ));
            report(&SetupReport::Failed {
                message: e.to_string(),
            });
            ExitCode::FAILURE
        }
    }
}

/// The set-up report: one JSON line on stdout, which crid reads.
fn report(r: &SetupReport) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// One line to stderr (crid points it at the sandbox's helper.log).
pub(crate) fn log(msg: &str) {
    eprintln!("crid-pod-helper[{}]: {msg}", std::process::id());
}
