//! The control socket's frame format, encoded and decoded by pure functions.
//!
//! A frame is a 4-byte little-endian body length followed by the body; a
//! body is a one-byte code and the code's fields, integers little-endian:
//!
//! | code | request | fields |
//! |---|---|---|
//! | `0x01` | allocate | bytes: u64 |
//! | `0x02` | free | region: u64, key: u64 |
//! | `0x03` | attach | region: u64, key: u64 |
//! | `0x04` | stats | — |
//!
//! | code | response | fields |
//! |---|---|---|
//! | `0x81` | allocated (+ descriptor) | region: u64, key: u64, len: u64 |
//! | `0x82` | freed | — |
//! | `0x83` | attached (+ descriptor) | len: u64 |
//! | `0x84` | stats | capacity: u64, allocated: u64 |
//! | `0xa0` | out of memory | requested: u64, free: u64 |
//! | `0xa1` | zero length | — |
//! | `0xa2` | unknown region | — |
//! | `0xa3` | access denied | — |
//! | `0xa4` | system error | message: u16 length + UTF-8 |
//! | `0xa5` | malformed request | message: u16 length + UTF-8 |
//!
//! The memfd of an `allocated` or `attached` response travels as
//! `SCM_RIGHTS` ancillary data with the frame. A body is 1 to
//! [`MAX_BODY`] bytes and holds nothing after its fields. Decoding checks
//! all of that and never panics, whatever the bytes.

use resc_core::ids::{AccessKey, RegionId};
use thiserror::Error;

/// Length of the body-length prefix.
pub const PREFIX: usize = 4;
/// The largest body either side accepts.
pub const MAX_BODY: usize = 1024;

const ALLOCATE: u8 = 0x01;
const FREE: u8 = 0x02;
const ATTACH: u8 = 0x03;
const STATS: u8 = 0x04;
const CONFIRM: u8 = 0x05;

const ALLOCATED: u8 = 0x81;
const FREED: u8 = 0x82;
const ATTACHED: u8 = 0x83;
const STATS_OF: u8 = 0x84;
const OUT_OF_MEMORY: u8 = 0xa0;
const ZERO_LENGTH: u8 = 0xa1;
const UNKNOWN_REGION: u8 = 0xa2;
const ACCESS_DENIED: u8 = 0xa3;
const SYSTEM: u8 = 0xa4;
const MALFORMED: u8 = 0xa5;

/// A request to a memory node's control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Allocate a region of `bytes` bytes; answered with its descriptor.
    Allocate {
        /// Its length.
        bytes: u64,
    },
    /// Free a region.
    Free {
        /// The region.
        region: RegionId,
        /// Its key.
        key: AccessKey,
    },
    /// Ask for a region's descriptor, to map it.
    Attach {
        /// The region.
        region: RegionId,
        /// Its key.
        key: AccessKey,
    },
    /// Ask for the node's capacity and allocated bytes.
    Stats,
    /// The client took an [`Response::Allocated`] answer (and its
    /// descriptor): the region no longer depends on the connection. Not
    /// answered. A region allocated over a connection that closes before
    /// this arrives is freed: its client never got hold of it.
    Confirm {
        /// The region.
        region: RegionId,
    },
}

/// A memory node's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A region was allocated; its descriptor comes with the frame.
    Allocated {
        /// The region.
        region: RegionId,
        /// Its key.
        key: AccessKey,
        /// Its length.
        len: u64,
    },
    /// The region was freed; access to it is revoked.
    Freed,
    /// The key matched; the region's descriptor comes with the frame.
    Attached {
        /// The region's length.
        len: u64,
    },
    /// The node's accounting.
    Stats {
        /// Total capacity in bytes.
        capacity: u64,
        /// Bytes held by live regions.
        allocated: u64,
    },
    /// Not enough free capacity.
    OutOfMemory {
        /// Requested bytes.
        requested: u64,
        /// Free bytes.
        free: u64,
    },
    /// A zero-byte region was requested.
    ZeroLength,
    /// The node holds no such region.
    UnknownRegion,
    /// The key does not match the region's.
    AccessDenied,
    /// The system refused (memfd creation, mapping, …).
    System(String),
    /// The request frame could not be decoded.
    Malformed(String),
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length prefix is zero or over [`MAX_BODY`].
    #[error("a frame body of {0} bytes is outside 1..={MAX_BODY}")]
    BadLength(u32),
    /// The code is not one of the format's.
    #[error("unknown {what} code {code:#04x}")]
    UnknownCode {
        /// Request or response.
        what: &'static str,
        /// The code.
        code: u8,
    },
    /// The body ends inside its fields.
    #[error("the {0} is cut short")]
    Truncated(&'static str),
    /// Bytes follow the last field.
    #[error("{extra} bytes follow the end of the {what}")]
    Trailing {
        /// Request or response.
        what: &'static str,
        /// How many.
        extra: usize,
    },
    /// A message is not UTF-8.
    #[error("a message is not UTF-8")]
    NotUtf8,
}

