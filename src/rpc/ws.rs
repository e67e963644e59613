//! WebSocket framing (RFC 6455), server side, over an upgraded HTTP connection.
//!
//! Our own because the limits are ours to enforce: the payload limit holds across fragments
//! (soketto 0.8 lost its place in the stream there and hung), an oversized single frame is
//! skipped without being buffered so the connection stays usable, client frames must be masked,
//! text must be UTF-8, and every protocol violation closes with its own code (1002, 1007, 1009)
//! instead of a plain 1000.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Close codes we send.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A framing or protocol violation.
    pub const PROTOCOL: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (credentials revoked, a peer that stopped reading).
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// What the peer sent.
#[derive(Debug)]
pub enum Incoming {
    /// A whole data message (text, checked to be UTF-8, or binary).
    Data(Vec<u8>),
    /// A single-frame message over the limit, skipped unread: the connection goes on.
    TooLarge {
        /// Its declared size.
        size: usize,
    },
    /// A ping, to be answered with a pong carrying the same bytes.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// The peer closed, with its code if it gave one.
    Close(Option<u16>),
}

/// Why reading stopped; each maps to the close code to send.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed or ended.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// A framing rule was broken.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A text message is not UTF-8.
    #[error("a text message is not valid UTF-8")]
    InvalidUtf8,
    /// A fragmented message grew past the limit.
    #[error("a fragmented message of at least {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// Bytes received or announced so far.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl ReadError {
    /// The close code that tells the peer what went wrong (`None`: the socket is gone).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Io(_) => None,
            Self::Protocol(_) => Some(close::PROTOCOL),
            Self::InvalidUtf8 => Some(close::INVALID_DATA),
            Self::TooLarge { .. } => Some(close::TOO_BIG),
        }
    }
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
}

/// Reads messages from the client half of a WebSocket.
pub struct Reader<R> {
    io: R,
    max_message: usize,
    /// The fragments of a message received so far (control frames may come between them).
    partial: Vec<u8>,
    fragmented: bool,
    text: bool,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader refusing messages over `max_message` bytes.
    pub fn new(io: R, max_message: usize) -> Self {
        Self {
            io,
            max_message,
            partial: Vec::new(),
            fragmented: false,
            text: false,
        }
    }

    async fn header(&mut self) -> Result<Header, ReadError> {
        let mut two = [0u8; 2];
        self.io.read_exact(&mut two).await?;
        let fin = two[0] & 0x80 != 0;
        if two[0] & 0x70 != 0 {
            return Err(ReadError::Protocol(
                "reserved bits set (no extension was negotiated)",
            ));
        }
        let opcode = two[0] & 0x0F;
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(ReadError::Protocol("reserved opcode"));
        }
        if two[1] & 0x80 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let len = match two[1] & 0x7F {
            126 => u64::from(self.io.read_u16().await?),
            127 => {
                let len = self.io.read_u64().await?;
                if len >> 63 != 0 {
                    return Err(ReadError::Protocol("frame length has its top bit set"));
                }
                len
            }
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        self.io.read_exact(&mut mask).await?;
        if opcode >= OP_CLOSE && (!fin || len > 125) {
            return Err(ReadError::Protocol(
                "control frames must be whole and at most 125 bytes",
            ));
        }
        Ok(Header {
            fin,
            opcode,
            mask,
            len,
        })
    }

    /// Appends the frame's payload, unmasked, to `out`.
    async fn payload(&mut self, header: &Header, out: &mut Vec<u8>) -> Result<(), ReadError> {
        let start = out.len();
        let len = usize::try_from(header.len)
            .map_err(|_| ReadError::Protocol("frame too long for this machine"))?;
        out.resize(start + len, 0);
        self.io.read_exact(&mut out[start..]).await?;
        unmask(&mut out[start..], header.mask);
        Ok(())
    }

