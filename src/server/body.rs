//! Reads request bodies up to a limit, whether or not they declare a
//! Content-Length (chunked bodies are legitimate HTTP/1.1).

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use warp::Filter;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Read,
}

/// The body, or why it could not be had. Never rejects, so each API answers
/// in its own error format.
pub fn limited(
    limit: u64,
) -> impl Filter<Extract = (Result<Bytes, BodyError>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(move |declared: Option<u64>, stream| async move {
            if declared.is_some_and(|d| d > limit) {
                return Err(BodyError::TooLarge);
            }
            collect(stream, limit).await
        })
}

/// A body not read yet: handlers read it only once the request is
/// admitted, and only when they need it.
pub struct Unread {
    declared: Option<u64>,
    stream: BoxStream<'static, Result<Bytes, warp::Error>>,
}

impl Unread {
    /// Reads up to `limit` bytes; a declared length above it is refused
    /// without reading.
    pub async fn read(self, limit: u64) -> Result<Bytes, BodyError> {
        if self.declared.is_some_and(|d| d > limit) {
            return Err(BodyError::TooLarge);
        }
        collect(self.stream, limit).await
    }
}

/// The body, unread.
pub fn unread() -> impl Filter<Extract = (Unread,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .map(|declared, stream: _| Unread {
            declared,
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

async fn collect<S, B>(stream: S, limit: u64) -> Result<Bytes, BodyError>
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
