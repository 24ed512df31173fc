//! One connection to a mail or news server as the clients see it: commands
//! out, replies in, in clear or under TLS after `STARTTLS`; and the
//! dot-stuffed form a message or article takes on the wire.
//!
//! Reading is bounded: the input buffer never holds more than one reply
//! line ([`MAX_REPLY_LINE`]) plus one read, and a reply never more than
//! [`super::reply::MAX_REPLY_LINES`] lines; a server that sends more gets an error, not
//! memory. Each whole reply is awaited under one deadline, so a server that
//! trickles a byte at a time cannot hold a session open past it.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::reply::{MAX_REPLY_LINE, Reply, ReplyBuilder, ReplyError};

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 4096;
/// How much of a message is written at a time, each write under the
/// command timeout.
pub(crate) const WRITE_CHUNK: usize = 64 * 1024;

/// The socket, in clear or under TLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// During the TLS handshake, or after a failed one.
    Closed,
}

/// Why no reply came.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The server closed the connection, possibly mid-reply.
    #[error("connection closed by the server")]
    Eof,
    /// The reply did not complete in time.
    #[error("timed out waiting for a reply")]
    Timeout,
    /// The socket or TLS failed.
    #[error("connection failed: {0}")]
    Io(io::Error),
    /// The server sent something that is not a reply, or too much of one.
    #[error("malformed reply: {0}")]
    Malformed(#[from] ReplyError),
}

pub(crate) struct Connection {
    transport: Transport,
    input: Vec<u8>,
    /// Start of the unread input.
    start: usize,
}

impl Connection {
    /// Connects to `addr` within `timeout`.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
        // Commands are small and each waits for its reply: no Nagle delay.
        let _ = stream.set_nodelay(true);
        Ok(Connection { transport: Transport::Plain(stream), input: Vec::with_capacity(READ_CHUNK), start: 0 })
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// Reads one whole reply within `timeout`. `single_line` for NNTP,
    /// whose status lines have no continuation.
    pub(crate) async fn read_reply(&mut self, timeout: Duration, single_line: bool) -> Result<Reply, ReadError> {
        let read = async {
            let mut builder = ReplyBuilder::default();
            loop {
                let line = self.read_line().await?;
                if let Some(reply) = builder.push(line, single_line)? {
                    return Ok(reply);
                }
            }
        };
        tokio::time::timeout(timeout, read).await.unwrap_or(Err(ReadError::Timeout))
    }

