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
            collect(PROCESS, stream, declared, limit, timeout).await
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
        collect(PROCESS, self.stream, self.declared, limit, self.timeout).await
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

/// Room for bodies in KiB, and how much it has in all.
#[derive(Clone, Copy)]
struct Budget<'a> {
    room: &'a Semaphore,
    kib: usize,
}

/// The process-wide budget every request body is read within.
const PROCESS: Budget<'static> = Budget {
    room: &IN_FLIGHT,
    kib: IN_FLIGHT_KIB,
};

async fn collect<S, B>(
    budget: Budget<'_>,
    stream: S,
    declared: Option<u64>,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let kib = (declared.unwrap_or(limit).min(limit).div_ceil(1024) as usize).min(budget.kib) as u32;
    tokio::time::timeout(timeout, async {
        let _room = budget
            .room
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, warp::Error>> {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))))
    }

    /// A body whose sender never sends: it holds its room until its
    /// timeout.
    fn stalled() -> impl Stream<Item = Result<Bytes, warp::Error>> {
        futures::stream::pending()
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_wait_for_room_and_time_out_while_the_budget_is_held() {
        let room = Semaphore::new(4);
        let budget = Budget {
            room: &room,
            kib: 4,
        };
        let second = Duration::from_secs(1);

        // A stalled upload that declared 4 KiB takes all the room.
        let holder = collect(budget, stalled(), Some(4096), 64 * 1024, 10 * second);
        let mut holder = std::pin::pin!(holder);
        assert!(futures::poll!(&mut holder).is_pending());
        assert_eq!(room.available_permits(), 0);

        // Even 1 byte must wait for room: within its timeout it gets none.
        let waiter = collect(budget, chunks(&[b"x"]), Some(1), 1024, second);
        let waiter = std::pin::pin!(waiter);
        let (waited, held) = futures::future::select(waiter, holder).await.factor_first();
        assert_eq!(waited, Err(BodyError::TimedOut));

        // The stalled upload times out in turn and gives its room back.
        assert_eq!(held.await, Err(BodyError::TimedOut));
        assert_eq!(room.available_permits(), 4);
        let body = collect(budget, chunks(&[b"to", b"ken"]), None, 1024, second).await;
        assert_eq!(body, Ok(Bytes::from_static(b"token")));

        // A body with no declared length reserves its limit, capped at the
        // whole budget, so a limit larger than the budget still gets in.
        let big = collect(budget, chunks(&[b"y"]), None, 1 << 30, second).await;
        assert_eq!(big, Ok(Bytes::from_static(b"y")));
    }

    #[tokio::test]
    async fn a_body_over_its_limit_is_refused_as_it_arrives() {
        let room = Semaphore::new(4);
        let budget = Budget {
            room: &room,
            kib: 4,
        };
        let body = collect(
            budget,
            chunks(&[b"12345", b"6789"]),
            None,
            8,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(body, Err(BodyError::TooLarge));
        assert_eq!(room.available_permits(), 4);
    }
}
