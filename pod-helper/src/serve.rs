//! The control socket: one thread per connection, Hello first, then
//! request/response frames (common::protocol).

use crate::setup::Pod;
use crate::sys;
use crid_common::protocol::{
    check_hello, read_frame_sync, write_frame_sync, FrameError, Hello, Request, Response,
};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// Serves until a `Shutdown` request ends the process.
pub fn serve(pod: Pod) {
    let pod = Arc::new(pod);
    for conn in pod.listener.incoming() {
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

fn connection(pod: &Pod, mut s: UnixStream) -> Result<(), FrameError> {
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
                if let Some(pid) = pod.reaper_pid {
                    sys::kill_reaper(pid, pod.reaper_is_child);
                }
                let _ = std::fs::remove_file(&pod.spec.socket);
                write_frame_sync(&mut s, &Response::ShuttingDown)?;
                crate::log("shutting down on request");
                std::process::exit(0);
            }
        }
    }
    Ok(())
}