/// The body length a prefix announces, if it is acceptable.
pub fn body_len(prefix: [u8; PREFIX]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix);
    match usize::try_from(len) {
        Ok(n) if (1..=MAX_BODY).contains(&n) => Ok(n),
        _ => Err(FrameError::BadLength(len)),
    }
}

/// Appends `request` as one frame (prefix and body) to `out`.
pub fn encode_request(out: &mut Vec<u8>, request: &Request) {
    let start = begin(out);
    match request {
        Request::Allocate { bytes } => {
            out.push(ALLOCATE);
            put(out, *bytes);
        }
        Request::Free { region, key } => {
            out.push(FREE);
            put(out, region.0);
            put(out, key.0);
        }
        Request::Attach { region, key } => {
            out.push(ATTACH);
            put(out, region.0);
            put(out, key.0);
        }
        Request::Stats => out.push(STATS),
        Request::Confirm { region } => {
            out.push(CONFIRM);
            put(out, region.0);
        }
    }
    finish(out, start);
}

/// Decodes a request body (without its prefix).
pub fn decode_request(body: &[u8]) -> Result<Request, FrameError> {
    const WHAT: &str = "request";
    let mut r = Reader { bytes: body, what: WHAT };
    let request = match r.u8()? {
        ALLOCATE => Request::Allocate { bytes: r.u64()? },
        FREE => Request::Free { region: RegionId(r.u64()?), key: AccessKey(r.u64()?) },
        ATTACH => Request::Attach { region: RegionId(r.u64()?), key: AccessKey(r.u64()?) },
        STATS => Request::Stats,
        CONFIRM => Request::Confirm { region: RegionId(r.u64()?) },
        code => return Err(FrameError::UnknownCode { what: WHAT, code }),
    };
    r.end()?;
    Ok(request)
}

/// Appends `response` as one frame (prefix and body) to `out`. A message
/// longer than a frame allows is cut at a character boundary.
pub fn encode_response(out: &mut Vec<u8>, response: &Response) {
    let start = begin(out);
    match response {
        Response::Allocated { region, key, len } => {
            out.push(ALLOCATED);
            put(out, region.0);
            put(out, key.0);
            put(out, *len);
        }
        Response::Freed => out.push(FREED),
        Response::Attached { len } => {
            out.push(ATTACHED);
            put(out, *len);
        }
        Response::Stats { capacity, allocated } => {
            out.push(STATS_OF);
            put(out, *capacity);
            put(out, *allocated);
        }
        Response::OutOfMemory { requested, free } => {
            out.push(OUT_OF_MEMORY);
            put(out, *requested);
            put(out, *free);
        }
        Response::ZeroLength => out.push(ZERO_LENGTH),
        Response::UnknownRegion => out.push(UNKNOWN_REGION),
        Response::AccessDenied => out.push(ACCESS_DENIED),
        Response::System(message) => {
            out.push(SYSTEM);
            put_str(out, message);
        }
        Response::Malformed(message) => {
            out.push(MALFORMED);
            put_str(out, message);
        }
    }
    finish(out, start);
}

