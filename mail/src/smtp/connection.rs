//! One client connection as the session sees it: lines in, replies out,
//! in clear or under TLS after `STARTTLS`.
//!
//! Reading and writing are buffered so that PIPELINING works and costs one
//! write per batch: replies accumulate and go out when the session would
//! otherwise wait for the client (no complete line left in the input
//! buffer), when they pass [`MAX_PENDING_REPLIES`], or before the
//! connection closes (RFC 2920 §3.1). Lines are read with a bound: a
//! longer line is discarded as it arrives, never buffered whole.

use std::io;
use std::mem;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Replies held back for a batch before they are written anyway.
const MAX_PENDING_REPLIES: usize = 16 * 1024;
/// Consumed input kept at the buffer's head before it is moved out.
const COMPACT_AFTER: usize = 64 * 1024;

/// The socket, in clear or under TLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between `STARTTLS` and the end of the handshake, or after a failed one.
    Closed,
}

/// A line as read: its bytes without the line end.
#[derive(Debug)]
pub(crate) struct Line<'a> {
    /// The line without its LF or CRLF; empty if `too_long`.
    pub(crate) bytes: &'a [u8],
    /// Whether it ended in CRLF (else in a bare LF).
    pub(crate) crlf: bool,
    /// Whether it was longer than the bound given, and discarded.
    pub(crate) too_long: bool,
}

/// Why no line came.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed the connection (possibly mid-line).
    Eof,
    /// Nothing arrived for the timeout given.
    Timeout,
    /// The socket or TLS failed.
    Io(io::Error),
}

