//! crid's streaming server (issue 7): the URLs Exec / Attach / PortForward
//! return, and the listener behind them. The listener reads only the HTTP
//! request head, checks the single-use token and hands the connection to
//! the pod's helper (SCM_RIGHTS); stream bytes flow between the client and
//! the helper. For exec and attach the hand-off connection stays open as
//! the stream's control channel, over which crid runs the containerd side
//! (start the process, resize its terminal, report its exit).
//!
//! - [`tokens`]: single-use, expiring tokens.
//! - [`listener`]: TCP (optionally TLS) accept loop, token check, hand-off.
//! - [`session`]: what crid does on that channel for exec and attach.

pub mod listener;
pub mod session;
pub mod tokens;

use crid_common::protocol::StreamStdio;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Run `cmd` in a container.
    Exec {
        /// The pod.
        sandbox_id: String,
        /// The container.
        container_id: String,
        /// The command.
        cmd: Vec<String>,
        /// Streams asked for.
        stdio: StreamStdio,
    },
    /// Attach to a container's stdio.
    Attach {
        /// The pod.
        sandbox_id: String,
        /// The container.
        container_id: String,
        /// Streams asked for.
        stdio: StreamStdio,
    },
    /// Forward ports of a pod.
    PortForward {
        /// The pod.
        sandbox_id: String,
    },
}

impl Grant {
    /// The URL path segment of this kind of stream.
    pub fn endpoint(&self) -> &'static str {
        match self {
            Grant::Exec { .. } => "exec",
            Grant::Attach { .. } => "attach",
            Grant::PortForward { .. } => "portforward",
        }
    }

    /// The pod whose helper serves the stream.
    pub fn sandbox_id(&self) -> &str {
        match self {
            Grant::Exec { sandbox_id, .. }
            | Grant::Attach { sandbox_id, .. }
            | Grant::PortForward { sandbox_id } => sandbox_id,
        }
    }
}

/// The streaming server's shared state: where it listens and its tokens.
pub struct Streaming {
    /// `http(s)://host:port` the URLs start with.
    pub base_url: String,
    /// Outstanding tokens.
    pub tokens: tokens::Tokens<Grant>,
    /// Per pod (one runc shim each), bounds exec processes being
    /// created/started at once (see `session::start_process`).
    exec_starts: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// Exec processes created/started at the same time in one pod (its shim).
pub const MAX_CONCURRENT_EXEC_STARTS: usize = 4;

impl Streaming {
    /// State for a listener bound at `addr`.
    pub fn new(addr: SocketAddr, tls: bool, ttl: std::time::Duration) -> Streaming {
        Streaming {
            base_url: base_url(addr, tls),
            tokens: tokens::Tokens::new(ttl),
            exec_starts: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The exec-start limiter of pod `sandbox_id`.
    pub fn exec_starts(&self, sandbox_id: &str) -> Arc<tokio::sync::Semaphore> {
        let mut m = self.exec_starts.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            m.entry(sandbox_id.to_string()).or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_EXEC_STARTS))
            }),
        )
    }

    /// Forgets the limiter of a removed pod.
    pub fn forget_pod(&self, sandbox_id: &str) {
        let mut m = self.exec_starts.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(sandbox_id);
    }

    /// A fresh URL for `grant`.
    pub fn url(&self, grant: Grant) -> Result<String, String> {
        let endpoint = grant.endpoint();
        let token = self.tokens.issue(grant)?;
        Ok(format!("{}/{endpoint}/{token}", self.base_url))
    }
}

/// `http(s)://ip:port`; an unspecified ip is named as loopback.
fn base_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[tokio::test]
    async fn exec_starts_are_limited_per_pod() {
        let s = Streaming::new(
            "127.0.0.1:1".parse().unwrap(),
            false,
            std::time::Duration::from_secs(60),
        );
        let a = s.exec_starts("pod-a");
        let held: Vec<_> = (0..MAX_CONCURRENT_EXEC_STARTS)
            .map(|_| a.clone().try_acquire_owned().unwrap())
            .collect();
        // Pod a is at its limit; pod b is not held up by it.
        assert!(s.exec_starts("pod-a").try_acquire_owned().is_err());
        assert!(s.exec_starts("pod-b").try_acquire_owned().is_ok());
        drop(held);
        assert!(s.exec_starts("pod-a").try_acquire_owned().is_ok());
        s.forget_pod("pod-a");
        assert_eq!(
            s.exec_starts("pod-a").available_permits(),
            MAX_CONCURRENT_EXEC_STARTS
        );
    }

    #[test]
    fn urls_name_the_bound_address() {
        let s = Streaming::new(
            "0.0.0.0:10010".parse().unwrap(),
            false,
            std::time::Duration::from_secs(60),
        );
        let url = s
            .url(Grant::PortForward {
                sandbox_id: "p".into(),
            })
            .unwrap();
        let token = url
            .strip_prefix("http://127.0.0.1:10010/portforward/")
            .unwrap();
        assert_eq!(
            s.tokens.take(token),
            Some(Grant::PortForward {
                sandbox_id: "p".into()
            })
        );
        assert_eq!(
            base_url("[::1]:5".parse().unwrap(), true),
            "https://[::1]:5"
        );
    }
}