    /// The next line without its line end (CRLF, or a bare LF from a
    /// careless server). A line longer than [`MAX_REPLY_LINE`] is an error
    /// as soon as that many bytes arrived without an end.
    async fn read_line(&mut self) -> Result<&[u8], ReadError> {
        let mut scanned = 0;
        let lf = loop {
            let unread = &self.input[self.start..];
            if let Some(at) = unread[scanned..].iter().position(|&b| b == b'\n') {
                break scanned + at;
            }
            scanned = unread.len();
            if scanned > MAX_REPLY_LINE + 1 {
                return Err(ReplyError::LineTooLong.into());
            }
            if self.start == self.input.len() {
                self.input.clear();
                self.start = 0;
            } else if self.start > 0 {
                self.input.drain(..self.start);
                self.start = 0;
            }
            self.input.reserve(READ_CHUNK);
            let read = match &mut self.transport {
                Transport::Plain(stream) => stream.read_buf(&mut self.input).await,
                Transport::Tls(stream) => stream.read_buf(&mut self.input).await,
                Transport::Closed => return Err(ReadError::Eof),
            };
            match read {
                Ok(0) => return Err(ReadError::Eof),
                Ok(_) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        };
        let line_start = self.start;
        self.start += lf + 1;
        let mut line = &self.input[line_start..line_start + lf];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        Ok(line)
    }

    /// Writes `bytes` within `timeout`.
    pub(crate) async fn send(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()> {
        let write = async {
            match &mut self.transport {
                Transport::Plain(stream) => {
                    stream.write_all(bytes).await?;
                    stream.flush().await
                }
                Transport::Tls(stream) => {
                    stream.write_all(bytes).await?;
                    stream.flush().await
                }
                Transport::Closed => Err(io::ErrorKind::NotConnected.into()),
            }
        };
        tokio::time::timeout(timeout, write).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Writes a long block (a message) in [`WRITE_CHUNK`] pieces, each
    /// within `timeout` (RFC 5321 §4.5.3.2.5: a timeout per send, not one
    /// for the whole message).
    pub(crate) async fn send_block(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()> {
        for chunk in bytes.chunks(WRITE_CHUNK) {
            self.send(chunk, timeout).await?;
        }
        Ok(())
    }

    /// Runs the TLS handshake within `timeout`. Anything the server sent
    /// after its go-ahead and before the handshake came in clear; it is an
    /// attack (RFC 3207 §4.2's injection, the other way round), so the
    /// handshake is refused.
    pub(crate) async fn start_tls(
        &mut self,
        connector: &TlsConnector,
        name: ServerName<'static>,
        timeout: Duration,
    ) -> io::Result<()> {
        if self.start != self.input.len() {
            self.transport = Transport::Closed;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "data sent in clear after the STARTTLS go-ahead"));
        }
        self.input.clear();
        self.start = 0;
        let Transport::Plain(stream) = mem::replace(&mut self.transport, Transport::Closed) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let stream = tokio::time::timeout(timeout, connector.connect(name, stream))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
        self.transport = Transport::Tls(Box::new(stream));
        Ok(())
    }

    /// Closes the connection (TLS close_notify, TCP FIN) within `timeout`.
    pub(crate) async fn close(&mut self, timeout: Duration) {
        let shutdown = async {
            match &mut self.transport {
                Transport::Plain(stream) => stream.shutdown().await,
                Transport::Tls(stream) => stream.shutdown().await,
                Transport::Closed => Ok(()),
            }
        };
        let _ = tokio::time::timeout(timeout, shutdown).await;
        self.transport = Transport::Closed;
    }
}

/// A message or article as it goes on the wire after `DATA` or `POST`:
/// every line end made CRLF (a bare LF or CR too, so that no server reads
/// the lines differently from us), a dot doubled at the start of each line
/// (RFC 5321 §4.5.2, RFC 3977 §3.1.1), a CRLF added if the last line lacks
/// one, and the terminating `.` line.
pub(crate) fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32 + 5);
    let mut line_start = true;
    let mut bytes = data.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' => {
                bytes.next_if_eq(&b'\n');
                out.extend_from_slice(b"\r\n");
                line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                line_start = true;
            }
            _ => {
                if line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                line_start = false;
            }
        }
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::net::TcpListener;

    /// What a server reading a dot-stuffed block keeps: lines up to the
    /// lone dot, a leading dot removed.
    fn unstuff(wire: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = wire;
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n")?;
            let line = &rest[..end];
            rest = &rest[end + 2..];
            if line == b"." {
                return rest.is_empty().then_some(out);
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
    }

    #[test]
    fn test_dot_stuffing() {
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b"a"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n..x\r\n"), b"..\r\n...x\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\n.\nb\rc"), b"a\r\n..\r\nb\r\nc\r\n.\r\n");
        assert_eq!(dot_stuff(b"a.b\r\n"), b"a.b\r\n.\r\n");
    }

    proptest! {
        #[test]
        fn dot_stuffed_block_unstuffs_to_the_normalised_message(
            lines in proptest::collection::vec("[.a-z \u{e9}]{0,12}", 0..20)
        ) {
            let message: Vec<u8> = lines.iter().flat_map(|l| [l.as_bytes(), b"\r\n"].concat()).collect();
            let wire = dot_stuff(&message);
            prop_assert_eq!(unstuff(&wire), Some(message));
        }

        #[test]
        fn dot_stuffed_block_has_one_end(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let wire = dot_stuff(&data);
            // Exactly one lone dot line, at the end; no bare CR or LF.
            prop_assert!(wire.ends_with(b"\r\n.\r\n") || wire == b".\r\n");
            let body = &wire[..wire.len() - 3];
            prop_assert!(!body.starts_with(b".\r\n"));
            prop_assert!(!body.windows(5).any(|w| w == b"\r\n.\r\n"));
            for (i, &b) in wire.iter().enumerate() {
                if b == b'\n' {
                    prop_assert!(i > 0 && wire[i - 1] == b'\r');
                }
                if b == b'\r' {
                    prop_assert_eq!(wire.get(i + 1), Some(&b'\n'));
                }
            }
        }
    }

    async fn pair() -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(Connection::connect(addr, T), listener.accept());
        (client.unwrap(), server.unwrap().0)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn test_replies_across_reads() {
        let (mut conn, mut server) = pair().await;
        server.write_all(b"250-one\r\n25").await.unwrap();
        let reading = tokio::spawn(async move {
            let reply = conn.read_reply(T, false).await.unwrap();
            (conn, reply)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.write_all(b"0 two\n220 next\r\n").await.unwrap();
        let (mut conn, reply) = reading.await.unwrap();
        assert_eq!((reply.code, reply.lines), (250, vec!["one".to_string(), "two".to_string()]));
        assert_eq!(conn.read_reply(T, false).await.unwrap().code, 220);
        drop(server);
        assert!(matches!(conn.read_reply(T, false).await, Err(ReadError::Eof)));
    }

    #[tokio::test]
    async fn test_endless_line_is_an_error_not_memory() {
        let (mut conn, mut server) = pair().await;
        tokio::spawn(async move {
            let junk = vec![b'2'; 64 * 1024];
            while server.write_all(&junk).await.is_ok() {}
        });
        let err = conn.read_reply(T, false).await.unwrap_err();
        assert!(matches!(err, ReadError::Malformed(ReplyError::LineTooLong)), "{err}");
        assert!(conn.input.capacity() < 4 * MAX_REPLY_LINE + 2 * READ_CHUNK, "{}", conn.input.capacity());
    }

    #[tokio::test]
    async fn test_trickling_server_hits_the_deadline() {
        let (mut conn, mut server) = pair().await;
        tokio::spawn(async move {
            while server.write_all(b"2").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let started = std::time::Instant::now();
        let err = conn.read_reply(Duration::from_millis(300), false).await.unwrap_err();
        assert!(matches!(err, ReadError::Timeout), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