    /// Reads and drops `len` bytes.
    async fn skip(&mut self, mut len: u64) -> Result<(), ReadError> {
        let mut scratch = [0u8; 8192];
        while len > 0 {
            let n = len.min(scratch.len() as u64) as usize;
            self.io.read_exact(&mut scratch[..n]).await?;
            len -= n as u64;
        }
        Ok(())
    }

    /// The next message. Not cancel-safe: drop the reader once a call is cancelled.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            let header = self.header().await?;
            match header.opcode {
                OP_PING => {
                    let mut data = Vec::with_capacity(header.len as usize);
                    self.payload(&header, &mut data).await?;
                    return Ok(Incoming::Ping(data));
                }
                OP_PONG => {
                    self.skip(header.len).await?;
                    return Ok(Incoming::Pong);
                }
                OP_CLOSE => {
                    let mut data = Vec::with_capacity(header.len as usize);
                    self.payload(&header, &mut data).await?;
                    let code = match data.as_slice() {
                        [] => None,
                        [a, b, reason @ ..] => {
                            if std::str::from_utf8(reason).is_err() {
                                return Err(ReadError::InvalidUtf8);
                            }
                            Some(u16::from_be_bytes([*a, *b]))
                        }
                        [_] => return Err(ReadError::Protocol("a close frame of one byte")),
                    };
                    return Ok(Incoming::Close(code));
                }
                OP_CONTINUATION if !self.fragmented => {
                    return Err(ReadError::Protocol(
                        "a continuation frame with no message to continue",
                    ));
                }
                OP_TEXT | OP_BINARY if self.fragmented => {
                    return Err(ReadError::Protocol(
                        "a new message started inside a fragmented one",
                    ));
                }
                opcode => {
                    if opcode != OP_CONTINUATION {
                        self.text = opcode == OP_TEXT;
                        self.partial.clear();
                    }
                    let total = (self.partial.len() as u64).saturating_add(header.len);
                    if total > self.max_message as u64 {
                        let size = usize::try_from(total).unwrap_or(usize::MAX);
                        if !self.fragmented && header.fin {
                            // Skipped unread: the next frame starts where this one ends.
                            self.skip(header.len).await?;
                            return Ok(Incoming::TooLarge { size });
                        }
                        return Err(ReadError::TooLarge {
                            size,
                            limit: self.max_message,
                        });
                    }
                    let mut partial = std::mem::take(&mut self.partial);
                    let read = self.payload(&header, &mut partial).await;
                    self.partial = partial;
                    read?;
                    if !header.fin {
                        self.fragmented = true;
                        continue;
                    }
                    self.fragmented = false;
                    let message = std::mem::take(&mut self.partial);
                    if self.text && std::str::from_utf8(&message).is_err() {
                        return Err(ReadError::InvalidUtf8);
                    }
                    return Ok(Incoming::Data(message));
                }
            }
        }
    }
}

/// XORs `data` with the repeating 4-byte `mask`, eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Writes server frames (never masked) to the client half of a WebSocket.
pub struct Writer<W> {
    io: W,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer over `io` (buffer it: frames are written as header, then payload).
    pub fn new(io: W) -> Self {
        Self { io }
    }

