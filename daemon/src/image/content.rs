//! containerd's content store: lookups, label updates, reads of small blobs,
//! and the streaming writer that verifies a blob's digest as it goes and
//! commits it only when digest and size match.

use super::session::{cerr, unique, Session};
use crate::error::Error;
use crid_proto::containerd::services::v1::content_client::ContentClient;
use crid_proto::containerd::services::v1::{
    AbortRequest, Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tokio_stream::wrappers::ReceiverStream;

/// Bytes per message sent to containerd (well under its 16 MiB limit).
const WRITE_CHUNK: usize = 1 << 20;
/// Largest manifest, index or config blob read into memory.
pub const MAX_SMALL_BLOB: i64 = 8 << 20;

/// The blob's info, or None if containerd does not have it. In a pull's
/// session a blob found here is added to the pull's lease and looked up
/// again, so a blob reported present stays until the image record
/// references it. (A missing blob, the common case of a pull, costs one
/// call; holding first would cost two.)
pub async fn info(s: &Session, digest: &str) -> Result<Option<Info>, Error> {
    let found = lookup(s, digest).await?;
    if found.is_none() || !s.is_leased() {
        return Ok(found);
    }
    s.hold("content", digest).await?;
    lookup(s, digest).await
}

async fn lookup(s: &Session, digest: &str) -> Result<Option<Info>, Error> {
    let r = ContentClient::new(s.ctrd.channel())
        .info(s.req(InfoRequest {
            digest: digest.to_string(),
        }))
        .await;
    match r {
        Ok(resp) => Ok(resp.into_inner().info),
        Err(st) if st.code() == tonic::Code::NotFound => Ok(None),
        Err(st) => Err(cerr("content.info")(st)),
    }
}

/// Sets `labels` on an existing blob, leaving its other labels alone.
pub async fn set_labels(
    s: &Session,
    digest: &str,
    labels: &HashMap<String, String>,
) -> Result<(), Error> {
    if labels.is_empty() {
        return Ok(());
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    ContentClient::new(s.ctrd.channel())
        .update(s.req(UpdateRequest {
            info: Some(Info {
                digest: digest.to_string(),
                labels: labels.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .map_err(cerr("content.update"))?;
    Ok(())
}

/// Reads a whole small blob (manifest, index, config).
pub async fn read_small(s: &Session, digest: &str) -> Result<Vec<u8>, Error> {
    let info = info(s, digest)
        .await?
        .ok_or_else(|| Error::NotFound(format!("content {digest} not found in containerd")))?;
    if info.size > MAX_SMALL_BLOB {
        return Err(Error::Internal(format!(
            "blob {digest} is {} bytes, too large for a manifest or config",
            info.size
        )));
    }
    let mut stream = ContentClient::new(s.ctrd.channel())
        .read(s.req(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(cerr("content.read"))?
        .into_inner();
    let mut out = Vec::with_capacity(info.size.max(0) as usize);
    while let Some(msg) = stream.message().await.map_err(cerr("content.read"))? {
        out.extend_from_slice(&msg.data);
    }
    Ok(out)
}

/// Writes a blob from a byte stream: verifies size and sha256 while streaming,
/// aborts the ingest on any failure, and commits with `labels`. `on_bytes` is
/// called with each received chunk's length (progress reporting). Returns
/// false if containerd already had the blob (its labels were not touched).
pub async fn write<S, E>(
    s: &Session,
    digest: &str,
    size: i64,
    labels: HashMap<String, String>,
    mut body: S,
    on_bytes: &(dyn Fn(usize) + Sync),
) -> Result<bool, Error>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let reference = format!("crid-{digest}-{}", unique());
    // A blob that fits one message (configs, manifests, small layers) is
    // verified here and sent as one Commit carrying its data: one round
    // trip instead of open, write and commit.
    let mut first = Vec::with_capacity(WRITE_CHUNK.min(size.max(0) as usize));
    let mut ended = false;
    while first.len() < WRITE_CHUNK {
        match body.next().await {
            Some(chunk) => {
                let chunk =
                    chunk.map_err(|e| Error::Internal(format!("fetching {digest}: {e}")))?;
                on_bytes(chunk.len());
                first.extend_from_slice(&chunk);
                if first.len() as i64 > size {
                    return Err(Error::Internal(format!(
                        "blob {digest}: registry sent more than the {size} bytes announced"
                    )));
                }
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    if ended {
        return write_whole(s, digest, size, labels, first, reference).await;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(2);
    let open = WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.clone(),
        total: size,
        expected: digest.to_string(),
        ..Default::default()
    };
    // containerd answers the call only after it has opened the writer.
    tx.send(open)
        .await
        .map_err(|_| Error::Internal("content writer closed".into()))?;
    let mut client = ContentClient::new(s.ctrd.channel());
    let mut responses = match client.write(s.req(ReceiverStream::new(rx))).await {
        Ok(r) => r.into_inner(),
        Err(st) if st.code() == tonic::Code::AlreadyExists => return Ok(false),
        Err(st) => return Err(cerr("content.write")(st)),
    };
    let result = async {
        next(&mut responses).await?;
        let mut hasher = Sha256::new();
        let mut offset: i64 = 0;
        hasher.update(&first);
        let mut buf = first;
        let send = |data: Vec<u8>, offset: i64| {
            let tx = tx.clone();
            let reference = reference.clone();
            async move {
                tx.send(WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference,
                    offset,
                    data,
                    ..Default::default()
                })
                .await
                .map_err(|_| Error::Internal("content writer closed".into()))
            }
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::Internal(format!("fetching {digest}: {e}")))?;
            on_bytes(chunk.len());
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
            if offset + buf.len() as i64 > size {
                return Err(Error::Internal(format!(
                    "blob {digest}: registry sent more than the {size} bytes announced"
                )));
            }
            if buf.len() >= WRITE_CHUNK {
                let data = std::mem::replace(&mut buf, Vec::with_capacity(WRITE_CHUNK));
                let n = data.len() as i64;
                send(data, offset).await?;
                next(&mut responses).await?;
                offset += n;
            }
        }
        if !buf.is_empty() {
            let n = buf.len() as i64;
            send(std::mem::take(&mut buf), offset).await?;
            next(&mut responses).await?;
            offset += n;
        }
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if offset != size || got != digest {
            return Err(Error::Internal(format!(
                "blob {digest} failed verification: received {offset} of {size} bytes with digest {got}; nothing committed"
            )));
        }
        tx.send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.clone(),
            total: size,
            expected: digest.to_string(),
            offset,
            labels,
            ..Default::default()
        })
        .await
        .map_err(|_| Error::Internal("content writer closed".into()))?;
        next(&mut responses).await?;
        Ok(())
    }
    .await;
    drop(tx);
    finish(s, result, reference).await
}

/// A write's outcome: committed (true), already there (false: another pull
/// committed the same blob meanwhile), or failed with the ingest aborted.
async fn finish(s: &Session, result: Result<(), Error>, reference: String) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(true),
        Err(Error::Containerd(c)) if c.status.code() == tonic::Code::AlreadyExists => Ok(false),
        Err(e) => {
            let _ = ContentClient::new(s.ctrd.channel())
                .abort(s.req(AbortRequest { r#ref: reference }))
                .await;
            Err(e)
        }
    }
}

/// [`write`] of a blob held whole: checked, then one Commit message.
async fn write_whole(
    s: &Session,
    digest: &str,
    size: i64,
    labels: HashMap<String, String>,
    data: Vec<u8>,
    reference: String,
) -> Result<bool, Error> {
    let got = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    if data.len() as i64 != size || got != digest {
        return Err(Error::Internal(format!(
            "blob {digest} failed verification: received {} of {size} bytes with digest {got}; nothing committed",
            data.len()
        )));
    }
    let msg = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference.clone(),
        total: size,
        expected: digest.to_string(),
        offset: 0,
        data,
        labels,
    };
    let mut client = ContentClient::new(s.ctrd.channel());
    let mut responses = match client.write(s.req(futures_util::stream::iter([msg]))).await {
        Ok(r) => r.into_inner(),
        Err(st) if st.code() == tonic::Code::AlreadyExists => return Ok(false),
        Err(st) => return Err(cerr("content.write")(st)),
    };
    let result = next(&mut responses).await;
    finish(s, result, reference).await
}

async fn next(
    responses: &mut tonic::Streaming<crid_proto::containerd::services::v1::WriteContentResponse>,
) -> Result<(), Error> {
    match responses.message().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::Internal(
            "containerd closed the content writer".into(),
        )),
        Err(st) => Err(cerr("content.write")(st)),
    }
}
