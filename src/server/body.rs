//! Reads request bodies up to a limit, whether or not they declare a
//! Content-Length (chunked bodies are legitimate HTTP/1.1), within a time
//! limit, so a slow upload holds neither memory nor a task for long.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::Semaphore;
use warp::Filter;

/// KiB of request bodies being read at once, across every connection: what
/// uploads can make the process hold is bounded however many clients send.
/// A read reserves what it may grow to (its declared length, or else its
/// limit) and waits, within its timeout, for room.
const IN_FLIGHT_KIB: usize = 64 * 1024;
static IN_FLIGHT: Semaphore = Semaphore::const_new(IN_FLIGHT_KIB);

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Read,
    /// The whole body did not arrive within the time allowed.
    TimedOut,
}

/// The body, or why it could not be had. Never rejects, so each API answers
/// in its own error format.
pub fn limited(
    limit: u64,
    timeout: Duration,
) -> impl Filter<Extract = (Result<Bytes, BodyError>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(move |declared: Option<u64>, stream| async move {
            if declared.is_some_and(|d| d > limit) {
                return Err(BodyError::TooLarge);
            }
            collect(stream, declared, limit, timeout).await
        })
}

/// A body not read yet: handlers read it only once the request is
/// admitted, and only when they need it.
pub struct Unread {
    declared: Option<u64>,
    timeout: Duration,
    stream: BoxStream<'static, Result<Bytes, warp::Error>>,
}

impl Unread {
    /// Reads up to `limit` bytes; a declared length above it is refused
    /// without reading.
    pub async fn read(self, limit: u64) -> Result<Bytes, BodyError> {
        if self.declared.is_some_and(|d| d > limit) {
            return Err(BodyError::TooLarge);
        }
        collect(self.stream, self.declared, limit, self.timeout).await
    }
}

/// The body, unread; once read, it must arrive within `timeout`.
pub fn unread(
    timeout: Duration,
) -> impl Filter<Extract = (Unread,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .map(move |declared, stream: _| Unread {
            declared,
            timeout,
            stream: into_bytes(stream).boxed(),
        })
}

fn into_bytes<S, B>(stream: S) -> impl Stream<Item = Result<Bytes, warp::Error>> + Send + 'static
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    stream.map_ok(|mut chunk| chunk.copy_to_bytes(chunk.remaining()))
}

async fn collect<S, B>(
    stream: S,
    declared: Option<u64>,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let kib =
        (declared.unwrap_or(limit).min(limit).div_ceil(1024) as usize).min(IN_FLIGHT_KIB) as u32;
    tokio::time::timeout(timeout, async {
        let _room = IN_FLIGHT
            .acquire_many(kib)
            .await
            .expect("the semaphore is never closed");
        collect_all(stream, limit).await
    })
    .await
    .unwrap_or(Err(BodyError::TimedOut))
}

async fn collect_all<S, B>(stream: S, limit: u64) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|_| BodyError::Read)?;
        if (body.len() + chunk.remaining()) as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
}