/// Decodes a response body (without its prefix).
pub fn decode_response(body: &[u8]) -> Result<Response, FrameError> {
    const WHAT: &str = "response";
    let mut r = Reader { bytes: body, what: WHAT };
    let response = match r.u8()? {
        ALLOCATED => Response::Allocated { region: RegionId(r.u64()?), key: AccessKey(r.u64()?), len: r.u64()? },
        FREED => Response::Freed,
        ATTACHED => Response::Attached { len: r.u64()? },
        STATS_OF => Response::Stats { capacity: r.u64()?, allocated: r.u64()? },
        OUT_OF_MEMORY => Response::OutOfMemory { requested: r.u64()?, free: r.u64()? },
        ZERO_LENGTH => Response::ZeroLength,
        UNKNOWN_REGION => Response::UnknownRegion,
        ACCESS_DENIED => Response::AccessDenied,
        SYSTEM => Response::System(r.string()?),
        MALFORMED => Response::Malformed(r.string()?),
        code => return Err(FrameError::UnknownCode { what: WHAT, code }),
    };
    r.end()?;
    Ok(response)
}

/// Reserves the prefix; returns where the frame starts.
fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; PREFIX]);
    start
}

/// Fills in the prefix of the frame that starts at `start`.
fn finish(out: &mut [u8], start: usize) {
    let body = (out.len() - start - PREFIX) as u32;
    out[start..start + PREFIX].copy_from_slice(&body.to_le_bytes());
}

fn put(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, message: &str) {
    // Code byte and length take 3 of the body's bytes.
    let mut end = message.len().min(MAX_BODY - 3);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&message.as_bytes()[..end]);
}

/// Reads fields off a body, failing rather than running past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.bytes.len() < n {
            return Err(FrameError::Truncated(self.what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }

    fn string(&mut self) -> Result<String, FrameError> {
        let mut len = [0u8; 2];
        len.copy_from_slice(self.take(2)?);
        let bytes = self.take(usize::from(u16::from_le_bytes(len)))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::NotUtf8)
    }

    fn end(&self) -> Result<(), FrameError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Trailing { what: self.what, extra: self.bytes.len() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_and_response_round_trips() {
        let requests = [
            Request::Allocate { bytes: 1 << 40 },
            Request::Free { region: RegionId(7), key: AccessKey(u64::MAX) },
            Request::Attach { region: RegionId(u64::MAX), key: AccessKey(0) },
            Request::Stats,
        ];
        for request in requests {
            let mut frame = Vec::new();
            encode_request(&mut frame, &request);
            let len = body_len([frame[0], frame[1], frame[2], frame[3]]).expect("a valid prefix");
            assert_eq!(len, frame.len() - PREFIX);
            assert_eq!(decode_request(&frame[PREFIX..]), Ok(request));
        }
        let responses = [
            Response::Allocated { region: RegionId(1), key: AccessKey(2), len: 3 },
            Response::Freed,
            Response::Attached { len: 4096 },
            Response::Stats { capacity: 10, allocated: 5 },
            Response::OutOfMemory { requested: 9, free: 8 },
            Response::ZeroLength,
            Response::UnknownRegion,
            Response::AccessDenied,
            Response::System("no memfd".into()),
            Response::Malformed(String::new()),
        ];
        for response in responses {
            let mut frame = Vec::new();
            encode_response(&mut frame, &response);
            assert_eq!(decode_response(&frame[PREFIX..]), Ok(response));
        }
    }

    #[test]
    fn a_long_message_is_cut_to_fit_a_frame_at_a_character_boundary() {
        let message = "é".repeat(MAX_BODY);
        let mut frame = Vec::new();
        encode_response(&mut frame, &Response::System(message));
        assert!(frame.len() - PREFIX <= MAX_BODY);
        assert!(matches!(decode_response(&frame[PREFIX..]), Ok(Response::System(m)) if !m.is_empty()));
    }

    #[test]
    fn bad_prefixes_and_bodies_are_errors() {
        assert_eq!(body_len([0; 4]), Err(FrameError::BadLength(0)));
        assert_eq!(body_len(u32::MAX.to_le_bytes()), Err(FrameError::BadLength(u32::MAX)));
        assert_eq!(decode_request(&[]), Err(FrameError::Truncated("request")));
        assert!(matches!(decode_request(&[0x81]), Err(FrameError::UnknownCode { .. })));
        assert_eq!(decode_request(&[ALLOCATE, 1, 2]), Err(FrameError::Truncated("request")));
        assert!(matches!(decode_request(&[STATS, 0]), Err(FrameError::Trailing { extra: 1, .. })));
        assert_eq!(decode_response(&[SYSTEM, 2, 0, 0xff, 0xfe]), Err(FrameError::NotUtf8));
    }
}