pub(crate) struct Connection {
    transport: Transport,
    input: Vec<u8>,
    /// Start of the unread input.
    start: usize,
    /// Length of the line last returned, consumed at the next read.
    returned: usize,
    output: Vec<u8>,
    write_timeout: Duration,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream, write_timeout: Duration) -> Self {
        Connection {
            transport: Transport::Plain(stream),
            input: Vec::with_capacity(READ_CHUNK),
            start: 0,
            returned: 0,
            output: Vec::new(),
            write_timeout,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// Queues a reply line; `text` carries no line end.
    pub(crate) fn reply(&mut self, text: &str) {
        self.output.extend_from_slice(text.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// Writes the queued replies.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let output = mem::take(&mut self.output);
        let write = async {
            match &mut self.transport {
                Transport::Plain(stream) => {
                    stream.write_all(&output).await?;
                    stream.flush().await
                }
                Transport::Tls(stream) => {
                    stream.write_all(&output).await?;
                    stream.flush().await
                }
                Transport::Closed => Err(io::ErrorKind::NotConnected.into()),
            }
        };
        let result = tokio::time::timeout(self.write_timeout, write)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
        // Keep the allocation for the next batch.
        self.output = output;
        self.output.clear();
        result
    }

    /// Reads the next line of at most `max` bytes without its line end,
    /// waiting at most `timeout` for each read from the socket. Queued
    /// replies are written before the connection waits for the client.
    /// A longer line is read to its end, discarded, and returned as
    /// `too_long`.
    pub(crate) async fn read_line(&mut self, max: usize, timeout: Duration) -> Result<Line<'_>, ReadError> {
        self.start += mem::take(&mut self.returned);
        if self.output.len() >= MAX_PENDING_REPLIES {
            // A client pipelining without reading: write before taking more.
            self.flush().await.map_err(ReadError::Io)?;
        }
        let mut scanned = 0;
        let mut too_long = false;
        // Whether the last byte discarded of a too long line was a CR.
        let mut discarded_cr = false;
        let (len, crlf, too_long) = loop {
            let unread = &self.input[self.start..];
            if let Some(at) = unread[scanned..].iter().position(|&b| b == b'\n') {
                let lf = scanned + at;
                let crlf = if lf > 0 { unread[lf - 1] == b'\r' } else { discarded_cr };
                let len = if lf > 0 && crlf { lf - 1 } else { lf };
                self.returned = lf + 1;
                break (len, crlf, too_long || len > max);
            }
            scanned = unread.len();
            if scanned > max + 1 {
                // Over the bound with no end in sight: drop what we have.
                too_long = true;
                discarded_cr = unread.last() == Some(&b'\r');
                self.start += scanned;
                scanned = 0;
            }
            self.compact();
            self.flush().await.map_err(ReadError::Io)?;
            let read = match &mut self.transport {
                Transport::Plain(stream) => tokio::time::timeout(timeout, stream.read_buf(&mut self.input)).await,
                Transport::Tls(stream) => tokio::time::timeout(timeout, stream.read_buf(&mut self.input)).await,
                Transport::Closed => return Err(ReadError::Eof),
            };
            match read {
                Err(_) => return Err(ReadError::Timeout),
                Ok(Err(e)) => return Err(ReadError::Io(e)),
                Ok(Ok(0)) => return Err(ReadError::Eof),
                Ok(Ok(_)) => {}
            }
        };
        let bytes = if too_long { &[][..] } else { &self.input[self.start..self.start + len] };
        Ok(Line { bytes, crlf, too_long })
    }

    /// Moves the unread input to the buffer's head once enough has been
    /// consumed, and makes room for the next read.
    fn compact(&mut self) {
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
        } else if self.start >= COMPACT_AFTER {
            self.input.drain(..self.start);
            self.start = 0;
        }
        self.input.reserve(READ_CHUNK);
    }

    /// Writes the queued replies, drops any unread input, and runs the TLS
    /// handshake. Input pipelined after `STARTTLS` was sent in clear and is
    /// never taken as coming from under TLS (RFC 3207 §4.2, the plaintext
    /// injection attack).
    pub(crate) async fn start_tls(&mut self, acceptor: &TlsAcceptor, timeout: Duration) -> io::Result<()> {
        self.flush().await?;
        self.input.clear();
        self.start = 0;
        self.returned = 0;
        let Transport::Plain(stream) = mem::replace(&mut self.transport, Transport::Closed) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let stream = tokio::time::timeout(timeout, acceptor.accept(stream))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
        self.transport = Transport::Tls(Box::new(stream));
        Ok(())
    }

    /// Writes the queued replies and closes the connection (TLS
    /// close_notify, TCP FIN).
    pub(crate) async fn close(&mut self) {
        // The client may be gone: nothing left to tell it.
        let _ = self.flush().await;
        let shutdown = async {
            match &mut self.transport {
                Transport::Plain(stream) => stream.shutdown().await,
                Transport::Tls(stream) => stream.shutdown().await,
                Transport::Closed => Ok(()),
            }
        };
        let _ = tokio::time::timeout(self.write_timeout, shutdown).await;
        self.transport = Transport::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Connection::new(server, Duration::from_secs(5)), client)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn test_lines_across_reads_and_line_ends() {
        let (mut conn, mut client) = pair().await;
        client.write_all(b"one\r\ntw").await.unwrap();
        let line = conn.read_line(100, T).await.unwrap();
        assert_eq!((line.bytes, line.crlf, line.too_long), (&b"one"[..], true, false));
        client.write_all(b"o\nthree\r").await.unwrap();
        let line = conn.read_line(100, T).await.unwrap();
        assert_eq!((line.bytes, line.crlf), (&b"two"[..], false));
        client.write_all(b"\n").await.unwrap();
        let line = conn.read_line(100, T).await.unwrap();
        assert_eq!((line.bytes, line.crlf), (&b"three"[..], true));
        drop(client);
        assert!(matches!(conn.read_line(100, T).await, Err(ReadError::Eof)));
    }

    #[tokio::test]
    async fn test_long_line_is_discarded_not_buffered() {
        let (mut conn, mut client) = pair().await;
        let writer = tokio::spawn(async move {
            client.write_all(&vec![b'x'; 200_000]).await.unwrap();
            client.write_all(b"\r\nnext\r\n").await.unwrap();
            client
        });
        let line = conn.read_line(1000, T).await.unwrap();
        assert!(line.too_long && line.crlf && line.bytes.is_empty());
        assert!(conn.input.capacity() < 100_000, "buffered {}", conn.input.capacity());
        let line = conn.read_line(1000, T).await.unwrap();
        assert_eq!(line.bytes, b"next");
        let _client = writer.await.unwrap();
        // Exactly at the bound is fine, one over is not.
        let (mut conn, mut client) = pair().await;
        client.write_all(b"12345\r\n123456\r\n").await.unwrap();
        assert!(!conn.read_line(5, T).await.unwrap().too_long);
        assert!(conn.read_line(5, T).await.unwrap().too_long);
    }

    #[tokio::test]
    async fn test_replies_wait_for_the_batch() {
        let (mut conn, mut client) = pair().await;
        client.write_all(b"a\r\nb\r\n").await.unwrap();
        conn.read_line(10, T).await.unwrap();
        conn.reply("250 a");
        // "b" is buffered, so reading it writes nothing yet.
        conn.read_line(10, T).await.unwrap();
        conn.reply("250 b");
        assert_eq!(conn.output, b"250 a\r\n250 b\r\n");
        conn.close().await;
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"250 a\r\n250 b\r\n");
    }
}
