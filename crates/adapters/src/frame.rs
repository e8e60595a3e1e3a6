//! Length-prefixed frames with a version and a checksum, carrying bincode 2
//! (serde) payloads.
//!
//! # Format
//! ```text
//! frame  := len:u32be version:u8 crc:u32be payload      (9-byte header)
//!           len = payload length, crc = crc32(payload), version = 1
//! payload:= bincode 2, serde, standard config
//! ```
//!
//! # Rejections
//! A reader checks, in this order, and rejects with a typed [`FrameError`]:
//! 1. the stream ends inside a frame: [`FrameError::Truncated`] (at a frame
//!    boundary it is a clean end: `Ok(None)`);
//! 2. the version is not [`VERSION`]: [`FrameError::WrongVersion`] (checked
//!    first: another version may frame differently);
//! 3. `len` exceeds the reader's limit: [`FrameError::Oversized`], before a
//!    byte of the payload is read or buffered;
//! 4. the payload's CRC-32 differs: [`FrameError::Checksum`];
//! 5. the payload does not decode as the expected type, or leaves bytes
//!    over: [`FrameError::Malformed`].
//!
//! Whoever reads frames ([`crate::transport`]) closes the connection on any
//! of these and applies nothing from it: a frame is handed to the
//! application only after all five checks pass.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::crc32::crc32;

/// The frame format version this code speaks.
pub const VERSION: u8 = 1;
/// Length of a frame header.
pub const HEADER_LEN: usize = 9;
/// The default largest payload accepted (and sent).
pub const MAX_FRAME: u32 = 1 << 20;

/// Why a frame was rejected (or could not be sent).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The transport failed.
    #[error("transport: {0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame needed.
        expected: usize,
        /// Bytes there were.
        got: usize,
    },
    /// The frame's version is not [`VERSION`].
    #[error("frame version {got}, expected {expected}")]
    WrongVersion {
        /// The version found.
        got: u8,
        /// The version spoken here.
        expected: u8,
    },
    /// The payload is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// The declared (or encoded) length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The payload's checksum does not match.
    #[error("frame checksum mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    Checksum {
        /// From the header.
        expected: u32,
        /// Of the payload.
        actual: u32,
    },
    /// The payload does not decode as the expected message.
    #[error("malformed frame payload: {0}")]
    Malformed(String),
}

impl FrameError {
    /// A short stable name for the rejection reason.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Io(_) => "io",
            FrameError::Truncated { .. } => "truncated",
            FrameError::WrongVersion { .. } => "wrong_version",
            FrameError::Oversized { .. } => "oversized",
            FrameError::Checksum { .. } => "checksum",
            FrameError::Malformed(_) => "malformed",
        }
    }
}

/// Encodes `msg` as one frame.
///
/// # Errors
/// [`FrameError::Oversized`] if the payload exceeds `max`;
/// [`FrameError::Malformed`] if serde refuses the value.
pub fn encode<T: Serialize>(msg: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    let payload = bincode::serde::encode_to_vec(msg, bincode::config::standard())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if payload.len() as u64 > u64::from(max) {
        return Err(FrameError::Oversized {
            len: payload.len() as u64,
            max,
        });
    }
    Ok(frame_bytes(VERSION, &payload))
}

/// A frame with the given version around raw payload bytes (for tests and
/// tools that need to build bad frames too).
pub fn frame_bytes(version: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(version);
    out.extend_from_slice(&crc32(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Writes `msg` as one frame and flushes.
///
/// # Errors
/// As [`encode`], and transport errors.
pub async fn write_frame<W, T>(w: &mut W, msg: &T, max: u32) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = encode(msg, max)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Reads exactly `buf.len()` bytes; `Ok(n < len)` if the stream ended first.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Reads one frame and decodes it as `T`. `Ok(None)`: the stream ended
/// cleanly, at a frame boundary.
///
/// # Errors
/// The rejections listed in the module docs, and transport errors.
pub async fn read_frame<R, T>(r: &mut R, max: u32) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header).await?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated {
            expected: HEADER_LEN,
            got,
        });
    }
    let len = u32::from_be_bytes(header[0..4].try_into().expect("4 bytes"));
    let version = header[4];
    let expected_crc = u32::from_be_bytes(header[5..9].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(FrameError::WrongVersion {
            got: version,
            expected: VERSION,
        });
    }
    if len > max {
        return Err(FrameError::Oversized {
            len: u64::from(len),
            max,
        });
    }
    let mut payload = vec![0u8; len as usize];
    let got = read_full(r, &mut payload).await?;
    if got < payload.len() {
        return Err(FrameError::Truncated {
            expected: HEADER_LEN + payload.len(),
            got: HEADER_LEN + got,
        });
    }
    let actual = crc32(&payload);
    if actual != expected_crc {
        return Err(FrameError::Checksum {
            expected: expected_crc,
            actual,
        });
    }
    decode_payload(&payload).map(Some)
}

/// Decodes a checked payload; the whole payload must be used.
///
/// # Errors
/// [`FrameError::Malformed`].
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, used): (T, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        )));
    }
    Ok(msg)
}
