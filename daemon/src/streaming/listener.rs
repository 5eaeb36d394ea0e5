//! The streaming listener: accepts TCP (optionally TLS) connections, reads
//! the request head only, consumes the URL's token and hands the connection
//! to the pod's helper. An unknown, reused or expired token gets a bodiless
//! 404 and nothing else; bytes after the head are never interpreted here.

use super::{Grant, Streaming};
use crate::cri::Crid;
use crid_common::config::StreamingConfig;
use crid_common::protocol::{StreamHandoff, StreamKind};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Largest request head read (the helper applies the same limit).
const MAX_HEAD: usize = 16 * 1024;
/// A client must send its head within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener, before serving.
pub struct Bound {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
}

/// Binds `cfg.address` and loads the TLS certificate if configured.
pub async fn bind(cfg: &StreamingConfig) -> Result<Bound, String> {
    let tls = if cfg.tls() {
        Some(tls_acceptor(cfg)?)
    } else {
        None
    };
    let listener = TcpListener::bind(&cfg.address)
        .await
        .map_err(|e| format!("streaming listener on {}: {e}", cfg.address))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("streaming listener address: {e}"))?;
    Ok(Bound {
        listener,
        tls,
        addr,
    })
}

fn tls_acceptor(cfg: &StreamingConfig) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.tls_cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("streaming.tls_cert {}: {e}", cfg.tls_cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "streaming.tls_cert {}: no certificate",
            cfg.tls_cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.tls_key)
        .map_err(|e| format!("streaming.tls_key {}: {e}", cfg.tls_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("streaming TLS certificate/key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Bound {
    /// Serves until the task is aborted.
    pub fn spawn(self, crid: Arc<Crid>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let (conn, peer) = match self.listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let crid = Arc::clone(&crid);
                let tls = self.tls.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(crid, conn, tls).await {
                        tracing::debug!(%peer, error = %e, "streaming connection refused");
                    }
                });
            }
        })
    }
}

async fn connection(
    crid: Arc<Crid>,
    conn: TcpStream,
    tls: Option<TlsAcceptor>,
) -> Result<(), String> {
    let _ = conn.set_nodelay(true);
    match tls {
        None => {
            let mut conn = conn;
            let Some((grant, head)) = read_and_check(&crid.streaming, &mut conn).await? else {
                return Ok(());
            };
            let std = conn.into_std().map_err(|e| e.to_string())?;
            let fd = OwnedFd::from(std);
            let handed = hand_off(&crid, grant, head, fd, true, &mut None::<TcpStream>).await?;
            run_session(&crid, handed).await
        }
        Some(acceptor) => {
            let mut tls = tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(conn))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let Some((grant, head)) = read_and_check(&crid.streaming, &mut tls).await? else {
                return Ok(());
            };
            // The helper gets the plain side of a socket pair; crid relays
            // the TLS records (see docs/ARCHITECTURE.md, Streaming).
            let (ours, theirs) =
                std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
            ours.set_nonblocking(true).map_err(|e| e.to_string())?;
            let mut ours = tokio::net::UnixStream::from_std(ours).map_err(|e| e.to_string())?;
            let handed = hand_off(
                &crid,
                grant,
                head,
                OwnedFd::from(theirs),
                false,
                &mut Some(&mut tls),
            )
            .await?;
            let (_, r) = tokio::join!(
                tokio::io::copy_bidirectional(&mut tls, &mut ours),
                run_session(&crid, handed)
            );
            r
        }
    }
}

/// Reads the head; answers 404 and returns `None` unless it names a valid
/// token for its endpoint. Returns the grant and every byte read.
async fn read_and_check<IO: AsyncRead + AsyncWrite + Unpin>(
    streaming: &Streaming,
    io: &mut IO,
) -> Result<Option<(Grant, Vec<u8>)>, String> {
    let read = tokio::time::timeout(HEAD_TIMEOUT, read_head(io)).await;
    let (target, buf) = match read {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => {
            let _ = io.write_all(&response(400)).await;
            return Err("malformed request head".into());
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("request head timed out".into()),
    };
    let grant = parse_target(&target).and_then(|(endpoint, token)| {
        let g = streaming.tokens.take(token)?;
        (g.endpoint() == endpoint).then_some(g)
    });
    match grant {
        Some(g) => Ok(Some((g, buf))),
        None => {
            let _ = io.write_all(&response(404)).await;
            let _ = io.shutdown().await;
            Err("unknown, used or expired token".into())
        }
    }
}

/// Reads until a complete head: `Ok(None)` if it is not HTTP or too long.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(String, Vec<u8>)>, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = r.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("client closed before the request head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let target = req.path.unwrap_or("").to_string();
                return Ok(Some((target, buf)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Ok(None),
        }
    }
}

/// `/<endpoint>/<token>[?query]` → (endpoint, token).
fn parse_target(target: &str) -> Option<(&str, &str)> {
    let path = target.split('?').next()?;
    let mut parts = path.strip_prefix('/')?.split('/');
    let (endpoint, token) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || token.is_empty() {
        return None;
    }
    Some((endpoint, token))
}