    async fn frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut head = [0u8; 10];
        head[0] = 0x80 | opcode;
        let n = match payload.len() {
            len @ 0..=125 => {
                head[1] = len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                head[1] = 126;
                head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                head[1] = 127;
                head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        self.io.write_all(&head[..n]).await?;
        self.io.write_all(payload).await
    }

    /// Queues a text message (call [`flush`](Self::flush) to send it).
    pub async fn text(&mut self, text: &str) -> std::io::Result<()> {
        self.frame(OP_TEXT, text.as_bytes()).await
    }

    /// Queues a ping.
    pub async fn ping(&mut self) -> std::io::Result<()> {
        self.frame(OP_PING, &[]).await
    }

    /// Queues a pong answering a ping's `data` (at most 125 bytes, as the ping's was).
    pub async fn pong(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.frame(OP_PONG, &data[..data.len().min(125)]).await
    }

    /// Sends a close frame with `code` and a short `reason`, then shuts the socket down.
    pub async fn close(&mut self, code: u16, reason: &str) -> std::io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        self.frame(OP_CLOSE, &payload).await?;
        self.io.flush().await?;
        self.io.shutdown().await
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(m | n as u8),
            n @ 126..=0xFFFF => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    async fn read_all(bytes: Vec<u8>, limit: usize) -> Vec<Result<Incoming, String>> {
        let mut reader = Reader::new(bytes.as_slice(), limit);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(m) => out.push(Ok(m)),
                Err(ReadError::Io(_)) => return out,
                Err(e) => {
                    out.push(Err(format!("{:?}", e.close_code())));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn fragments_join_and_the_limit_counts_all_of_them() {
        let mut bytes = frame(false, OP_TEXT, true, b"hel");
        bytes.extend(frame(true, OP_PING, true, b"p"));
        bytes.extend(frame(true, OP_CONTINUATION, true, b"lo"));
        let got = read_all(bytes, 16).await;
        assert!(
            matches!(&got[0], Ok(Incoming::Ping(p)) if p == b"p"),
            "{got:?}"
        );
        assert!(
            matches!(&got[1], Ok(Incoming::Data(d)) if d == b"hello"),
            "{got:?}"
        );

        let mut bytes = Vec::new();
        bytes.extend(frame(false, OP_TEXT, true, &[b'a'; 10]));
        bytes.extend(frame(false, OP_CONTINUATION, true, &[b'a'; 10]));
        let got = read_all(bytes, 16).await;
        assert_eq!(got.len(), 1);
        assert!(
            matches!(&got[0], Err(code) if code == "Some(1009)"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn an_oversized_single_frame_is_skipped_and_reading_goes_on() {
        let mut bytes = frame(true, OP_TEXT, true, &[b'x'; 300]);
        bytes.extend(frame(true, OP_TEXT, true, b"ok"));
        let got = read_all(bytes, 100).await;
        assert!(
            matches!(got[0], Ok(Incoming::TooLarge { size: 300 })),
            "{got:?}"
        );
        assert!(
            matches!(&got[1], Ok(Incoming::Data(d)) if d == b"ok"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn violations_get_their_close_codes() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(true, OP_TEXT, false, b"hi"), "Some(1002)"),
            (frame(true, OP_TEXT, true, &[0xff, 0xfe]), "Some(1007)"),
            (frame(true, 0x3, true, b""), "Some(1002)"),
            (frame(true, OP_CONTINUATION, true, b"x"), "Some(1002)"),
            (frame(false, OP_PING, true, b""), "Some(1002)"),
            (
                {
                    let mut b = frame(false, OP_TEXT, true, b"a");
                    b.extend(frame(true, OP_TEXT, true, b"b"));
                    b
                },
                "Some(1002)",
            ),
        ];
        for (bytes, want) in cases {
            let got = read_all(bytes, 100).await;
            assert!(
                matches!(got.last(), Some(Err(code)) if code == want),
                "{got:?} want {want}"
            );
        }
        let got = read_all(frame(true, OP_CLOSE, true, &1000u16.to_be_bytes()), 100).await;
        assert!(matches!(got[0], Ok(Incoming::Close(Some(1000)))), "{got:?}");
    }

    #[tokio::test]
    async fn the_writer_frames_every_length() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            let text = "y".repeat(len);
            Writer::new(&mut out).text(&text).await.expect("write");
            let header = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            assert_eq!(out.len(), header + len);
            assert_eq!(out[0], 0x81);
        }
        let mut data = b"abcdefghijk".to_vec();
        unmask(&mut data, [7, 8, 9, 10]);
        unmask(&mut data, [7, 8, 9, 10]);
        assert_eq!(data, b"abcdefghijk");
    }
}
