//! The control socket: one thread per connection, Hello first, then
//! request/response frames (common::protocol).

use crate::logs::container_io::ContainerIo;
use crate::setup::Pod;
use crate::sys;
use crid_common::protocol::{
    check_hello, read_frame_sync, write_frame_sync, FrameError, Hello, Request, Response,
};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// The helper's state shared by control connections.
struct Served {
    pod: Pod,
    /// The pod's containers' stdio and log drains.
    io: Arc<ContainerIo>,
    /// What the stream server needs.
    streams: Arc<crate::streaming::server::Ctx>,
}

/// Serves until a `Shutdown` request ends the process. `exec_runner`: the
/// helper is the pod's shim and runs ExecSync processes itself.
pub fn serve(pod: Pod, exec_runner: Option<crate::shim::ExecRunner>) {
    // FIFOs live beside the control socket, in the sandbox dir.
    let io_dir = pod
        .spec
        .socket
        .parent()
        .map(|d| d.join("io"))
        .unwrap_or_else(|| std::path::PathBuf::from("io"));
    let exec_dir = io_dir.join("exec");
    // Exec FIFOs of a previous incarnation belong to streams that are gone.
    let _ = std::fs::remove_dir_all(&exec_dir);
    let io = Arc::new(ContainerIo::new(io_dir));
    let streams = Arc::new(crate::streaming::server::Ctx {
        exec_dir,
        io: Arc::clone(&io),
        exec_runner,
    });
    if pod.spec.adopt.is_some() {
        // A restarted helper drains on where its predecessor stopped.
        for note in io.adopt() {
            crate::log(&note);
        }
    }
    let pod = Arc::new(Served { pod, io, streams });
    for conn in pod.pod.listener.incoming() {
        match conn {
            Ok(stream) => {
                let pod = Arc::clone(&pod);
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        if let Err(e) = connection(&pod, stream) {
                            crate::log(&format!("control connection: {e}"));
                        }
                    });
                if let Err(e) = spawned {
                    crate::log(&format!("cannot start a connection thread: {e}"));
                }
            }
            Err(e) => crate::log(&format!("accepting a control connection: {e}")),
        }
    }
}

fn connection(served: &Served, mut s: UnixStream) -> Result<(), FrameError> {
    let pod = &served.pod;
    write_frame_sync(&mut s, &Hello::ours())?;
    let Some(peer) = read_frame_sync::<_, Hello>(&mut s)? else {
        return Ok(());
    };
    check_hello(&peer)?;
    while let Some(req) = read_frame_sync::<_, Request>(&mut s)? {
        match req {
            Request::Ping => write_frame_sync(
                &mut s,
                &Response::Pong {
                    pid: std::process::id(),
                },
            )?,
            Request::Shutdown => {
                // Write what the drains hold before exiting.
                served.io.release_all();
                if let Some(pid) = pod.reaper_pid {
                    sys::kill_reaper(pid, pod.reaper_is_child);
                }
                let _ = std::fs::remove_file(&pod.spec.socket);
                write_frame_sync(&mut s, &Response::ShuttingDown)?;
                crate::log("shutting down on request");
                std::process::exit(0);
            }
            Request::PrepareContainerIo(spec) => {
                let r = served.io.prepare(&spec).unwrap_or_else(error);
                write_frame_sync(&mut s, &r)?
            }
            Request::ReopenContainerLog { container_id } => {
                let r = match served.io.reopen(&container_id) {
                    Ok(()) => Response::LogReopened,
                    Err(e) => error(e),
                };
                write_frame_sync(&mut s, &r)?
            }
            Request::ReleaseContainerIo { container_id } => {
                let r = match served.io.release(&container_id) {
                    Ok(()) => Response::ContainerIoReleased,
                    Err(e) => error(e),
                };
                write_frame_sync(&mut s, &r)?
            }
            Request::ServeStream(h) => {
                // The client connection follows the frame; this connection
                // becomes the stream's control channel.
                let fd = crid_common::fd_pass::recv_fd(&s)?;
                if let Err(e) =
                    crate::streaming::server::spawn(h, fd, s, Arc::clone(&served.streams))
                {
                    crate::log(&e);
                }
                return Ok(());
            }
            Request::ExecSyncIo {
                container_id: _,
                exec_id,
                max_output,
            } => {
                if let Err(e) = crate::streaming::server::spawn_exec_sync(
                    s,
                    exec_id,
                    max_output,
                    Arc::clone(&served.streams),
                ) {
                    crate::log(&e);
                }
                return Ok(());
            }
            Request::ExecSyncRun(run) => {
                // This connection carries the run's events and result.
                if let Err(e) = crate::streaming::server::spawn_exec_sync_run(
                    s,
                    run,
                    Arc::clone(&served.streams),
                ) {
                    crate::log(&e);
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

fn error(message: String) -> Response {
    crate::log(&message);
    Response::Error { message }
}