/// A bodiless response that says nothing about why.
fn response(code: u16) -> Vec<u8> {
    let reason = match code {
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Bad Request",
    };
    format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// A connection the helper now serves: its control channel and what for.
struct Handed {
    ctl: std::os::unix::net::UnixStream,
    grant: Grant,
    kind: StreamKind,
}

/// Passes the connection to the pod's helper. On failure the client gets a
/// bodiless 500 on `reply` (or on the fd itself).
async fn hand_off<W: AsyncWrite + Unpin>(
    crid: &Arc<Crid>,
    grant: Grant,
    head: Vec<u8>,
    fd: OwnedFd,
    tcp: bool,
    reply: &mut Option<W>,
) -> Result<Handed, String> {
    let kind = match &grant {
        Grant::Exec {
            container_id,
            stdio,
            ..
        } => StreamKind::Exec {
            container_id: container_id.clone(),
            exec_id: super::session::new_exec_id()?,
            stdio: *stdio,
        },
        Grant::Attach {
            container_id,
            stdio,
            ..
        } => StreamKind::Attach {
            container_id: container_id.clone(),
            stdio: *stdio,
        },
        Grant::PortForward { .. } => StreamKind::PortForward,
    };
    let sandboxes = Arc::clone(&crid.sandboxes);
    let sandbox_id = grant.sandbox_id().to_string();
    let handoff = StreamHandoff {
        kind: kind.clone(),
        head,
        tcp,
    };
    let sent = tokio::task::spawn_blocking(move || {
        // The sandbox lock may be held by a running RunPodSandbox: blocking pool.
        let r = match sandboxes.get(&sandbox_id) {
            Ok(Some(sb)) => crate::helper_client::hand_off_stream(&sb.socket(), &handoff, &fd),
            Ok(None) => Err("the pod sandbox is gone".to_string()),
            Err(e) => Err(e.to_string()),
        };
        (r, fd)
    })
    .await
    .map_err(|e| e.to_string())?;
    let ctl = match sent {
        (Ok(ctl), _fd) => ctl,
        (Err(e), fd) => {
            tracing::warn!(pod = grant.sandbox_id(), error = %e, "cannot hand a stream to the pod helper");
            match reply {
                Some(w) => {
                    let _ = w.write_all(&response(500)).await;
                }
                None => {
                    let mut s = std::net::TcpStream::from(fd);
                    let _ = std::io::Write::write_all(&mut s, &response(500));
                }
            }
            return Err(format!("handing the stream to the pod helper: {e}"));
        }
    };
    Ok(Handed { ctl, grant, kind })
}

/// Runs crid's side of an exec or attach stream (nothing for port-forward).
async fn run_session(crid: &Arc<Crid>, h: Handed) -> Result<(), String> {
    let Handed { ctl, grant, kind } = h;
    match (grant, kind) {
        (
            Grant::Exec {
                container_id, cmd, ..
            },
            StreamKind::Exec { exec_id, stdio, .. },
        ) => super::session::exec(crid, ctl, &container_id, &exec_id, cmd, stdio).await,
        (Grant::Attach { container_id, .. }, _) => {
            super::session::attach(crid, ctl, &container_id).await
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("/exec/abc"), Some(("exec", "abc")));
        assert_eq!(
            parse_target("/portforward/abc?port=80"),
            Some(("portforward", "abc"))
        );
        assert_eq!(parse_target("/exec/"), None);
        assert_eq!(parse_target("/exec/a/b"), None);
        assert_eq!(parse_target("exec/a"), None);
        assert_eq!(parse_target("/exec"), None);
    }

    #[tokio::test]
    async fn unknown_reused_and_mismatched_tokens_get_a_bare_404() {
        let s = Streaming::new(
            "127.0.0.1:1".parse().unwrap(),
            false,
            Duration::from_secs(60),
        );
        let url = s
            .url(Grant::PortForward {
                sandbox_id: "p".into(),
            })
            .unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        for (path, ok) in [
            (format!("/exec/{token}"), false), // wrong endpoint consumes it
            (format!("/portforward/{token}"), false),
            ("/portforward/zzz".to_string(), false),
        ] {
            let (mut client, mut server) = tokio::io::duplex(4096);
            let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\n\r\nEXTRA");
            client.write_all(req.as_bytes()).await.unwrap();
            let r = read_and_check(&s, &mut server).await;
            assert_eq!(r.is_ok(), ok, "{path}");
            drop(server);
            let mut out = String::new();
            client.read_to_string(&mut out).await.unwrap();
            assert_eq!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        let url = s
            .url(Grant::PortForward {
                sandbox_id: "p".into(),
            })
            .unwrap();
        let path = url.strip_prefix("http://127.0.0.1:1").unwrap();
        let (mut client, mut server) = tokio::io::duplex(4096);
        let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\n\r\nEXTRA");
        client.write_all(req.as_bytes()).await.unwrap();
        let (g, head) = read_and_check(&s, &mut server).await.unwrap().unwrap();
        assert_eq!(g.sandbox_id(), "p");
        assert!(
            head.ends_with(b"\r\n\r\nEXTRA"),
            "bytes past the head travel along"
        );
    }

    #[tokio::test]
    async fn garbage_gets_a_400() {
        let s = Streaming::new(
            "127.0.0.1:1".parse().unwrap(),
            false,
            Duration::from_secs(60),
        );
        let (mut client, mut server) = tokio::io::duplex(4096);
        client
            .write_all(b"\x16\x03\x01garbage\r\n\r\n")
            .await
            .unwrap();
        assert!(read_and_check(&s, &mut server).await.is_err());
        drop(server);
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }
}
