//! The daemon↔pod-helper control protocol: versioned messages, each sent as a
//! 4-byte big-endian length followed by that many bytes of JSON.
//!
//! Both sides exchange [`Hello`] first; a peer whose major version differs is
//! refused, so a crid upgrade never silently talks past an old helper.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol version spoken by this build; bump on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts; bigger frames mean a confused peer.
pub const MAX_FRAME: usize = 4 << 20;

/// First message on every control connection, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// Crate version of the sender, for logs.
    pub build: String,
}

impl Hello {
    /// The hello this build sends.
    pub fn ours() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            build: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// A broken or refused control connection.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The socket failed or closed.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame over [`MAX_FRAME`].
    #[error("control frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The frame was not the JSON expected.
    #[error("control frame is not valid: {0}")]
    Decode(#[from] serde_json::Error),
    /// The peer speaks another protocol version.
    #[error("peer speaks control protocol v{peer}, this build speaks v{PROTOCOL_VERSION}")]
    Version {
        /// The peer's version.
        peer: u32,
    },
}

/// Writes one message as a frame and flushes it.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    // The check above bounds the length well below u32::MAX.
    let len = (body.len() as u32).to_be_bytes();
    w.write_all(&len).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R, T>(r: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Checks a peer's hello against ours.
pub fn check_hello(peer: &Hello) -> Result<(), FrameError> {
    if peer.version != PROTOCOL_VERSION {
        return Err(FrameError::Version { peer: peer.version });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let sent = Hello::ours();
        let writer = tokio::spawn(async move {
            write_frame(&mut a, &sent).await.unwrap();
            write_frame(
                &mut a,
                &Hello {
                    version: 9,
                    build: "x".into(),
                },
            )
            .await
            .unwrap();
        });
        let first: Hello = read_frame(&mut b).await.unwrap().unwrap();
        assert!(check_hello(&first).is_ok());
        let second: Hello = read_frame(&mut b).await.unwrap().unwrap();
        assert!(matches!(
            check_hello(&second),
            Err(FrameError::Version { peer: 9 })
        ));
        writer.await.unwrap();
        let end: Option<Hello> = read_frame(&mut b).await.unwrap();
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn oversized_and_garbage_frames_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let r: Result<Option<Hello>, _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(FrameError::TooLarge(_))));

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        let r: Result<Option<Hello>, _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(FrameError::Decode(_))));
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error_not_a_clean_end() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{\"ver").await.unwrap();
        drop(a);
        let r: Result<Option<Hello>, _> = read_frame(&mut b).await;
        assert!(matches!(r, Err(FrameError::Io(_))));
    }
}
