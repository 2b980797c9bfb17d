//! A connection that ends when its client goes quiet.
//!
//! hyper bounds how long an HTTP/1.1 request head may take, but not the
//! bytes before it (the protocol sniffing reads up to 24 of them, however
//! slowly they come) nor an HTTP/2 connection that sends nothing at all.
//! Wrapped in [`Deadline`], a connection must send its first 24 bytes
//! within `first` of being accepted, and after that never wait on its
//! client (to read or to write) for longer than `idle`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes the server must have read before the `idle` rule takes over:
/// the HTTP/2 connection preface, as much as protocol sniffing reads.
const PREFACE: usize = 24;

pub struct Deadline<T> {
    io: T,
    sleep: Pin<Box<Sleep>>,
    idle: Duration,
    preface_left: usize,
}

impl<T> Deadline<T> {
    pub fn new(io: T, first: Duration, idle: Duration) -> Self {
        Deadline {
            io,
            sleep: Box::pin(tokio::time::sleep(first)),
            idle,
            preface_left: PREFACE,
        }
    }

    /// Bytes moved: the client is alive.
    fn progressed(&mut self, read: usize) {
        if self.preface_left > 0 {
            self.preface_left = self.preface_left.saturating_sub(read);
            if self.preface_left > 0 {
                return;
            }
        }
        self.sleep.as_mut().reset(Instant::now() + self.idle);
    }

    /// A write's outcome: bytes out are progress, a wait is a wait.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 && self.preface_left == 0 {
                    self.progressed(0);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }

    /// Waiting on the client: an error once the deadline has passed.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        ready!(self.sleep.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client sent nothing in time",
        ))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    self.progressed(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_quiet_client_is_cut_off_and_a_talking_one_is_not() {
        // Silent from the start: cut off after `first`.
        let (_client, server) = tokio::io::duplex(64);
        let mut quiet = Deadline::new(server, Duration::from_secs(2), Duration::from_secs(60));
        let started = Instant::now();
        let e = quiet.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));

        // A byte a second keeps the preface going, but not past `first`.
        let (mut client, server) = tokio::io::duplex(64);
        let mut slow = Deadline::new(server, Duration::from_secs(5), Duration::from_secs(60));
        let trickle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client.write_all(b"x").await.is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut got = 0;
        let e = loop {
            match slow.read(&mut [0; 8]).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(got < PREFACE, "{got}");
        drop(slow);
        trickle.await.unwrap();

        // Past the preface, each byte moved restarts the `idle` clock.
        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = Deadline::new(server, Duration::from_secs(2), Duration::from_secs(3));
        client.write_all(&[b'a'; PREFACE]).await.unwrap();
        talking.read_exact(&mut [0; PREFACE]).await.unwrap();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            client.write_all(b"y").await.unwrap();
            talking.read_exact(&mut [0; 1]).await.unwrap();
            talking.write_all(b"z").await.unwrap();
            client.read_exact(&mut [0; 1]).await.unwrap();
        }
        let started = Instant::now();
        let e = talking.read(&mut [0; 1]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
